BEGIN;
SELECT plan(18);

-- child: one task step "work"; parent: prep -> each (map sub-flow, one child
-- run per element).  A sub-flow step's task is reported by its child run:
-- complete_task(s) and fail_task(s) refuse it and change nothing.
SELECT pgflow.create_flow('child');
SELECT pgflow.add_step('child', 'work');
SELECT pgflow.create_flow('parent');
SELECT pgflow.add_step('parent', 'prep');
SELECT pgflow.add_subflow_step('parent', 'each', 'child', '{prep}', map => true);

SELECT pgflow.start_flow('parent', '{}', '00000000-0000-7000-8000-000000000001');
SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, '[1, 2]', t.attempt)
FROM pgflow.claim_tasks('parent', 10, gen_random_uuid()) AS t;
-- a second run whose prep task is claimed, not yet reported
SELECT pgflow.start_flow('parent', '{}', '00000000-0000-7000-8000-000000000002');
CREATE TEMP TABLE claimed AS SELECT * FROM pgflow.claim_tasks('parent', 10, gen_random_uuid());

CREATE TEMP TABLE before AS
SELECT (SELECT jsonb_agg(t ORDER BY t.run_id, t.step_slug, t.task_index) FROM pgflow.step_tasks AS t) AS tasks,
       (SELECT jsonb_agg(s ORDER BY s.run_id, s.step_slug) FROM pgflow.step_states AS s) AS states,
       (SELECT jsonb_agg(r ORDER BY r.run_id) FROM pgflow.runs AS r) AS runs;

SELECT throws_ok(
    $$SELECT pgflow.complete_task('00000000-0000-7000-8000-000000000001', 'each', 0, '"by hand"', 1)$$,
    '55000',
    'complete_task: step "each" of run 00000000-0000-7000-8000-000000000001 is a sub-flow step (it runs flow "child"): its tasks are not reported by hand',
    'complete_task refuses a task of a sub-flow step, naming the run and step');
SELECT throws_ok(
    $$SELECT pgflow.complete_task('00000000-0000-7000-8000-000000000001', 'each', 1, '"by hand"')$$,
    '55000', NULL, 'complete_task refuses it without an attempt too');
SELECT throws_ok(
    $$SELECT pgflow.fail_task('00000000-0000-7000-8000-000000000001', 'each', 0, 'by hand', 1)$$,
    '55000',
    'fail_task: step "each" of run 00000000-0000-7000-8000-000000000001 is a sub-flow step (it runs flow "child"): its tasks are not reported by hand',
    'fail_task refuses a task of a sub-flow step');
SELECT throws_ok(
    $$SELECT pgflow.fail_task('00000000-0000-7000-8000-000000000001', 'each', 0, 'by hand', retry => false)$$,
    '55000', NULL, 'fail_task refuses it with retry => false too');
-- a batch that mixes an ordinary claimed task with a sub-flow task: refused whole
SELECT throws_ok(
    $$SELECT pgflow.complete_tasks(
          ARRAY[(SELECT run_id FROM claimed), '00000000-0000-7000-8000-000000000001']::uuid[],
          ARRAY['prep', 'each'], ARRAY[0, 1], ARRAY['[5]', '"by hand"']::jsonb[],
          ARRAY[(SELECT attempt FROM claimed), 1])$$,
    '55000',
    'complete_tasks: step "each" of run 00000000-0000-7000-8000-000000000001 is a sub-flow step (it runs flow "child"): its tasks are not reported by hand',
    'complete_tasks refuses a batch naming a task of a sub-flow step');
SELECT throws_ok(
    $$SELECT pgflow.fail_tasks(
          ARRAY[(SELECT run_id FROM claimed), '00000000-0000-7000-8000-000000000001']::uuid[],
          ARRAY['prep', 'each'], ARRAY[0, 0], ARRAY['x', 'by hand'])$$,
    '55000',
    'fail_tasks: step "each" of run 00000000-0000-7000-8000-000000000001 is a sub-flow step (it runs flow "child"): its tasks are not reported by hand',
    'fail_tasks refuses a batch naming a task of a sub-flow step');

-- the hint says what to do instead
CREATE FUNCTION pg_temp.hint_of(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_hint text;
BEGIN
    EXECUTE call;
    RETURN NULL;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    GET STACKED DIAGNOSTICS v_hint = PG_EXCEPTION_HINT;
    RETURN v_hint;
END;
$$;
SELECT is(pg_temp.hint_of($$SELECT pgflow.fail_tasks(ARRAY['00000000-0000-7000-8000-000000000001']::uuid[],
                                                     ARRAY['each'], ARRAY[1], ARRAY['x'])$$),
          'its child run reports it; cancel_run the child or the parent instead',
          'the refusal''s hint: the child run reports the task; cancel instead');

SELECT is((SELECT jsonb_agg(t ORDER BY t.run_id, t.step_slug, t.task_index) FROM pgflow.step_tasks AS t),
          (SELECT tasks FROM before), 'the refused reports changed no task');
SELECT is((SELECT jsonb_agg(s ORDER BY s.run_id, s.step_slug) FROM pgflow.step_states AS s),
          (SELECT states FROM before), 'nor any step');
SELECT is((SELECT jsonb_agg(r ORDER BY r.run_id) FROM pgflow.runs AS r),
          (SELECT runs FROM before), 'nor any run (parent or child)');

-- ordinary reports still work, next to sub-flow steps, and a report of a step
-- slug of another flow is no refusal: a task of the child flow named "each"
-- would be an ordinary one
SELECT is(pgflow.complete_tasks(ARRAY[(SELECT run_id FROM claimed)], ARRAY['prep'], ARRAY[0],
                                ARRAY['[7]']::jsonb[], ARRAY[(SELECT attempt FROM claimed)]),
          1, 'complete_tasks of ordinary tasks of a flow with a sub-flow step still completes them');
SELECT is(pgflow.complete_task(gen_random_uuid(), 'each', 0, '1'), false,
          'a report for an unknown run is still a no-op (false), not a refusal');
SELECT is(pgflow.fail_tasks(ARRAY[]::uuid[], ARRAY[]::text[], ARRAY[]::integer[], ARRAY[]::text[]), 0,
          'an empty batch is still a no-op');

-- the children still report: completing their tasks completes the parent
SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, t.input -> 'run', t.attempt)
FROM pgflow.claim_tasks('child', 10, gen_random_uuid()) AS t;
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000001'),
          'completed', 'the sub-flow tasks complete when their child runs do');
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000002'),
          'completed', 'and so do the second run''s');

-- a worker's shape check sees which steps run a sub-flow
SELECT is(pgflow.flow_shape('parent') #> '{steps,1,subflow}', '"child"'::jsonb,
          'flow_shape names the flow a sub-flow step runs');
SELECT is(pgflow.flow_shape('parent') #> '{steps,0,subflow}', 'null'::jsonb,
          'and has subflow null for a task step');

-- a finished sub-flow task is refused too (a hand report is never one of a worker)
SELECT throws_ok(
    $$SELECT pgflow.complete_task('00000000-0000-7000-8000-000000000001', 'each', 0, '"late"')$$,
    '55000', NULL, 'a completed sub-flow task is refused as well');

SELECT * FROM finish();
ROLLBACK;
