BEGIN;
SELECT plan(25);

-- a step limited to 2 at once per run.tenant
SELECT pgflow.create_flow('tap_gate');
SELECT pgflow.add_step('tap_gate', 'a', concurrency => 2, concurrency_key => 'run.tenant');
SELECT pgflow.start_flow('tap_gate', jsonb_build_object('tenant', 'A', 'n', i)) FROM generate_series(1, 5) AS i;
SELECT pgflow.start_flow('tap_gate', jsonb_build_object('tenant', 'B', 'n', i)) FROM generate_series(1, 3) AS i;
SELECT pgflow.start_flow('tap_gate', jsonb_build_object('n', 0));

CREATE TEMP TABLE claimed AS
SELECT * FROM pgflow.claim_tasks('tap_gate', 100, '00000000-0000-0000-0000-00000000000a');
SELECT is((SELECT count(*)::int FROM claimed), 5,
          'a claim takes at most the limit per key value (2 of A, 2 of B, 1 without the key)');
SELECT is((SELECT jsonb_object_agg(k, n) FROM (
              SELECT coalesce(c.input -> 'run' ->> 'tenant', 'none') AS k, count(*) AS n
              FROM claimed AS c GROUP BY 1) AS x),
          '{"A": 2, "B": 2, "none": 1}'::jsonb, 'per key value');
SELECT is((SELECT count(*)::int FROM pgflow.claim_tasks('tap_gate', 100, '00000000-0000-0000-0000-00000000000a')),
          0, 'nothing more is claimable while the slots are held');
SELECT is((SELECT count(*)::int FROM pgflow.step_tasks
           WHERE flow_slug = 'tap_gate' AND status = 'queued' AND vt = 'infinity'),
          4, 'the others wait parked (vt = infinity)');
SELECT is((SELECT array_agg(DISTINCT gate ORDER BY gate) FROM pgflow.step_tasks WHERE flow_slug = 'tap_gate'),
          ARRAY['a|"A"', 'a|"B"', 'a|null'], 'each task names its gate (step|key value)');

SELECT is((SELECT pgflow.get_run(r.run_id) #> '{steps,0,waiting_for_slot}' FROM pgflow.runs AS r
           WHERE r.flow_slug = 'tap_gate' AND r.input ->> 'n' = '5'),
          '[{"limit_of": "step", "key": "run.tenant", "value": "A", "tasks": 1, "held": 2, "limit": 2}]'::jsonb,
          'get_run says what a waiting task waits for (key, value, held / limit)');
SELECT is((SELECT pgflow.get_run(r.run_id) #> '{steps,0,waiting_for_slot}' FROM pgflow.runs AS r
           WHERE r.flow_slug = 'tap_gate' AND r.input ->> 'n' = '1' AND r.input ->> 'tenant' = 'A'),
          'null'::jsonb, 'and null for a step that holds its slot');

-- a completion frees its slot for the oldest parked task of its gate
SELECT pgflow.complete_task(c.run_id, c.step_slug, c.task_index, '1', c.attempt)
FROM claimed AS c WHERE c.input -> 'run' ->> 'tenant' = 'A' LIMIT 1;
CREATE TEMP TABLE claimed2 AS
SELECT * FROM pgflow.claim_tasks('tap_gate', 100, '00000000-0000-0000-0000-00000000000a');
SELECT is((SELECT count(*)::int FROM claimed2), 1, 'a completed task frees one slot');
SELECT is((SELECT (input -> 'run' ->> 'n')::int FROM claimed2), 3,
          'taken by the oldest parked task of the same key (A, n = 3)');

-- a failure with retries left keeps the slot (its retry waits in it)
SELECT pgflow.fail_task(c.run_id, c.step_slug, c.task_index, 'boom', c.attempt)
FROM claimed AS c WHERE c.input -> 'run' ->> 'tenant' = 'B' LIMIT 1;
SELECT is((SELECT count(*)::int FROM pgflow.step_tasks
           WHERE flow_slug = 'tap_gate' AND gate = 'a|"B"' AND vt < 'infinity' AND status IN ('queued', 'started')),
          2, 'a task waiting for its retry still holds its slot');

-- cancel frees slots; parked tasks of the cancelled run free nothing
SELECT pgflow.cancel_run(c.run_id)
FROM claimed AS c WHERE c.input -> 'run' ->> 'tenant' = 'B' AND c.input -> 'run' ->> 'n' = '2';
SELECT is((SELECT count(*)::int FROM pgflow.step_tasks
           WHERE flow_slug = 'tap_gate' AND gate = 'a|"B"' AND vt < 'infinity' AND status IN ('queued', 'started')),
          2, 'a cancelled run''s slot goes to the next parked task of its key');

-- exhausting the last attempt (a final failure) frees the slot too
SELECT pgflow.create_flow('tap_gate_fail', max_attempts => 1);
SELECT pgflow.add_step('tap_gate_fail', 'a', concurrency => 1);
SELECT pgflow.start_flow('tap_gate_fail', '{}') FROM generate_series(1, 2);
SELECT pgflow.fail_task(t.run_id, t.step_slug, t.task_index, 'boom', t.attempt)
FROM pgflow.claim_tasks('tap_gate_fail', 10, '00000000-0000-0000-0000-00000000000a') AS t;
SELECT is((SELECT count(*)::int FROM pgflow.claim_tasks('tap_gate_fail', 10, '00000000-0000-0000-0000-00000000000a')),
          1, 'a task that failed for good frees its slot (limit without key: one gate for the step)');

-- retry_run: the re-queued task waits for a slot like a new one
SELECT is((SELECT (pgflow.retry_run(r.run_id)).status FROM pgflow.runs AS r
           WHERE r.flow_slug = 'tap_gate_fail' AND r.status = 'failed'),
          'started', 'retry_run of a run with a gated task');
SELECT is((SELECT count(*)::int FROM pgflow.step_tasks
           WHERE flow_slug = 'tap_gate_fail' AND status = 'queued' AND vt = 'infinity'),
          1, 'its task waits parked while the slot is held');

-- the limit is a tunable: raising it un-parks at once
SELECT pgflow.add_step('tap_gate_fail', 'a', concurrency => 2);
SELECT is((SELECT count(*)::int FROM pgflow.step_tasks
           WHERE flow_slug = 'tap_gate_fail' AND status = 'queued' AND vt = 'infinity'),
          0, 'a raised limit gives the parked task a slot');

-- a flow-level limit over the flow's steps; a step's own limit replaces it
SELECT pgflow.create_flow('tap_gate_flow', concurrency => 1, concurrency_key => 'run.t');
SELECT pgflow.add_step('tap_gate_flow', 'x');
SELECT pgflow.add_step('tap_gate_flow', 'y');
SELECT pgflow.add_step('tap_gate_flow', 'z', concurrency => 5);
SELECT pgflow.start_flow('tap_gate_flow', '{"t": 1}') FROM generate_series(1, 2);
SELECT is((SELECT count(*)::int FROM pgflow.step_tasks
           WHERE flow_slug = 'tap_gate_flow' AND vt < 'infinity'),
          1 + 2, 'one task of x/y per key at once under the flow limit, z has its own');
SELECT is((SELECT array_agg(DISTINCT gate ORDER BY gate) FROM pgflow.step_tasks WHERE flow_slug = 'tap_gate_flow'),
          ARRAY['*|1', 'z|'], 'gates: the flow''s (*) by key, z''s without key');

-- a map step keyed by its element
SELECT pgflow.create_flow('tap_gate_map');
SELECT pgflow.add_step('tap_gate_map', 'm', step_type => 'map', concurrency => 1, concurrency_key => 'item.c');
SELECT pgflow.start_flow('tap_gate_map', '[{"c": 1}, {"c": 1}, {"c": 2}, {}]');
SELECT is((SELECT array_agg(gate ORDER BY task_index) FROM pgflow.step_tasks WHERE flow_slug = 'tap_gate_map'),
          ARRAY['m|1', 'm|1', 'm|2', 'm|null'], 'a map task''s gate may come from its element (item.c)');
SELECT is((SELECT array_agg(task_index ORDER BY task_index) FROM pgflow.step_tasks
           WHERE flow_slug = 'tap_gate_map' AND vt < 'infinity'),
          ARRAY[0, 2, 3], 'one per element key');

-- refusals
SELECT throws_ok($$SELECT pgflow.add_step('tap_gate_map', 'n', concurrency => 0)$$, '22023',
                 'step "n": concurrency must be at least 1, got 0', 'a limit below 1');
SELECT throws_ok($$SELECT pgflow.add_step('tap_gate_map', 'n', concurrency_key => 'run.x')$$, '22023',
                 'step "n": concurrency_key "run.x" needs a concurrency limit', 'a key without a limit');
SELECT throws_ok($$SELECT pgflow.add_step('tap_gate_map', 'n', concurrency => 2, concurrency_key => 'other.x')$$, '22023',
                 'step "n": concurrency_key "other.x" starts with "other", not one of [run]', 'a key that is not run or a dependency');
SELECT throws_ok($$SELECT pgflow.add_step('tap_gate_map', 'n', concurrency => 2, concurrency_key => 'item.x')$$, '22023',
                 'step "n": concurrency_key "item.x" starts with "item", not one of [run]', 'item only for a map step');
SELECT throws_ok($$SELECT pgflow.add_step('tap_gate_map', 'w', step_type => 'wait', wait_event => 'e', wait_key => 'run.k', concurrency => 2)$$, '22023',
                 'wait step "w" has no task: concurrency does not apply', 'no limit on a wait step');
SELECT throws_ok($$SELECT pgflow.create_flow('tap_gate_x', concurrency => 1, concurrency_key => 'm.x')$$, '22023',
                 'flow "tap_gate_x": concurrency_key "m.x" starts with "m", not one of [run]', 'a flow''s key starts with run');

SELECT * FROM finish();
ROLLBACK;
