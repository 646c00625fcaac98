BEGIN;
SELECT plan(5);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.create_flow('empty');
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('empty', '{}', run_id => '00000000-0000-0000-0000-000000000002');

SELECT throws_ok($$SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000001')$$,
    '55000', 'run 00000000-0000-0000-0000-000000000001 is still running',
    'a running run cannot be retried');
SELECT throws_ok($$SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000002')$$,
    '55000', 'run 00000000-0000-0000-0000-000000000002 is completed',
    'a completed run cannot be retried');
SELECT throws_ok($$SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000009')$$,
    '42704', 'run 00000000-0000-0000-0000-000000000009 does not exist',
    'an unknown run is an error');
SELECT throws_ok($$SELECT pgflow.retry_run(NULL)$$,
    '22004', 'run_id must not be NULL', 'a NULL run_id is refused');
SELECT is_empty('SELECT * FROM pgflow.run_retries', 'refused retries leave no history');

SELECT * FROM finish();
ROLLBACK;
