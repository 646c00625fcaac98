BEGIN;
SELECT plan(25);

SELECT pgflow.create_flow('tap_prio');
SELECT pgflow.add_step('tap_prio', 'a');
SELECT pgflow.add_step('tap_prio', 'b', ARRAY['a']);

-- three runs at 0, then one at 5, one at -1, one at 5 again (started in that order)
SELECT pgflow.start_flow('tap_prio', jsonb_build_object('n', i)) FROM generate_series(1, 3) AS i;
SELECT is((SELECT prioritized FROM pgflow.flows WHERE flow_slug = 'tap_prio'), false,
          'runs at priority 0 leave the flow without levels (claims read one range)');
SELECT pgflow.start_flow('tap_prio', '{"n": 4}', priority => 5);
SELECT pgflow.start_flow('tap_prio', '{"n": 5}', priority => -1);
SELECT pgflow.start_flow('tap_prio', '{"n": 6}', priority => 5);
SELECT is((SELECT prioritized FROM pgflow.flows WHERE flow_slug = 'tap_prio'), true,
          'the first run with a priority gives the flow levels');

SELECT is((SELECT array_agg(priority ORDER BY input ->> 'n') FROM pgflow.runs WHERE flow_slug = 'tap_prio'),
          ARRAY[0, 0, 0, 5, -1, 5], 'runs keep the priority they were started with (default 0)');
SELECT is((SELECT array_agg(t.priority ORDER BY r.input ->> 'n') FROM pgflow.step_tasks AS t
           JOIN pgflow.runs AS r USING (run_id) WHERE t.flow_slug = 'tap_prio'),
          ARRAY[0, 0, 0, 5, -1, 5], 'and their tasks carry it');

CREATE TEMP TABLE c1 AS
SELECT * FROM pgflow.claim_tasks('tap_prio', 3, '00000000-0000-0000-0000-00000000000a');
SELECT is((SELECT array_agg((input -> 'run' ->> 'n')::int ORDER BY (input -> 'run' ->> 'n')::int) FROM c1),
          ARRAY[1, 4, 6], 'a claim of 3 takes both priority-5 tasks, then the oldest at 0');
CREATE TEMP TABLE c2 AS
SELECT * FROM pgflow.claim_tasks('tap_prio', 10, '00000000-0000-0000-0000-00000000000a');
SELECT is((SELECT array_agg((input -> 'run' ->> 'n')::int ORDER BY (input -> 'run' ->> 'n')::int) FROM c2),
          ARRAY[2, 3, 5], 'then the rest, the negative priority included');

-- a dependent's task (created as its run's step finishes) inherits the priority
SELECT pgflow.complete_tasks(array_agg(run_id), array_agg(step_slug), array_agg(task_index),
                             array_agg('1'::jsonb), array_agg(attempt))
FROM (SELECT * FROM c1 UNION ALL SELECT * FROM c2) AS c;
SELECT is((SELECT array_agg(t.priority ORDER BY r.input ->> 'n') FROM pgflow.step_tasks AS t
           JOIN pgflow.runs AS r USING (run_id) WHERE t.flow_slug = 'tap_prio' AND t.step_slug = 'b'),
          ARRAY[0, 0, 0, 5, -1, 5], 'dependent steps'' tasks have their run''s priority');
-- (every b task was created by that one call: their vt is equal, so which
-- of the two priority-5 tasks comes first is not defined)
SELECT is((SELECT array_agg(r.priority)
           FROM pgflow.read_with_poll('tap_prio', 30, 1) AS m
           JOIN pgflow.runs AS r ON r.run_id = (m.message ->> 'run_id')::uuid),
          ARRAY[5], 'read_with_poll takes priority first too: a priority-5 task');
SELECT is((SELECT array_agg(r.input ->> 'n' IN ('4', '6'))
           FROM pgflow.step_tasks AS t JOIN pgflow.runs AS r USING (run_id)
           WHERE t.flow_slug = 'tap_prio' AND t.step_slug = 'b' AND t.read_ct = 1),
          ARRAY[true], 'it leased one task, of n = 4 or n = 6');
-- (the three priority-0 tasks were created in one transaction: their vt is
-- equal, so which of them comes first is not defined)
SELECT is((SELECT array_agg(r.priority ORDER BY r.priority DESC)
           FROM pgflow.read_with_poll('tap_prio', 30, 2) AS m
           JOIN pgflow.runs AS r ON r.run_id = (m.message ->> 'run_id')::uuid),
          ARRAY[5, 0], 'then n = 6 (the other priority-5 task) and one at 0');

-- maps: every element's task has the run's priority
SELECT pgflow.create_flow('tap_prio_map');
SELECT pgflow.add_step('tap_prio_map', 'each', step_type => 'map');
SELECT pgflow.start_flow('tap_prio_map', '[1, 2, 3]', priority => 7);
SELECT is((SELECT array_agg(priority) FROM pgflow.step_tasks WHERE flow_slug = 'tap_prio_map'),
          ARRAY[7, 7, 7], 'a map''s tasks have their run''s priority');

-- a start_delay is not jumped: a delayed high-priority task waits its turn
SELECT pgflow.create_flow('tap_prio_delay');
SELECT pgflow.add_step('tap_prio_delay', 'a', start_delay => 3600);
SELECT pgflow.add_step('tap_prio_delay', 'z');
SELECT pgflow.start_flow('tap_prio_delay', '{}', priority => 100);
SELECT pgflow.start_flow('tap_prio_delay', '{}');
SELECT is((SELECT array_agg(step_slug || ':' || (input -> 'run')::text)
           FROM pgflow.claim_tasks('tap_prio_delay', 10, '00000000-0000-0000-0000-00000000000a')),
          ARRAY['z:{}', 'z:{}'],
          'priority orders claimable tasks: the delayed priority-100 task stays delayed');

-- under a concurrency limit, a freed slot goes to the highest priority first
SELECT pgflow.create_flow('tap_prio_gate');
SELECT pgflow.add_step('tap_prio_gate', 'a', concurrency => 1);
SELECT pgflow.start_flow('tap_prio_gate', '{"n": 1}');
SELECT pgflow.start_flow('tap_prio_gate', '{"n": 2}');
SELECT pgflow.start_flow('tap_prio_gate', '{"n": 3}', priority => 2);
CREATE TEMP TABLE g1 AS
SELECT * FROM pgflow.claim_tasks('tap_prio_gate', 10, '00000000-0000-0000-0000-00000000000a');
SELECT is((SELECT array_agg(input -> 'run' ->> 'n') FROM g1), ARRAY['1'], 'the slot holder');
SELECT pgflow.complete_task(run_id, step_slug, task_index, '1', attempt) FROM g1;
SELECT is((SELECT array_agg(input -> 'run' ->> 'n')
           FROM pgflow.claim_tasks('tap_prio_gate', 10, '00000000-0000-0000-0000-00000000000a')),
          ARRAY['3'], 'the freed slot goes to the priority-2 run before the older one');

-- sub-flows: a child runs at its parent's priority and in its trace
SELECT pgflow.create_flow('tap_prio_child');
SELECT pgflow.add_step('tap_prio_child', 'work');
SELECT pgflow.create_flow('tap_prio_parent');
SELECT pgflow.add_subflow_step('tap_prio_parent', 'sub', 'tap_prio_child');
SELECT pgflow.start_flow('tap_prio_parent', '{}', priority => 3,
                         trace_context => '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
SELECT is((SELECT (priority, trace_context) FROM pgflow.runs WHERE flow_slug = 'tap_prio_child'),
          (3, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'::text),
          'a child run has its parent''s priority and trace context');
SELECT is((SELECT priority FROM pgflow.step_tasks WHERE flow_slug = 'tap_prio_child'), 3,
          'and so do its tasks');

-- trace contexts: stored, read back by workers through trace_contexts
SELECT is((SELECT array_agg(t.trace_context)
           FROM pgflow.trace_contexts(ARRAY(SELECT run_id FROM pgflow.runs
                                            WHERE flow_slug IN ('tap_prio_parent', 'tap_prio')
                                            ORDER BY run_id)) AS t),
          ARRAY['00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'],
          'trace_contexts returns the runs that have one and leaves the others out');
SELECT is((SELECT count(*)::int FROM pgflow.trace_contexts(ARRAY[gen_random_uuid()])), 0,
          'an unknown run is left out');

-- an idempotent start returns the existing run unchanged
SELECT is((SELECT priority FROM pgflow.start_flow('tap_prio', '{}', run_id => (
              SELECT run_id FROM pgflow.runs WHERE input ->> 'n' = '4'), priority => 9)), 5,
          'a start with an existing run_id returns the run with its own priority');

-- refusals
SELECT throws_ok($$SELECT pgflow.start_flow('tap_prio', '{}', priority => NULL)$$, '22004',
                 'priority must not be NULL', 'a NULL priority is refused');
SELECT throws_like($$SELECT pgflow.start_flow('tap_prio', '{}', trace_context => 'abc')$$,
                   '%is not a W3C traceparent%', 'a trace context that is not a traceparent is refused');
SELECT throws_ok($$SELECT pgflow.start_flow('tap_prio', '{}',
                   trace_context => '00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01')$$,
                 '22023', NULL, 'upper case hex is refused (W3C: lower case)');
SELECT throws_ok($$SELECT pgflow.start_flow('tap_prio', '{}',
                   trace_context => '00-00000000000000000000000000000000-b7ad6b7169203331-01')$$,
                 '22023', NULL, 'an all-zero trace id is refused');
SELECT throws_ok($$SELECT pgflow.start_flow('tap_prio', '{}',
                   trace_context => '01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')$$,
                 '22023', NULL, 'a version other than 00 is refused');
SELECT is((SELECT count(*)::int FROM pgflow.runs WHERE flow_slug = 'tap_prio'), 6,
          'refused starts leave no run behind');

SELECT * FROM finish();
ROLLBACK;
