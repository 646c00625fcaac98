BEGIN;
SELECT plan(6);

-- a, b roots; c fans in from both; d after c only
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b');
SELECT pgflow.add_step('f', 'c', ARRAY['a', 'b']);
SELECT pgflow.add_step('f', 'd', ARRAY['c']);

CREATE FUNCTION pg_temp.start_all() RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks('f',
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '{"k": "v"}', run_id => '00000000-0000-0000-0000-000000000001');

CREATE TEMP TABLE roots AS SELECT * FROM pg_temp.start_all();
SELECT results_eq(
    $$SELECT step_slug, input FROM roots ORDER BY step_slug$$,
    $$VALUES ('a', '{"run": {"k": "v"}}'::jsonb), ('b', '{"run": {"k": "v"}}'::jsonb)$$,
    'a root step gets {"run": <flow input>}'
);
SELECT is((SELECT task_index FROM roots WHERE step_slug = 'a'), 0, 'a single step''s task has index 0');

SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '{"x": 1}');
SELECT is_empty($$SELECT * FROM pg_temp.start_all()$$,
    'a fan-in step is not queued before all its dependencies are done');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '[1, 2]');

SELECT is(
    (SELECT s.input FROM pg_temp.start_all() AS s),
    '{"run": {"k": "v"}, "a": {"x": 1}, "b": [1, 2]}'::jsonb,
    'a fan-in step gets the flow input and each dependency''s output under its slug'
);

SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'c', 0, '"done"');
SELECT is(
    (SELECT s.input FROM pg_temp.start_all() AS s),
    '{"run": {"k": "v"}, "c": "done"}'::jsonb,
    'a step gets the outputs of its direct dependencies only'
);

-- JSON null output is passed on as a key with null
SELECT pgflow.create_flow('n');
SELECT pgflow.add_step('n', 'a');
SELECT pgflow.add_step('n', 'b', ARRAY['a']);
SELECT pgflow.start_flow('n', '"in"', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_tasks('n', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('n', 30, 10)), gen_random_uuid());
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, NULL);
SELECT is(
    (SELECT s.input FROM pgflow.start_tasks('n', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('n', 30, 10)),
                                            gen_random_uuid()) AS s),
    '{"run": "in", "a": null}'::jsonb,
    'a dependency that returned null is present with null'
);

SELECT * FROM finish();
ROLLBACK;
