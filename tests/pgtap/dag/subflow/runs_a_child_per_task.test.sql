BEGIN;
SELECT plan(14);

-- child: one task step "double"; parent: prep -> each (map over prep's array,
-- one child run per element) -> one (single: a child run with the step input)
SELECT pgflow.create_flow('child');
SELECT pgflow.add_step('child', 'double');
SELECT pgflow.create_flow('parent');
SELECT pgflow.add_step('parent', 'prep');
SELECT pgflow.add_subflow_step('parent', 'each', 'child', '{prep}', map => true);
SELECT pgflow.add_subflow_step('parent', 'one', 'child', '{each}');

SELECT pgflow.start_flow('parent', '{"n": 3}', '00000000-0000-7000-8000-000000000001');
SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, '[10, 20, 30]', t.attempt)
FROM pgflow.claim_tasks('parent', 10, gen_random_uuid()) AS t;

SELECT is((SELECT count(*)::integer FROM pgflow.runs AS r
           WHERE r.parent_run_id = '00000000-0000-7000-8000-000000000001'
             AND r.parent_step_slug = 'each'),
          3, 'a map sub-flow step starts one child run per element, in the same transaction');
SELECT is(ARRAY(SELECT r.input FROM pgflow.runs AS r
                WHERE r.parent_run_id = '00000000-0000-7000-8000-000000000001'
                ORDER BY r.parent_task_index),
          ARRAY['10', '20', '30']::jsonb[], 'each child run gets its element as input');
SELECT is(ARRAY(SELECT r.depth FROM pgflow.runs AS r
                WHERE r.parent_run_id = '00000000-0000-7000-8000-000000000001'),
          ARRAY[1, 1, 1], 'children are one sub-flow deep');
SELECT is((SELECT r.run_id FROM pgflow.runs AS r
           WHERE r.parent_run_id = '00000000-0000-7000-8000-000000000001' AND r.parent_task_index = 1),
          pgflow._subflow_child_id('00000000-0000-7000-8000-000000000001', 'each', 1, 1),
          'a child run''s id is derived from its parent run, step, task and attempt');
SELECT is((SELECT count(*)::integer FROM pgflow.claim_tasks('parent', 10, gen_random_uuid())), 0,
          'no worker of the parent flow can claim a sub-flow task');
SELECT is((SELECT count(*)::integer FROM pgflow.step_tasks AS t
           WHERE t.run_id = '00000000-0000-7000-8000-000000000001' AND t.step_slug = 'each'
             AND t.status = 'started' AND t.vt = 'infinity'),
          3, 'the sub-flow tasks are started, with no lease to expire');

-- a worker of the child flow completes the children's tasks out of order
SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, to_jsonb((t.input ->> 'run')::integer * 2), t.attempt)
FROM (SELECT * FROM pgflow.claim_tasks('child', 10, gen_random_uuid()) ORDER BY (input ->> 'run')::integer DESC) AS t;

SELECT is((SELECT ss.output FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-7000-8000-000000000001' AND ss.step_slug = 'each'),
          '[{"double": 20}, {"double": 40}, {"double": 60}]'::jsonb,
          'the map''s output is the array of its children''s outputs in element order');
SELECT is((SELECT r.input FROM pgflow.runs AS r
           WHERE r.parent_run_id = '00000000-0000-7000-8000-000000000001' AND r.parent_step_slug = 'one'),
          jsonb_build_object('run', '{"n": 3}'::jsonb,
                             'each', '[{"double": 20}, {"double": 40}, {"double": 60}]'::jsonb),
          'a single sub-flow step''s child gets the step input ({"run", "<dep>"})');

SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, '"done"', t.attempt)
FROM pgflow.claim_tasks('child', 10, gen_random_uuid()) AS t;

SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000001'),
          'completed', 'the parent completes when its last child does');
SELECT is((SELECT r.output FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000001'),
          '{"one": {"double": "done"}}'::jsonb, 'the sub-flow leaf''s output is the child run''s output');

-- get_run links both ways
SELECT is(jsonb_array_length(pgflow.get_run('00000000-0000-7000-8000-000000000001') -> 'children'), 4,
          'get_run lists the children of a run');
SELECT is(pgflow.get_run(pgflow._subflow_child_id('00000000-0000-7000-8000-000000000001', 'one', 0, 1)) -> 'parent',
          '{"run_id": "00000000-0000-7000-8000-000000000001", "step_slug": "one", "task_index": 0, "attempt": 1}'::jsonb,
          'get_run names a child''s parent');
SELECT is(pgflow.get_run('00000000-0000-7000-8000-000000000001') #>> '{steps,1,subflow}', 'child',
          'get_run says which flow a sub-flow step runs');

-- an empty array completes a map sub-flow step at once
SELECT pgflow.start_flow('parent', '{}', '00000000-0000-7000-8000-000000000002');
SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, '[]', t.attempt)
FROM pgflow.claim_tasks('parent', 10, gen_random_uuid()) AS t;
SELECT is((SELECT ss.status || ' ' || ss.output::text FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-7000-8000-000000000002' AND ss.step_slug = 'each'),
          'completed []', 'a map sub-flow step over [] completes at once with [] and starts no child');

SELECT * FROM finish();
ROLLBACK;
