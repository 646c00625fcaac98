BEGIN;
SELECT plan(12);

-- deep: three maps over the flow input, then a reducer
SELECT pgflow.create_flow('deep');
SELECT pgflow.add_step('deep', 'm1', step_type => 'map');
SELECT pgflow.add_step('deep', 'm2', ARRAY['m1'], step_type => 'map');
SELECT pgflow.add_step('deep', 'm3', ARRAY['m2'], step_type => 'map');
SELECT pgflow.add_step('deep', 'r', ARRAY['m3']);
-- mid: a single step, then two maps
SELECT pgflow.create_flow('mid');
SELECT pgflow.add_step('mid', 'a');
SELECT pgflow.add_step('mid', 'm1', ARRAY['a'], step_type => 'map');
SELECT pgflow.add_step('mid', 'm2', ARRAY['m1'], step_type => 'map');
-- only: one root map
SELECT pgflow.create_flow('only');
SELECT pgflow.add_step('only', 'm', step_type => 'map');

-- deep, started with []
SELECT pgflow.start_flow('deep', '[]', run_id => '00000000-0000-0000-0000-000000000001');
SELECT results_eq(
    $$SELECT step_slug, status, output, initial_tasks, remaining_tasks, remaining_deps
      FROM pgflow.step_states WHERE run_id = '00000000-0000-0000-0000-000000000001' AND step_slug LIKE 'm%'
      ORDER BY step_slug$$,
    $$VALUES ('m1', 'completed', '[]'::jsonb, 0, 0, 0), ('m2', 'completed', '[]'::jsonb, 0, 0, 0),
             ('m3', 'completed', '[]'::jsonb, 0, 0, 0)$$,
    'an empty root map completes at once with [] and the maps fed by it cascade, through depth'
);
SELECT ok(
    (SELECT bool_and(ss.started_at = now() AND ss.completed_at = now()) FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug LIKE 'm%'),
    'the empty maps start and complete in the same transaction'
);
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks WHERE run_id = '00000000-0000-0000-0000-000000000001'
                                              AND step_slug LIKE 'm%'),
    0::bigint,
    'empty maps get no task'
);
SELECT is(
    (SELECT (ss.status, ss.remaining_deps, ss.initial_tasks)::text FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug = 'r'),
    '(started,0,1)',
    'the reducer after the cascade starts'
);
SELECT is(
    (SELECT (r.status, r.remaining_steps)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '(started,1)',
    'only the reducer remains'
);
SELECT is(
    (SELECT s.input FROM pgflow.start_tasks('deep',
        ARRAY(SELECT msg_id FROM pgflow.read_with_poll('deep', 30, 10)), gen_random_uuid()) AS s),
    '{"run": [], "m3": []}'::jsonb,
    'the reducer receives the empty array'
);

-- mid: the empty array comes from a step's output
SELECT pgflow.start_flow('mid', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_tasks('mid', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('mid', 30, 10)), gen_random_uuid());
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, '[]'), true,
          'a step outputs an empty array');
SELECT results_eq(
    $$SELECT step_slug, status, output, initial_tasks FROM pgflow.step_states
      WHERE run_id = '00000000-0000-0000-0000-000000000002' ORDER BY step_slug$$,
    $$VALUES ('a', 'completed', '[]'::jsonb, 1), ('m1', 'completed', '[]'::jsonb, 0),
             ('m2', 'completed', '[]'::jsonb, 0)$$,
    'the maps fed by it complete with [] in the same call'
);
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output, r.completed_at = now())::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
    '(completed,0,"{""m2"": []}",t)',
    'and the run completes in that call with the leaf map''s []'
);

-- only: a run that is done at start
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output)::text
     FROM pgflow.start_flow('only', '[]', run_id => '00000000-0000-0000-0000-000000000003') AS r),
    '(completed,0,"{""m"": []}")',
    'a run whose only step is an empty map completes in start_flow'
);
SELECT is(
    (SELECT (ss.status, ss.initial_tasks, ss.remaining_tasks)::text FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000003'),
    '(completed,0,0)',
    'its map step is completed with zero tasks'
);
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('only', 30, 10)$$, 'there is nothing to claim');

SELECT * FROM finish();
ROLLBACK;
