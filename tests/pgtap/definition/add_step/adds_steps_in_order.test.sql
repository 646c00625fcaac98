BEGIN;
SELECT plan(14);

SELECT pgflow.create_flow('f', max_attempts => 4);

SELECT is(
    (SELECT (s.step_slug, s.step_type, s.step_index, s.deps_count, s.when_unmet, s.when_exhausted)::text
     FROM pgflow.add_step('f', 'fetch') AS s),
    '(fetch,single,0,0,skip,fail)',
    'add_step creates a root step with the defaults'
);
SELECT is(
    (SELECT (s.opt_max_attempts, s.opt_base_delay, s.opt_timeout, s.opt_start_delay)::text
     FROM pgflow.steps AS s WHERE s.step_slug = 'fetch'),
    '(,,,)',
    'unset step options are NULL: they inherit the flow''s'
);
SELECT is(
    (SELECT (s.step_index, s.deps_count)::text
     FROM pgflow.add_step('f', 'parse', ARRAY['fetch'], max_attempts => 2, base_delay => 3,
                          timeout => 10, start_delay => 0) AS s),
    '(1,1)',
    'a dependent step gets the next step_index and its dependency count'
);
SELECT is(
    (SELECT (s.opt_max_attempts, s.opt_base_delay, s.opt_timeout, s.opt_start_delay)::text
     FROM pgflow.steps AS s WHERE s.step_slug = 'parse'),
    '(2,3,10,0)',
    'step options are stored'
);
SELECT pgflow.add_step('f', 'other');
SELECT is(
    (SELECT s.deps_count FROM pgflow.add_step('f', 'join', ARRAY['parse', 'other']) AS s),
    2, 'a step may depend on several steps'
);
SELECT results_eq(
    $$SELECT dep_slug FROM pgflow.deps WHERE flow_slug = 'f' AND step_slug = 'join' ORDER BY 1$$,
    ARRAY['other', 'parse'],
    'its dependency edges are stored'
);
SELECT is(
    (SELECT (s.step_type, s.deps_count)::text FROM pgflow.add_step('f', 'each', ARRAY['join'],
                                                                  step_type => 'map') AS s),
    '(map,1)', 'a map step may have one dependency'
);
SELECT is(
    (SELECT s.step_type FROM pgflow.add_step('f', 'rootmap', step_type => 'map') AS s),
    'map', 'a map step may have no dependency (it maps over the flow input)'
);
SELECT is(
    (SELECT (s.required_input_pattern, s.forbidden_input_pattern, s.when_unmet, s.when_exhausted)::text
     FROM pgflow.add_step('f', 'cond', ARRAY['fetch'],
                          required_input_pattern => '{"run": {"kind": "a"}}',
                          forbidden_input_pattern => '{"fetch": {"skip": true}}',
                          when_unmet => 'skip-cascade', when_exhausted => 'skip') AS s),
    '("{""run"": {""kind"": ""a""}}","{""fetch"": {""skip"": true}}",skip-cascade,skip)',
    'conditions and modes are stored'
);

-- idempotency
SELECT is(
    (SELECT xmin::text FROM pgflow.steps WHERE step_slug = 'parse'),
    (SELECT st.xmin::text
     FROM pgflow.add_step('f', 'parse', ARRAY['fetch'], max_attempts => 2, base_delay => 3,
                          timeout => 10, start_delay => 0) AS s
     JOIN pgflow.steps AS st ON st.flow_slug = s.flow_slug AND st.step_slug = s.step_slug),
    'the same add_step call again writes nothing'
);
SELECT is(
    (SELECT s.step_index FROM pgflow.add_step('f', 'join', ARRAY['other', 'parse']) AS s), 3,
    'the order of deps_slugs does not matter and the step keeps its index'
);
SELECT is(
    (SELECT (s.opt_max_attempts, s.opt_timeout)::text
     FROM pgflow.add_step('f', 'parse', ARRAY['fetch'], max_attempts => 7) AS s),
    '(7,)',
    'a re-run with other tunables updates them in place (omitted ones reset to inherit)'
);
SELECT is((SELECT count(*) FROM pgflow.steps WHERE flow_slug = 'f'), 7::bigint,
          're-runs add no rows');
SELECT is((SELECT count(*) FROM pgflow.deps WHERE flow_slug = 'f'), 5::bigint,
          're-runs add no edges');

SELECT * FROM finish();
ROLLBACK;
