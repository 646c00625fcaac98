BEGIN;
SELECT plan(17);

-- a runs, m (a map over the input) is queued, b waits for a
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'm', step_type => 'map');
SELECT pgflow.add_step('f', 'b', ARRAY['a']);

CREATE FUNCTION pg_temp.start_step(step text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
              WHERE t.step_slug = step AND t.status = 'queued'),
        '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.snapshot() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT string_agg((t.step_slug, t.task_index, t.status, t.attempts_count, t.output)::text, ';'
                              ORDER BY t.step_slug, t.task_index) FROM pgflow.step_tasks AS t)
        || (SELECT string_agg((ss.step_slug, ss.status, ss.remaining_tasks, ss.output)::text, ';'
                              ORDER BY ss.step_slug) FROM pgflow.step_states AS ss)
        || (SELECT (r.status, r.remaining_steps, r.output, r.cancelled_at)::text FROM pgflow.runs AS r);
$$;

SELECT pgflow.start_flow('f', '[1, 2, 3]', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_step('a');
-- one task of the map is running, the others are queued
SELECT pgflow.start_tasks('f',
    ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t WHERE t.step_slug = 'm' AND t.task_index = 0),
    '00000000-0000-0000-0000-0000000000a2');

SELECT is(
    (SELECT (r.status, r.cancelled_at = now(), r.completed_at, r.failed_at, r.remaining_steps)::text
     FROM pgflow.cancel_run('00000000-0000-0000-0000-000000000001') AS r),
    '(cancelled,t,,,3)',
    'cancel_run returns the run, cancelled now'
);
SELECT is((SELECT status FROM pgflow.runs), 'cancelled', 'the run is stored cancelled');
SELECT is(
    ARRAY(SELECT (t.step_slug, t.task_index, t.status)::text FROM pgflow.step_tasks AS t
          ORDER BY t.step_slug, t.task_index),
    ARRAY['(a,0,cancelled)', '(m,0,cancelled)', '(m,1,cancelled)', '(m,2,cancelled)'],
    'its running and queued tasks are cancelled'
);
SELECT is(
    ARRAY(SELECT (ss.step_slug, ss.status)::text FROM pgflow.step_states AS ss ORDER BY ss.step_slug),
    ARRAY['(a,cancelled)', '(b,created)', '(m,cancelled)'],
    'its started steps are cancelled, the waiting step stays created'
);
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('f', 30, 10)$$,
    'nothing of the cancelled run can be claimed');
SELECT is(pg_temp.start_step('m'), 0::bigint, 'nor started');
SELECT is((SELECT count(*) FROM pgflow.step_tasks WHERE step_slug = 'b'), 0::bigint,
          'the waiting step never gets a task');

-- the worker of a finishes after the cancel: its completion changes nothing
CREATE TEMP TABLE before AS SELECT pg_temp.snapshot() AS s;
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"late"'), false,
          'a completion after the cancel returns false');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'm', 0, '"late"'), false,
          'so does a late completion of a map task');
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'm', 0, 'late'), false,
          'and a late failure');
SELECT is(pg_temp.snapshot(), (SELECT s FROM before), 'the late calls change nothing');
SELECT is((SELECT status FROM pgflow.step_states WHERE step_slug = 'b'), 'created',
          'the dependent of the late-completed step is not started');

-- a completion that commits before the cancel is kept
SELECT pgflow.start_flow('f', '[]', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_tasks('f',
    ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
          WHERE t.run_id = '00000000-0000-0000-0000-000000000002'),
    '00000000-0000-0000-0000-0000000000a1');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, '"early"');
SELECT is((SELECT status FROM pgflow.cancel_run('00000000-0000-0000-0000-000000000002')), 'cancelled',
          'a run with completed steps is cancelled');
SELECT is(
    ARRAY(SELECT (ss.step_slug, ss.status, ss.output)::text FROM pgflow.step_states AS ss
          WHERE ss.run_id = '00000000-0000-0000-0000-000000000002' ORDER BY ss.step_slug),
    ARRAY['(a,completed,"""early""")', '(b,cancelled,)', '(m,completed,[])'],
    'completed steps keep their status and output; the started one is cancelled'
);
SELECT is(
    (SELECT (t.status, t.attempts_count)::text FROM pgflow.step_tasks AS t
     WHERE t.run_id = '00000000-0000-0000-0000-000000000002' AND t.step_slug = 'b'),
    '(cancelled,0)',
    'the queued task of the started dependent is cancelled'
);
SELECT is(
    (SELECT (r.remaining_steps, r.output)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
    '(1,)',
    'the run keeps its counters and gets no output'
);
SELECT is(
    (SELECT status FROM pgflow.runs WHERE run_id = '00000000-0000-0000-0000-000000000001'),
    'cancelled',
    'the other run is not affected'
);

SELECT * FROM finish();
ROLLBACK;
