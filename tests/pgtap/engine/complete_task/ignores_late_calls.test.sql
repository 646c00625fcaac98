BEGIN;
SELECT plan(16);

-- f: a then b; g: x has one attempt, y runs beside it
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', ARRAY['a']);
SELECT pgflow.create_flow('g', max_attempts => 1);
SELECT pgflow.add_step('g', 'x');
SELECT pgflow.add_step('g', 'y');

CREATE FUNCTION pg_temp.start_all(flow text) RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks(flow,
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll(flow, 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');

-- a queued task (not started yet)
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"early"'), false,
          'completing a queued task returns false');
SELECT is(
    (SELECT (t.status, t.output)::text FROM pgflow.step_tasks AS t WHERE t.step_slug = 'a'),
    '(queued,)',
    'and leaves it queued without output'
);

-- unknown tasks
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000009', 'a', 0, '1'), false,
          'completing a task of an unknown run returns false');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'zz', 0, '1'), false,
          'completing a task of an unknown step returns false');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 1, '1'), false,
          'completing an unknown task index returns false');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '1'), false,
          'completing a task of a step not started yet returns false');

-- duplicate completion
SELECT pg_temp.start_all('f');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"first"'), true,
          'the first completion is recorded');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"second"'), false,
          'a duplicate completion returns false');
SELECT is(
    (SELECT (t.output, ss.output, ss.remaining_tasks)::text
     FROM pgflow.step_tasks AS t JOIN pgflow.step_states AS ss USING (run_id, step_slug)
     WHERE t.step_slug = 'a'),
    '("""first""","""first""",0)',
    'the duplicate changes neither the task nor the step'
);
SELECT is(
    (SELECT (r.remaining_steps, ss.remaining_deps, ss.status)::text
     FROM pgflow.runs AS r JOIN pgflow.step_states AS ss USING (run_id) WHERE ss.step_slug = 'b'),
    '(1,0,started)',
    'nor the counters of the run and of the dependent'
);
SELECT is((SELECT count(*) FROM pgflow.step_tasks WHERE step_slug = 'b'), 1::bigint,
          'nor queues the dependent twice');

SELECT throws_ok($$SELECT pgflow.complete_task(NULL, 'a', 0, '1')$$, '22004',
    'run_id, step_slug and task_index must not be NULL', 'a NULL run_id is refused');
SELECT throws_ok($$SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', NULL, '1')$$,
    '22004', 'run_id, step_slug and task_index must not be NULL', 'a NULL task_index is refused');

-- completion after the run failed
SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pg_temp.start_all('g');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'x', 0, 'boom');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'y', 0, '"Y"'), false,
          'completing a task of a failed run returns false');
SELECT is(
    (SELECT (t.status, t.output, t.completed_at)::text FROM pgflow.step_tasks AS t WHERE t.step_slug = 'y'),
    '(cancelled,,)',
    'the task stays cancelled without output'
);
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output, r.completed_at)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
    '(failed,2,,)',
    'the failed run is unchanged'
);

SELECT * FROM finish();
ROLLBACK;
