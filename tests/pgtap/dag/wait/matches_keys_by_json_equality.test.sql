BEGIN;
SELECT plan(11);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'e', wait_key => 'run.k');
-- a key from a dependency's output, deep in it
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'a');
SELECT pgflow.add_step('g', 'w', ARRAY['a'], step_type => 'wait', wait_event => 'e', wait_key => 'a.ids.0');

CREATE FUNCTION pg_temp.run(k jsonb) RETURNS uuid LANGUAGE sql AS $$
    SELECT (pgflow.start_flow('f', jsonb_build_object('k', k))).run_id;
$$;
CREATE FUNCTION pg_temp.status(run uuid) RETURNS text LANGUAGE sql AS $$
    SELECT ss.status FROM pgflow.step_states AS ss WHERE ss.run_id = run AND ss.step_slug = 'w';
$$;

SELECT pg_temp.run('42') AS n42 \gset
SELECT pg_temp.run('"42"') AS s42 \gset
SELECT pg_temp.run('true') AS t \gset
SELECT is(pgflow.emit_event('e', '42.0', '{}'), 1, 'numbers compare as numbers: 42.0 matches 42');
SELECT is(pg_temp.status(:'s42'), 'started', 'the string "42" is another key than the number 42');
SELECT is(pgflow.emit_event('e', '"42"', '{}'), 1, 'a string key matches the same string');
SELECT is(pgflow.emit_event('e', '"true"', '{}'), 0, 'the string "true" is not the boolean true');
SELECT is(pgflow.emit_event('e', 'true', '{}'), 1, 'booleans match booleans');

SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_tasks('g', ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('g', 30, 10) AS m),
                          '00000000-0000-0000-0000-0000000000a1');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '{"ids": ["x7", "y"]}');
SELECT is((SELECT w.event_key FROM pgflow.waits AS w WHERE w.run_id = '00000000-0000-0000-0000-000000000001'),
          '"x7"'::jsonb, 'a key path reaches into a dependency''s output (array elements by index)');

-- a missing or non-scalar key fails the run, naming the step and the path
SELECT pg_temp.run('{"a": 1}') AS obj \gset
SELECT is((SELECT r.error_message FROM pgflow.runs AS r WHERE r.run_id = :'obj'),
          'step "w" failed: wait step "w": the key run.k is {"a": 1}, not a string, number or boolean',
          'an object key fails the run with what it got');
SELECT (pgflow.start_flow('f', '{"other": 1}')).run_id AS missing \gset
SELECT is((SELECT r.error_message FROM pgflow.runs AS r WHERE r.run_id = :'missing'),
          'step "w" failed: wait step "w": the key run.k is missing, not a string, number or boolean',
          'a missing key fails the run');

SELECT throws_ok($$SELECT pgflow.emit_event('e', '[1]', '{}')$$, '22023',
                 'an event key must be a JSON string, number or boolean, got [1]', 'emit refuses array keys');
SELECT throws_ok($$SELECT pgflow.emit_event('e', NULL, '{}')$$, '22023',
                 'an event key must be a JSON string, number or boolean, got NULL', 'and NULL keys');
SELECT throws_ok($$SELECT pgflow.emit_event('no spaces', '1', '{}')$$, '22023',
                 'invalid event name "no spaces"', 'and invalid event names');

SELECT * FROM finish();
ROLLBACK;
