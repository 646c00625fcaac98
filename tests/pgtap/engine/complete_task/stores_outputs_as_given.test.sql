BEGIN;
SELECT plan(8);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'zero');
SELECT pgflow.add_step('f', 'no');
SELECT pgflow.add_step('f', 'empty_string');
SELECT pgflow.add_step('f', 'empty_array');
SELECT pgflow.add_step('f', 'json_null');
SELECT pgflow.add_step('f', 'sql_null');

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_tasks('f', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('f', 30, 100)), gen_random_uuid());

SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'zero', 0, '0');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'no', 0, 'false');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'empty_string', 0, '""');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'empty_array', 0, '[]');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'json_null', 0, 'null');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'sql_null', 0, NULL), true,
          'a SQL NULL output completes the task');

SELECT results_eq(
    $$SELECT step_slug, output FROM pgflow.step_tasks ORDER BY step_slug$$,
    $$VALUES ('empty_array', '[]'::jsonb), ('empty_string', '""'), ('json_null', 'null'),
             ('no', 'false'), ('sql_null', 'null'), ('zero', '0')$$,
    'falsy task outputs are stored as themselves'
);
SELECT is((SELECT output FROM pgflow.step_tasks WHERE step_slug = 'sql_null'), 'null'::jsonb,
          'a SQL NULL output is stored as JSON null');
SELECT is((SELECT count(*) FROM pgflow.step_states WHERE output IS NULL), 0::bigint,
          'no step output is SQL NULL');
SELECT results_eq(
    $$SELECT step_slug, output FROM pgflow.step_states ORDER BY step_slug$$,
    $$VALUES ('empty_array', '[]'::jsonb), ('empty_string', '""'), ('json_null', 'null'),
             ('no', 'false'), ('sql_null', 'null'), ('zero', '0')$$,
    'step outputs are the task outputs'
);
SELECT is((SELECT count(*) FROM pgflow.step_states WHERE status = 'completed'), 6::bigint,
          'every step completed, whatever its output');
SELECT is((SELECT status FROM pgflow.runs), 'completed', 'the run completed');
SELECT is(
    (SELECT output FROM pgflow.runs),
    '{"zero": 0, "no": false, "empty_string": "", "empty_array": [], "json_null": null, "sql_null": null}'::jsonb,
    'the run output keeps every falsy leaf output'
);

SELECT * FROM finish();
ROLLBACK;
