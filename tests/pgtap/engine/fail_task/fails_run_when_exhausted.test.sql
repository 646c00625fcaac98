BEGIN;
SELECT plan(21);

-- a may be attempted twice (step override of the flow's 3); b and c are other
-- roots; d waits for a
SELECT pgflow.create_flow('f', max_attempts => 3);
SELECT pgflow.add_step('f', 'a', max_attempts => 2);
SELECT pgflow.add_step('f', 'b');
SELECT pgflow.add_step('f', 'c');
SELECT pgflow.add_step('f', 'd', ARRAY['a']);

CREATE FUNCTION pg_temp.start_step(step text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t WHERE t.step_slug = step),
        '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.snapshot() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT string_agg((t.step_slug, t.status, t.attempts_count, t.error_message, t.vt, t.output)::text, ';'
                              ORDER BY t.step_slug) FROM pgflow.step_tasks AS t)
        || (SELECT string_agg((ss.step_slug, ss.status, ss.error_message, ss.remaining_tasks)::text, ';'
                              ORDER BY ss.step_slug) FROM pgflow.step_states AS ss)
        || (SELECT (r.status, r.error_message, r.remaining_steps, r.output)::text FROM pgflow.runs AS r);
$$;

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');

-- a task that is not started cannot fail
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'b', 0, 'too early'), false,
          'failing a queued task returns false');
SELECT is(
    (SELECT (t.status, t.attempts_count, t.error_message)::text FROM pgflow.step_tasks AS t
     WHERE t.step_slug = 'b'),
    '(queued,0,)',
    'and leaves it as it was'
);
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'nope', 0, 'x'), false,
          'failing an unknown task returns false');
SELECT throws_ok($$SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', NULL, 0, 'x')$$,
    '22004', 'run_id, step_slug and task_index must not be NULL', 'a NULL step_slug is refused');

SELECT pg_temp.start_step('a');
SELECT pg_temp.start_step('c');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom 1');
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'a';
SELECT pg_temp.start_step('a');

-- the last attempt fails
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom 2'), true,
          'the failure of the last attempt returns true');
SELECT is(
    (SELECT (t.status, t.attempts_count, t.error_message, t.failed_at = now())::text
     FROM pgflow.step_tasks AS t WHERE t.step_slug = 'a'),
    '(failed,2,"boom 2",t)',
    'the task is failed now with the last error (step max_attempts 2 applies)'
);
SELECT is(
    (SELECT (ss.status, ss.error_message, ss.failed_at = now())::text
     FROM pgflow.step_states AS ss WHERE ss.step_slug = 'a'),
    '(failed,"boom 2",t)',
    'its step is failed now with the error'
);
SELECT is(
    (SELECT (r.status, r.failed_at = now(), r.completed_at, r.output)::text FROM pgflow.runs AS r),
    '(failed,t,,)',
    'the run is failed now, without output'
);
SELECT is((SELECT error_message FROM pgflow.runs), 'step "a" failed: boom 2',
          'the run''s error message names the step and the error');
SELECT is((SELECT status FROM pgflow.step_tasks WHERE step_slug = 'b'), 'cancelled',
          'a queued task of the run is cancelled');
SELECT is((SELECT status FROM pgflow.step_tasks WHERE step_slug = 'c'), 'cancelled',
          'a running task of the run is cancelled');
SELECT is((SELECT count(*) FROM pgflow.step_tasks WHERE status IN ('queued', 'started')), 0::bigint,
          'no task of the run is left open');
SELECT is((SELECT status FROM pgflow.step_states WHERE step_slug = 'c'), 'cancelled',
          'a started step of the run is cancelled');
SELECT is((SELECT count(*) FROM pgflow.step_tasks WHERE step_slug = 'd'), 0::bigint,
          'the waiting dependent never gets a task');
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('f', 30, 10)$$,
    'nothing of the failed run can be claimed');

-- later calls change nothing
CREATE TEMP TABLE before AS SELECT pg_temp.snapshot() AS s;
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'again'), false,
          'failing the failed task again returns false');
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'c', 0, 'late'), false,
          'a late failure of a cancelled task returns false');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'c', 0, '"late"'), false,
          'a late completion of a cancelled task returns false');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"late"'), false,
          'a late completion of the failed task returns false');
SELECT is(pg_temp.start_step('b'), 0::bigint, 'a cancelled task cannot be started');
SELECT is(pg_temp.snapshot(), (SELECT s FROM before), 'the late calls change nothing');

SELECT * FROM finish();
ROLLBACK;
