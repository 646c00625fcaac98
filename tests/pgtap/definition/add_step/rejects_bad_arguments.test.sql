BEGIN;
SELECT plan(22);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b');

SELECT throws_ok($$SELECT pgflow.add_step('nope', 'a')$$, '42704',
    'flow "nope" does not exist', 'an unknown flow is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', NULL)$$, '22004',
    'step slug must not be NULL', 'a NULL step slug is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'run')$$, '22023',
    'invalid step slug "run": "run" is reserved (it names the flow input in step inputs)',
    'the reserved step slug run is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'x-y')$$, '22023',
    'invalid step slug "x-y": character "-" is not allowed', 'a dash is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['zz'])$$, '42704',
    'step "c" of flow "f" depends on unknown step "zz"', 'an unknown dependency is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['c'])$$, '22023',
    'step "c" cannot depend on itself', 'a self-dependency is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['a', 'a'])$$, '22023',
    'step "c" lists dependency "a" more than once', 'a duplicate dependency is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['a', NULL])$$, '22004',
    'deps_slugs of step "c" contains NULL', 'a NULL dependency is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', NULL)$$, '22004',
    'deps_slugs must not be NULL', 'NULL deps_slugs is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', ARRAY['bad slug'])$$, '22023',
    'invalid dependency slug "bad slug": character " " is not allowed',
    'an invalid dependency slug is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'm', ARRAY['a', 'b'], step_type => 'map')$$, '22023',
    'map step "m" has 2 dependencies (a, b); a map step takes its array from at most one',
    'a map step with two dependencies is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', step_type => 'loop')$$, '22023',
    'invalid step_type "loop"', 'an unknown step type is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', when_unmet => 'ignore')$$, '22023',
    'invalid when_unmet "ignore"', 'an unknown when_unmet mode is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', when_exhausted => 'retry')$$, '22023',
    'invalid when_exhausted "retry"', 'an unknown when_exhausted mode is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', required_input_pattern => '[1]')$$, '22023',
    'required_input_pattern of step "c" must be a JSON object, got array',
    'a non-object required pattern is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', forbidden_input_pattern => '"x"')$$, '22023',
    'forbidden_input_pattern of step "c" must be a JSON object, got string',
    'a non-object forbidden pattern is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', max_attempts => 0)$$, '22023',
    'max_attempts must be >= 1, got 0', 'max_attempts below 1 is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', base_delay => 0)$$, '22023',
    'base_delay must be >= 1, got 0', 'base_delay below 1 is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', timeout => 2)$$, '22023',
    'timeout must be >= 3, got 2', 'timeout below 3 is rejected');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'c', start_delay => -1)$$, '22023',
    'start_delay must be >= 0, got -1', 'a negative start_delay is rejected');

SELECT is((SELECT count(*) FROM pgflow.steps WHERE flow_slug = 'f'), 2::bigint,
          'no rejected call leaves a step');
SELECT is((SELECT count(*) FROM pgflow.deps WHERE flow_slug = 'f'), 0::bigint,
          'no rejected call leaves an edge');

SELECT * FROM finish();
ROLLBACK;
