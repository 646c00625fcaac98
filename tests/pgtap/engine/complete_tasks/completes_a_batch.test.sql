BEGIN;
SELECT plan(11);

SELECT pgflow.create_flow('chain');
SELECT pgflow.add_step('chain', 'a');
SELECT pgflow.add_step('chain', 'b', ARRAY['a']);
SELECT pgflow.create_flow('fan');
SELECT pgflow.add_step('fan', 'each', step_type => 'map');
SELECT pgflow.add_step('fan', 'total', ARRAY['each']);

SELECT pgflow.start_flow('chain', '{"n": 1}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('chain', '{"n": 2}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_flow('fan', '[1, 2, 3, 4]', run_id => '00000000-0000-0000-0000-000000000003');
SELECT count(*) FROM pgflow.claim_tasks('chain', 10, gen_random_uuid());
SELECT count(*) FROM pgflow.claim_tasks('fan', 10, gen_random_uuid());

SELECT is(
    pgflow.complete_tasks(
        ARRAY['00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001',
              '00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000003',
              '00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000003',
              '00000000-0000-0000-0000-000000000003']::uuid[],
        ARRAY['a', 'a', 'each', 'each', 'each', 'each', 'each'],
        ARRAY[0, 0, 3, 1, 0, 2, 2],
        ARRAY['"two"', '"one"', '40', '20', '10', '30', '99']::jsonb[]),
    6,
    'complete_tasks completes every started task once and counts them (a duplicate counts once)'
);
SELECT results_eq(
    $$SELECT run_id::text, step_slug, status, output FROM pgflow.step_states
      WHERE status = 'completed' ORDER BY run_id, step_slug$$,
    $$VALUES ('00000000-0000-0000-0000-000000000001', 'a', 'completed', '"one"'::jsonb),
             ('00000000-0000-0000-0000-000000000002', 'a', 'completed', '"two"'::jsonb),
             ('00000000-0000-0000-0000-000000000003', 'each', 'completed', '[10, 20, 30, 40]'::jsonb)$$,
    'each step completes with its output; the map''s in task_index order whatever the batch order'
);
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks WHERE step_slug IN ('b', 'total') AND status = 'queued'),
    3::bigint,
    'each dependent is queued once'
);
SELECT is(
    (SELECT input FROM pgflow.claim_tasks('fan', 10, gen_random_uuid())),
    '{"run": [1, 2, 3, 4], "each": [10, 20, 30, 40]}'::jsonb,
    'the reducer gets the whole array'
);
SELECT is(
    (SELECT string_agg(remaining_steps::text, ',' ORDER BY run_id) FROM pgflow.runs),
    '1,1,1',
    'remaining_steps drops once per finished step'
);

SELECT is(
    pgflow.complete_tasks(ARRAY['00000000-0000-0000-0000-000000000001']::uuid[], ARRAY['a'],
                          ARRAY[0], ARRAY['"again"']::jsonb[]),
    0, 'a late completion counts nothing'
);
SELECT is(
    (SELECT output FROM pgflow.step_tasks
     WHERE run_id = '00000000-0000-0000-0000-000000000001' AND step_slug = 'a'),
    '"one"'::jsonb, 'and changes nothing'
);
SELECT is(pgflow.complete_tasks('{}', '{}', '{}', '{}'), 0, 'an empty batch is a no-op');
SELECT throws_ok(
    $$SELECT pgflow.complete_tasks(ARRAY[gen_random_uuid()], ARRAY['a', 'b'], ARRAY[0], ARRAY['1'::jsonb])$$,
    '22023',
    'run_ids, step_slugs, task_indexes, outputs and attempts must have the same length (got 1, 2, 1, 1, NULL)',
    'arrays of different lengths are rejected');
SELECT throws_ok($$SELECT pgflow.complete_tasks(NULL, '{}', '{}', '{}')$$, '22004',
    'run_ids, step_slugs, task_indexes and outputs must not be NULL', 'a NULL array is rejected');
SELECT is(
    pgflow.complete_tasks(ARRAY['00000000-0000-0000-0000-000000000003']::uuid[], ARRAY['total'],
                          ARRAY[0], ARRAY['100']::jsonb[]),
    1, 'a single-task batch completes the run''s last step'
);

SELECT * FROM finish();
ROLLBACK;
