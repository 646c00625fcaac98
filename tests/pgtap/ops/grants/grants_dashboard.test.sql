BEGIN;
SELECT plan(14);

CREATE ROLE pgflow_tap_ui;
CREATE ROLE pgflow_tap_app;
SELECT pgflow.grant_dashboard('pgflow_tap_ui');
SELECT pgflow.grant_client('pgflow_tap_app');

SELECT ok(has_function_privilege('pgflow_tap_ui', 'pgflow.list_runs(text, text, integer, jsonb, text, timestamptz, timestamptz, boolean)', 'EXECUTE'),
          'grant_dashboard gives what grant_client gives');
SELECT ok(has_function_privilege('pgflow_tap_ui', 'pgflow.dashboard_snapshot(boolean)', 'EXECUTE')
          AND has_function_privilege('pgflow_tap_ui', 'pgflow.flow_shape(text)', 'EXECUTE'),
          'plus dashboard_snapshot and flow_shape');
SELECT ok(NOT has_function_privilege('pgflow_tap_app', 'pgflow.dashboard_snapshot(boolean)', 'EXECUTE'),
          'grant_client does not give dashboard_snapshot');
SELECT ok(NOT has_function_privilege('pgflow_tap_ui', 'pgflow.retry_run(uuid)', 'EXECUTE')
          AND NOT has_function_privilege('pgflow_tap_ui', 'pgflow.start_tasks(text, bigint[], uuid)', 'EXECUTE'),
          'nor an operator or protocol function');
SELECT ok(NOT has_table_privilege('pgflow_tap_ui', 'pgflow.step_tasks', 'SELECT'),
          'nor any table');
SELECT throws_ok($$SELECT pgflow.grant_dashboard('pgflow_tap_nobody')$$, '42704',
                 'role "pgflow_tap_nobody" does not exist', 'an unknown role is refused');

-- a flow with work in every state the snapshot counts
SELECT pgflow.create_flow('tap_dash', max_attempts => 2, base_delay => 60);
SELECT pgflow.add_step('tap_dash', 'a');
SELECT pgflow.add_step('tap_dash', 'b', start_delay => 3600);
SELECT pgflow.start_flow('tap_dash', '{}') FROM generate_series(1, 3);
SELECT pgflow.register_worker('00000000-0000-0000-0000-00000000000a', ARRAY['tap_dash']);
SELECT pgflow.claim_tasks('tap_dash', 1, '00000000-0000-0000-0000-00000000000a');

SET LOCAL ROLE pgflow_tap_ui;
SELECT is((SELECT q FROM jsonb_array_elements(pgflow.dashboard_snapshot() -> 'queues') AS q
           WHERE q ->> 'step_slug' = 'a') - 'oldest_claimable_s',
          '{"flow_slug": "tap_dash", "step_slug": "a", "ready": 2, "delayed": 0, "started": 1, "stalled": 0}'::jsonb,
          'queues: ready and started tasks of a step');
SELECT is((SELECT (q ->> 'delayed')::int FROM jsonb_array_elements(pgflow.dashboard_snapshot() -> 'queues') AS q
           WHERE q ->> 'step_slug' = 'b'),
          3, 'queues: tasks held back by start_delay are delayed');
SELECT ok((SELECT (q ->> 'oldest_claimable_s')::float >= 0
           FROM jsonb_array_elements(pgflow.dashboard_snapshot() -> 'queues') AS q
           WHERE q ->> 'step_slug' = 'a'), 'queues: the age of the oldest claimable task');
SELECT is(pgflow.dashboard_snapshot() -> 'runs',
          '[{"flow_slug": "tap_dash", "status": "started", "count": 3}]'::jsonb, 'runs by status');
SELECT is((SELECT jsonb_agg(w - 'started_at' - 'last_heartbeat_at')
           FROM jsonb_array_elements(pgflow.dashboard_snapshot() -> 'workers') AS w),
          '[{"worker_id": "00000000-0000-0000-0000-00000000000a", "flow_slugs": ["tap_dash"], "host": null,
             "pid": null, "stopped_at": null, "alive": true, "running": 1}]'::jsonb,
          'workers: alive, with the tasks they run');
SELECT is((SELECT sum((t ->> 'count')::int) FROM jsonb_array_elements(pgflow.dashboard_snapshot() -> 'tasks') AS t),
          6::bigint, 'tasks: every task counted once');
SELECT is(pgflow.dashboard_snapshot(with_counts => false) -> 'runs', '[]'::jsonb,
          'with_counts => false leaves the history counts out');
SELECT throws_ok($$SELECT pgflow.dashboard_snapshot(NULL)$$, '22004',
                 'with_counts must not be NULL', 'NULL with_counts is refused');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
