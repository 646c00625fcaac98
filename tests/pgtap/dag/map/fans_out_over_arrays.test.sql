BEGIN;
SELECT plan(21);

-- m maps over the flow input, m2 maps over m's output, r reduces m2
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'm', step_type => 'map');
SELECT pgflow.add_step('f', 'm2', ARRAY['m'], step_type => 'map');
SELECT pgflow.add_step('f', 'r', ARRAY['m2']);
-- g: a single step whose array output a map fans out over
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 's');
SELECT pgflow.add_step('g', 'each', ARRAY['s'], step_type => 'map');

CREATE FUNCTION pg_temp.start_all(flow text) RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks(flow,
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll(flow, 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.state(step text) RETURNS text LANGUAGE sql AS $$
    SELECT (ss.status, ss.remaining_deps, ss.initial_tasks, ss.remaining_tasks)::text
    FROM pgflow.step_states AS ss WHERE ss.step_slug = step;
$$;
CREATE FUNCTION pg_temp.done(step text, idx integer, output jsonb) RETURNS boolean LANGUAGE sql AS $$
    SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', step, idx, output);
$$;

SELECT pgflow.start_flow('f', '[10, 20, 30]', run_id => '00000000-0000-0000-0000-000000000001');

SELECT is(pg_temp.state('m'), '(started,0,3,3)',
          'a root map step starts with one task per element of the flow input');
SELECT is(pg_temp.state('m2'), '(created,1,,)',
          'a dependent map step has no task count before it is ready');
SELECT results_eq(
    $$SELECT task_index, status FROM pgflow.step_tasks WHERE step_slug = 'm' ORDER BY task_index$$,
    $$VALUES (0, 'queued'), (1, 'queued'), (2, 'queued')$$,
    'its tasks are queued with task_index = position in the array'
);

CREATE TEMP TABLE first AS SELECT * FROM pg_temp.start_all('f');
SELECT results_eq(
    $$SELECT step_slug, task_index, input FROM first ORDER BY task_index$$,
    $$VALUES ('m', 0, '10'::jsonb), ('m', 1, '20'::jsonb), ('m', 2, '30'::jsonb)$$,
    'each map task gets its element as input'
);

-- out of order
SELECT is(pg_temp.done('m', 2, '"c"'), true, 'a map task completes');
SELECT is(pg_temp.state('m'), '(started,0,3,2)', 'the step counts the remaining tasks');
SELECT pg_temp.done('m', 0, '"a"');
SELECT is(pg_temp.state('m'), '(started,0,3,1)', 'the step waits for its last task');
SELECT is(pg_temp.state('m2'), '(created,1,,)', 'the dependent waits for the whole map');
SELECT is(pg_temp.done('m', 1, '"b"'), true, 'the last map task completes');
SELECT is(
    (SELECT (ss.status, ss.output, ss.remaining_tasks)::text FROM pgflow.step_states AS ss
     WHERE ss.step_slug = 'm'),
    '(completed,"[""a"", ""b"", ""c""]",0)',
    'the map output is the task outputs in task_index order, whatever the completion order'
);

-- map -> map
SELECT is(pg_temp.state('m2'), '(started,0,3,3)',
          'a map over a map starts with one task per element of its output');
CREATE TEMP TABLE second AS SELECT * FROM pg_temp.start_all('f');
SELECT results_eq(
    $$SELECT step_slug, task_index, input FROM second ORDER BY task_index$$,
    $$VALUES ('m2', 0, '"a"'::jsonb), ('m2', 1, '"b"'::jsonb), ('m2', 2, '"c"'::jsonb)$$,
    'each of its tasks gets the element of the source output'
);
SELECT pg_temp.done('m2', 1, '{"v": 2}');
SELECT pg_temp.done('m2', 0, '{"v": 1}');
SELECT pg_temp.done('m2', 2, '{"v": 3}');

-- map -> single
SELECT is(pg_temp.state('r'), '(started,0,1,1)', 'a single step after a map has one task');
SELECT is(
    (SELECT s.input FROM pg_temp.start_all('f') AS s),
    '{"run": [10, 20, 30], "m2": [{"v": 1}, {"v": 2}, {"v": 3}]}'::jsonb,
    'the reducer receives the whole array under the map''s slug'
);
SELECT pg_temp.done('r', 0, '6');
SELECT is(
    (SELECT (r.status, r.output)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '(completed,"{""r"": 6}")',
    'the run completes with the reducer''s output'
);

-- a map over a single step's output
SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pg_temp.start_all('g');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 's', 0, '[{"id": 1}, {"id": 2}]');
SELECT is(
    (SELECT (ss.status, ss.initial_tasks, ss.remaining_tasks, ss.started_at = now())::text
     FROM pgflow.step_states AS ss WHERE ss.step_slug = 'each'),
    '(started,2,2,t)',
    'a map over a dependency''s array output starts with one task per element'
);
SELECT results_eq(
    $$SELECT task_index, input FROM pg_temp.start_all('g') ORDER BY task_index$$,
    $$VALUES (0, '{"id": 1}'::jsonb), (1, '{"id": 2}'::jsonb)$$,
    'its tasks get the elements'
);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'each', 1, 'null');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'each', 0, '0');
SELECT is(
    (SELECT ss.output FROM pgflow.step_states AS ss WHERE ss.step_slug = 'each'),
    '[0, null]'::jsonb,
    'null and falsy task outputs keep their place in the map output'
);
SELECT is(
    (SELECT r.output FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
    '{"each": [0, null]}'::jsonb,
    'a leaf map contributes its array to the run output'
);
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'each', 0, '1'), false,
          'a duplicate completion of a map task returns false');
SELECT is(
    (SELECT ss.output FROM pgflow.step_states AS ss WHERE ss.step_slug = 'each'),
    '[0, null]'::jsonb,
    'and does not change the map output'
);

SELECT * FROM finish();
ROLLBACK;
