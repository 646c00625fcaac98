BEGIN;
SELECT plan(10);

--      a
--     / \
--    b   c      e (a lone root)
--     \ /
--      d
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', ARRAY['a']);
SELECT pgflow.add_step('f', 'c', ARRAY['a']);
SELECT pgflow.add_step('f', 'd', ARRAY['b', 'c']);
SELECT pgflow.add_step('f', 'e');

CREATE FUNCTION pg_temp.start_all() RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks('f',
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.state(step text) RETURNS text LANGUAGE sql AS $$
    SELECT (ss.status, ss.remaining_deps)::text
    FROM pgflow.step_states AS ss WHERE ss.step_slug = step;
$$;

SELECT pgflow.start_flow('f', '1', run_id => '00000000-0000-0000-0000-000000000001');
SELECT is(pg_temp.state('d'), '(created,2)', 'the join waits on two dependencies');

SELECT pg_temp.start_all();
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"A"');
SELECT results_eq(
    $$SELECT step_slug, status FROM pgflow.step_states WHERE step_slug IN ('b', 'c') ORDER BY 1$$,
    $$VALUES ('b', 'started'), ('c', 'started')$$,
    'both branches start when their shared dependency completes'
);
SELECT is(pg_temp.state('d'), '(created,2)', 'the join still waits on both branches');

SELECT pg_temp.start_all();
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'c', 0, '"C"');
SELECT is(pg_temp.state('d'), '(created,1)', 'after one branch the join waits on the other');
SELECT is((SELECT count(*) FROM pgflow.step_tasks WHERE step_slug = 'd'), 0::bigint,
          'and has no task yet');

SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '"B"');
SELECT is(pg_temp.state('d'), '(started,0)', 'after both branches the join starts');
SELECT is(
    (SELECT s.input FROM pg_temp.start_all() AS s),
    '{"run": 1, "b": "B", "c": "C"}'::jsonb,
    'the join gets both branches'' outputs'
);
SELECT is((SELECT remaining_steps FROM pgflow.runs), 2, 'the join and the lone root remain');

SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'd', 0, '"D"');
SELECT is((SELECT status FROM pgflow.runs), 'started', 'the run waits for its last step');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'e', 0, '"E"');
SELECT is(
    (SELECT (r.status, r.output)::text FROM pgflow.runs AS r),
    '(completed,"{""d"": ""D"", ""e"": ""E""}")',
    'the run output is {leaf: output} over every leaf step'
);

SELECT * FROM finish();
ROLLBACK;
