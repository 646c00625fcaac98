BEGIN;
SELECT plan(14);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'a');
SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000009');

SELECT throws_ok($$SELECT pgflow.start_flows('x', ARRAY['{}']::jsonb[])$$, '42704',
    'flow "x" does not exist', 'an unknown flow is refused');
SELECT throws_ok($$SELECT pgflow.start_flows('f', ARRAY['{}']::jsonb[], version => 2)$$, '42704',
    'flow "f" has no version 2', 'an unknown version is refused');
SELECT throws_ok($$SELECT pgflow.start_flows(NULL, ARRAY['{}']::jsonb[])$$, '22004',
    'flow slug must not be NULL', 'a NULL flow slug is refused');
SELECT throws_ok($$SELECT pgflow.start_flows('f', NULL)$$, '22004',
    'inputs must not be NULL', 'NULL inputs are refused');
SELECT throws_ok($$SELECT pgflow.start_flows('f', ARRAY['{}', NULL]::jsonb[])$$, '22004',
    'inputs[2] is NULL', 'a NULL input is refused, by its position');
SELECT throws_ok($$SELECT pgflow.start_flows('f', ARRAY['{}']::jsonb[], priority => NULL)$$, '22004',
    'priority must not be NULL', 'a NULL priority is refused');
SELECT throws_ok(
    $$SELECT pgflow.start_flows('f', ARRAY['{}', '{}']::jsonb[],
                                ARRAY['00000000-0000-0000-0000-000000000001']::uuid[])$$,
    '22023', 'run_ids has 1 elements, inputs has 2', 'run_ids of another length are refused');
SELECT throws_ok($$SELECT pgflow.start_flows('f', ARRAY[['{}'], ['{}']]::jsonb[])$$, '22023',
    'inputs and run_ids must be one-dimensional arrays', 'a two-dimensional array is refused');
SELECT throws_ok($$SELECT pgflow.start_flows('f', ARRAY['{}']::jsonb[], trace_context => 'nope')$$,
    '22023', NULL, 'a trace context that is not a traceparent is refused');

-- one id of another flow's run refuses the whole batch
SELECT throws_ok(
    $$SELECT pgflow.start_flows('f', ARRAY['{}', '{}']::jsonb[],
                                ARRAY['00000000-0000-0000-0000-000000000001',
                                      '00000000-0000-0000-0000-000000000009']::uuid[])$$,
    '23505',
    'run 00000000-0000-0000-0000-000000000009 already exists for flow "g", not "f"',
    'a run id already used by another flow is refused'
);
SELECT is((SELECT count(*)::integer FROM pgflow.runs), 1,
          'refused calls start no run (not even the batch''s other runs)');
SELECT is((SELECT count(*)::integer FROM pgflow.step_tasks), 1, 'and queue no task');

SELECT is((SELECT count(*)::integer FROM pgflow.start_flows('f', '{}'::jsonb[])), 0,
          'an empty batch starts nothing');
SELECT is((SELECT count(*)::integer FROM pgflow.runs), 1, 'and creates nothing');

SELECT * FROM finish();
ROLLBACK;
