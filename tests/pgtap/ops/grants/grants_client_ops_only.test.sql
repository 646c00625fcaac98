BEGIN;
SELECT plan(7);

CREATE ROLE pgflow_tap_client;
CREATE ROLE pgflow_tap_worker;
SELECT pgflow.grant_client('pgflow_tap_client');
SELECT pgflow.grant_worker('pgflow_tap_worker');

SELECT ok(has_function_privilege('pgflow_tap_client', 'pgflow.get_run(uuid)', 'EXECUTE'),
          'a client may read runs');
SELECT ok(has_function_privilege('pgflow_tap_client', 'pgflow.cancel_run(uuid)', 'EXECUTE'),
          'a client may cancel runs');
SELECT ok(NOT has_function_privilege('pgflow_tap_worker', 'pgflow.cancel_run(uuid)', 'EXECUTE'),
          'a worker may not');
SELECT is(
    ARRAY(SELECT f FROM unnest(ARRAY['pgflow.retry_run(uuid)', 'pgflow.prune_runs(interval, integer)',
                                     'pgflow.delete_flow(text, boolean)']) AS f
          WHERE has_function_privilege('pgflow_tap_client', f, 'EXECUTE')
             OR has_function_privilege('pgflow_tap_worker', f, 'EXECUTE')),
    '{}'::text[],
    'the operator functions are granted to neither'
);
SELECT ok(
    NOT EXISTS (SELECT 1 FROM pg_proc
                WHERE oid IN ('pgflow.retry_run(uuid)'::regprocedure,
                              'pgflow.prune_runs(interval, integer)'::regprocedure,
                              'pgflow.delete_flow(text, boolean)'::regprocedure)
                  AND prosecdef),
    'and run as their caller'
);
SELECT ok(NOT has_table_privilege('pgflow_tap_client', 'pgflow.run_stats', 'SELECT'),
          'a client cannot read the operator views');

SET LOCAL ROLE pgflow_tap_client;
SELECT throws_ok($$SELECT pgflow.retry_run(gen_random_uuid())$$,
    '42501', 'permission denied for function retry_run', 'a client calling retry_run is refused');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
