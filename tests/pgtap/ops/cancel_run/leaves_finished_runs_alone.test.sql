BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(9);

SELECT pgflow.create_flow('f', max_attempts => 1);
SELECT pgflow.add_step('f', 'a');

CREATE FUNCTION pg_temp.run_once(run uuid, fail boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgflow.start_flow('f', '{}', run_id => run);
    PERFORM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t WHERE t.run_id = run),
        '00000000-0000-0000-0000-0000000000a1');
    IF fail THEN
        PERFORM pgflow.fail_task(run, 'a', 0, 'boom');
    ELSE
        PERFORM pgflow.complete_task(run, 'a', 0, '"done"');
    END IF;
END;
$$;

SELECT pg_temp.run_once('00000000-0000-0000-0000-000000000001', false);
SELECT pg_temp.run_once('00000000-0000-0000-0000-000000000002', true);
CREATE TEMP TABLE before AS SELECT * FROM pgflow.runs;

SELECT is(
    (SELECT r::text FROM pgflow.cancel_run('00000000-0000-0000-0000-000000000001') AS r),
    (SELECT b::text FROM before AS b WHERE b.run_id = '00000000-0000-0000-0000-000000000001'),
    'cancelling a completed run returns it unchanged'
);
SELECT is(
    (SELECT r::text FROM pgflow.cancel_run('00000000-0000-0000-0000-000000000002') AS r),
    (SELECT b::text FROM before AS b WHERE b.run_id = '00000000-0000-0000-0000-000000000002'),
    'cancelling a failed run returns it unchanged'
);
SELECT results_eq('SELECT * FROM pgflow.runs ORDER BY run_id', 'SELECT * FROM before ORDER BY run_id',
    'and neither run changed');
SELECT is((SELECT status FROM pgflow.step_tasks WHERE run_id = '00000000-0000-0000-0000-000000000002'),
          'failed', 'the failed task stays failed');

-- cancelling twice
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000003');
UPDATE pgflow.runs SET cancelled_at = now() - interval '1 hour'
WHERE run_id = '00000000-0000-0000-0000-000000000003';
SELECT is(
    (SELECT (r.status, r.cancelled_at = now() - interval '1 hour')::text
     FROM pgflow.cancel_run('00000000-0000-0000-0000-000000000003') AS r),
    '(cancelled,t)',
    'cancelling a cancelled run keeps its first cancellation time'
);
SELECT lives_ok($$SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000003')$$,
    'cancelling again is no error');

-- errors
SELECT throws_ok($$SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000009')$$,
    '42704', 'run 00000000-0000-0000-0000-000000000009 does not exist',
    'an unknown run is an error');
SELECT throws_ok($$SELECT pgflow.cancel_run(NULL)$$,
    '22004', 'run_id must not be NULL', 'a NULL run_id is refused');
SELECT is(
    (SELECT count(*) FROM pgflow.runs WHERE status = 'cancelled'), 1::bigint,
    'only the started run was ever cancelled'
);

SELECT * FROM finish();
ROLLBACK;
