BEGIN;
SELECT plan(9);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b');
SELECT pgflow.add_step('f', 'c', ARRAY['a'], required_input_pattern => '{"run": {"x": 1}}');

SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['a', 'b'], required_input_pattern => '{"run": {"x": 1}}')$$,
    '42P17',
    'step "c" of flow "f" already exists with a different definition: dependencies are [a], not [a, b]',
    'different dependencies are refused, naming the difference');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['a'], step_type => 'map', required_input_pattern => '{"run": {"x": 1}}')$$,
    '42P17',
    'step "c" of flow "f" already exists with a different definition: step_type is single, not map',
    'a different step type is refused');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['a'])$$,
    '42P17',
    'step "c" of flow "f" already exists with a different definition: required_input_pattern is {"run": {"x": 1}}, not NULL',
    'a different condition is refused');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['a'], required_input_pattern => '{"run": {"x": 1}}', forbidden_input_pattern => '{"a": 1}')$$,
    '42P17',
    'step "c" of flow "f" already exists with a different definition: forbidden_input_pattern is NULL, not {"a": 1}',
    'a different forbidden pattern is refused');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['a'], required_input_pattern => '{"run": {"x": 1}}', when_unmet => 'fail', when_exhausted => 'skip')$$,
    '42P17',
    'step "c" of flow "f" already exists with a different definition: when_unmet is skip, not fail; when_exhausted is fail, not skip',
    'different modes are refused, all differences named');

-- the hint says what to do
CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v = PG_EXCEPTION_HINT;
    RETURN v;
END $$;
SELECT is(pg_temp.hint_of($$SELECT pgflow.add_step('f', 'c', ARRAY['b'])$$),
    'a definition cannot change structure once created; define the next version: version: 2 in the spec (pgflow-build writes it), or pgflow.create_flow(''f'', version => 2)',
    'the hint says to define the next version');

-- once the flow has runs, no new steps
SELECT pgflow.start_flow('f', '{}');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'd', ARRAY['a'])$$, '55000',
    'cannot add step "d" to flow "f": the flow already has runs',
    'a new step is refused once the flow has runs');
SELECT lives_ok($$SELECT pgflow.add_step('f', 'a', max_attempts => 9)$$,
    'tunables may still change once the flow has runs');
SELECT is((SELECT opt_max_attempts FROM pgflow.steps WHERE step_slug = 'a'), 9,
    'the new tunable is stored');

SELECT * FROM finish();
ROLLBACK;
