BEGIN;
SELECT plan(6);

-- list_flows counts each flow's runs in all and by status, every count
-- stopping at count_limit (10 000) so that a long history costs no more
-- than 10 000 index entries per count.
SELECT pgflow.create_flow('tap_counted');
SELECT pgflow.add_step('tap_counted', 'a');
SELECT pgflow.create_flow('tap_long');
SELECT pgflow.add_step('tap_long', 'a');
SELECT pgflow.create_flow('tap_none');
SELECT pgflow.add_step('tap_none', 'a');

-- tap_counted: 2 in flight, 3 completed, 1 failed, 1 cancelled
SELECT pgflow.start_flow('tap_counted', '{}') FROM generate_series(1, 7);
UPDATE pgflow.runs SET status = 'completed', remaining_steps = 0, output = '{}', completed_at = now()
WHERE run_id IN (SELECT run_id FROM pgflow.runs WHERE flow_slug = 'tap_counted'
                 ORDER BY run_id LIMIT 3);
UPDATE pgflow.runs SET status = 'failed', failed_at = now(), error_message = 'boom'
WHERE run_id = (SELECT run_id FROM pgflow.runs WHERE flow_slug = 'tap_counted' AND status = 'started'
                ORDER BY run_id LIMIT 1);
SELECT pgflow.cancel_run((SELECT run_id FROM pgflow.runs WHERE flow_slug = 'tap_counted'
                          AND status = 'started' ORDER BY run_id LIMIT 1));

-- tap_long: 10 002 completed runs and 10 001 failed ones, written directly
INSERT INTO pgflow.runs (flow_slug, status, input, output, remaining_steps, completed_at)
SELECT 'tap_long', 'completed', '{}', '{}', 0, now() FROM generate_series(1, 10002);
INSERT INTO pgflow.runs (flow_slug, status, input, remaining_steps, failed_at, error_message)
SELECT 'tap_long', 'failed', '{}', 1, now(), 'boom' FROM generate_series(1, 10001);

CREATE TEMP TABLE counts AS
SELECT f ->> 'flow_slug' AS flow_slug,
       f - ARRAY['flow_name', 'version', 'current', 'pinned', 'steps', 'created_at', 'paused', 'flow_slug'] AS c
FROM pgflow.list_flows() AS f WHERE f ->> 'flow_slug' LIKE 'tap\_%';

SELECT is((SELECT c FROM counts WHERE flow_slug = 'tap_counted'),
          '{"runs": 7, "runs_in_flight": 2, "runs_completed": 3, "runs_failed": 1,
            "runs_cancelled": 1, "count_limit": 10000, "drained": false}'::jsonb,
          'a flow''s runs are counted in all and by status');
SELECT is((SELECT c FROM counts WHERE flow_slug = 'tap_none'),
          '{"runs": 0, "runs_in_flight": 0, "runs_completed": 0, "runs_failed": 0,
            "runs_cancelled": 0, "count_limit": 10000, "drained": true}'::jsonb,
          'a flow without runs counts zeros and is drained');
SELECT is((SELECT (c ->> 'runs')::int FROM counts WHERE flow_slug = 'tap_long'), 10000,
          'a count stops at count_limit');
SELECT is((SELECT (c ->> 'runs_failed')::int FROM counts WHERE flow_slug = 'tap_long'), 10000,
          'so does a count by status');
SELECT is((SELECT c -> 'runs_completed' FROM counts WHERE flow_slug = 'tap_long'), 'null'::jsonb,
          'runs_completed is null when the total is not exact');
SELECT is((SELECT (c ->> 'runs_in_flight')::int FROM counts WHERE flow_slug = 'tap_long'), 0,
          'a flow with a long history and nothing in flight says so');

SELECT * FROM finish();
ROLLBACK;
