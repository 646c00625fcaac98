BEGIN;
SELECT plan(20);

-- every step has a single attempt, so one fail_task exhausts it
-- df: default mode (fail)
SELECT pgflow.create_flow('df', max_attempts => 1);
SELECT pgflow.add_step('df', 'a');
SELECT pgflow.add_step('df', 'b', ARRAY['a']);
-- sk: skip: b goes on without a; m (a map over a) is skipped with it
SELECT pgflow.create_flow('sk', max_attempts => 1);
SELECT pgflow.add_step('sk', 'a', when_exhausted => 'skip');
SELECT pgflow.add_step('sk', 'b', ARRAY['a']);
SELECT pgflow.add_step('sk', 'm', ARRAY['a'], step_type => 'map');
-- sc: skip-cascade: b and c are skipped with a; x and y go on
SELECT pgflow.create_flow('sc', max_attempts => 1);
SELECT pgflow.add_step('sc', 'a', when_exhausted => 'skip-cascade');
SELECT pgflow.add_step('sc', 'b', ARRAY['a']);
SELECT pgflow.add_step('sc', 'c', ARRAY['b']);
SELECT pgflow.add_step('sc', 'x');
SELECT pgflow.add_step('sc', 'y', ARRAY['x']);
-- lone: the only step is skipped
SELECT pgflow.create_flow('lone', max_attempts => 1);
SELECT pgflow.add_step('lone', 'a', when_exhausted => 'skip');
-- mp: a map task runs out of attempts (skip)
SELECT pgflow.create_flow('mp', max_attempts => 1);
SELECT pgflow.add_step('mp', 'm', step_type => 'map', when_exhausted => 'skip');
SELECT pgflow.add_step('mp', 'r', ARRAY['m']);

CREATE FUNCTION pg_temp.start_all(flow text) RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks(flow,
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll(flow, 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.status(run integer, step text) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(':', ss.status, ss.skip_reason)
    FROM pgflow.step_states AS ss
    WHERE ss.run_id = ('00000000-0000-0000-0000-00000000000' || run)::uuid AND ss.step_slug = step;
$$;

-- fail (default)
SELECT pgflow.start_flow('df', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_all('df');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom');
SELECT is(
    (SELECT (r.status, r.error_message)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '(failed,"step ""a"" failed: boom")',
    'by default an exhausted step fails the run'
);
SELECT is(pg_temp.status(1, 'b'), 'created', 'its dependent never starts');

-- skip
SELECT pgflow.start_flow('sk', '{"n": 1}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pg_temp.start_all('sk');
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'a', 0, 'boom'), true,
          'the last failure is recorded');
SELECT is(
    (SELECT (t.status, t.error_message)::text FROM pgflow.step_tasks AS t
     WHERE t.run_id = '00000000-0000-0000-0000-000000000002' AND t.step_slug = 'a'),
    '(failed,boom)',
    'the task is failed'
);
SELECT is(
    (SELECT (ss.status, ss.skip_reason, ss.error_message, ss.skipped_at = now(), ss.failed_at)::text
     FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000002' AND ss.step_slug = 'a'),
    '(skipped,handler_failed,boom,t,)',
    'when_exhausted = skip skips the step with handler_failed and keeps the error'
);
SELECT is(pg_temp.status(2, 'b'), 'started', 'its dependent goes on');
SELECT is(
    (SELECT s.input FROM pg_temp.start_all('sk') AS s WHERE s.step_slug = 'b'),
    '{"run": {"n": 1}}'::jsonb,
    'without the skipped step in its input'
);
SELECT is(pg_temp.status(2, 'm'), 'skipped:dependency_skipped',
          'a map over the skipped step is skipped (dependency_skipped)');
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.failed_at)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
    '(started,1,)',
    'the run goes on'
);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'b', 0, '"B"');
SELECT is(
    (SELECT (r.status, r.output)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
    '(completed,"{""b"": ""B""}")',
    'and completes without the skipped leaf'
);

-- skip-cascade
SELECT pgflow.start_flow('sc', '{}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT pg_temp.start_all('sc');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000003', 'a', 0, 'boom');
SELECT is(
    (SELECT string_agg(concat_ws(':', step_slug, status, skip_reason), ',' ORDER BY step_slug)
     FROM pgflow.step_states WHERE run_id = '00000000-0000-0000-0000-000000000003'),
    'a:skipped:handler_failed,b:skipped:dependency_skipped,c:skipped:dependency_skipped,x:started,y:created',
    'skip-cascade skips the step and everything downstream; unrelated steps go on'
);
SELECT is(
    (SELECT remaining_steps FROM pgflow.runs WHERE run_id = '00000000-0000-0000-0000-000000000003'),
    2, 'the skipped steps no longer count as remaining'
);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000003', 'x', 0, '"X"');
SELECT pg_temp.start_all('sc');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000003', 'y', 0, '"Y"');
SELECT is(
    (SELECT (r.status, r.output)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000003'),
    '(completed,"{""y"": ""Y""}")',
    'the run completes with the outputs of its completed leaves'
);

-- the last step skipped
SELECT pgflow.start_flow('lone', '{}', run_id => '00000000-0000-0000-0000-000000000005');
SELECT pg_temp.start_all('lone');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000005', 'a', 0, 'boom');
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output, r.completed_at = now())::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000005'),
    '(completed,0,{},t)',
    'skipping the last remaining step completes the run (output {})'
);

-- a map task exhausted
SELECT pgflow.start_flow('mp', '[1, 2, 3]', run_id => '00000000-0000-0000-0000-000000000004');
SELECT pg_temp.start_all('mp');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000004', 'm', 0, '"one"');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000004', 'm', 1, 'bad element');
SELECT is(pg_temp.status(4, 'm'), 'skipped:handler_failed',
          'one exhausted map task skips the whole map step');
SELECT results_eq(
    $$SELECT task_index, status FROM pgflow.step_tasks
      WHERE run_id = '00000000-0000-0000-0000-000000000004' AND step_slug = 'm' ORDER BY task_index$$,
    $$VALUES (0, 'completed'), (1, 'failed'), (2, 'cancelled')$$,
    'its still running tasks are cancelled'
);
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000004', 'm', 2, '"three"'), false,
          'a late completion of a cancelled map task returns false');
SELECT is(
    (SELECT ss.output FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000004' AND ss.step_slug = 'm'),
    NULL,
    'the skipped map step has no output'
);
SELECT is(pg_temp.status(4, 'r'), 'started', 'the single step after it goes on');
SELECT is(
    (SELECT s.input FROM pg_temp.start_all('mp') AS s),
    '{"run": [1, 2, 3]}'::jsonb,
    'without the map in its input'
);

SELECT * FROM finish();
ROLLBACK;
