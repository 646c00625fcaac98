BEGIN;
SELECT plan(16);

-- a: root, runs only for kind "a"; b: root; c after a and b; d after b unless
-- b flags it; e after b only if b flags it
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a', required_input_pattern => '{"run": {"kind": "a"}}');
SELECT pgflow.add_step('f', 'b');
SELECT pgflow.add_step('f', 'c', ARRAY['a', 'b']);
SELECT pgflow.add_step('f', 'd', ARRAY['b'], forbidden_input_pattern => '{"b": {"flag": true}}');
SELECT pgflow.add_step('f', 'e', ARRAY['b'], required_input_pattern => '{"b": {"flag": true}}');

CREATE FUNCTION pg_temp.start_all() RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks('f',
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.state(run integer, step text) RETURNS text LANGUAGE sql AS $$
    SELECT (ss.status, ss.skip_reason, ss.remaining_deps)::text
    FROM pgflow.step_states AS ss
    WHERE ss.run_id = ('00000000-0000-0000-0000-00000000000' || run)::uuid AND ss.step_slug = step;
$$;

-- run 1: kind "x": a's condition is unmet
SELECT pgflow.start_flow('f', '{"kind": "x"}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT is(pg_temp.state(1, 'a'), '(skipped,condition_unmet,0)',
          'a root whose required pattern is not contained in {"run": input} is skipped (condition_unmet)');
SELECT is(
    (SELECT (ss.skipped_at = now(), ss.started_at, ss.initial_tasks)::text FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug = 'a'),
    '(t,,)',
    'it is skipped now without being started'
);
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks
     WHERE run_id = '00000000-0000-0000-0000-000000000001' AND step_slug = 'a'),
    0::bigint,
    'a skipped step gets no task'
);
SELECT is(pg_temp.state(1, 'c'), '(created,,1)',
          'its dependent counts it as done (when_unmet = skip) and waits on the rest');
SELECT is(
    (SELECT remaining_steps FROM pgflow.runs WHERE run_id = '00000000-0000-0000-0000-000000000001'),
    4, 'the skipped step no longer counts as remaining'
);

SELECT pg_temp.start_all();
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '{"flag": true}');
SELECT is(pg_temp.state(1, 'd'), '(skipped,condition_unmet,0)',
          'a dependent whose forbidden pattern is contained in its input is skipped');
SELECT is(pg_temp.state(1, 'e'), '(started,,0)',
          'a dependent whose required pattern matches a dependency output starts');
SELECT is(pg_temp.state(1, 'c'), '(started,,0)', 'the dependent of the skipped step starts');
SELECT results_eq(
    $$SELECT step_slug, input FROM pg_temp.start_all() ORDER BY step_slug$$,
    $$VALUES ('c', '{"run": {"kind": "x"}, "b": {"flag": true}}'::jsonb),
             ('e', '{"run": {"kind": "x"}, "b": {"flag": true}}'::jsonb)$$,
    'the skipped dependency is absent from the input'
);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'c', 0, '"C"');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'e', 0, '"E"');
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '(completed,0,"{""c"": ""C"", ""e"": ""E""}")',
    'the run completes; the skipped leaf d is absent from its output'
);

-- run 2: kind "a" and no flag: the opposite choices
SELECT pgflow.start_flow('f', '{"kind": "a"}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT is(pg_temp.state(2, 'a'), '(started,,0)', 'a root whose required pattern is met starts');
SELECT is(
    (SELECT s.input FROM pg_temp.start_all() AS s WHERE s.step_slug = 'a'),
    '{"run": {"kind": "a"}}'::jsonb,
    'its input is the object its condition was checked against'
);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'b', 0, '{"flag": false}');
SELECT is(pg_temp.state(2, 'd'), '(started,,0)', 'a forbidden pattern that is not contained lets the step start');
SELECT is(pg_temp.state(2, 'e'), '(skipped,condition_unmet,0)', 'a required pattern that is not contained skips it');
SELECT is(pg_temp.state(2, 'c'), '(created,,1)', 'the fan-in still waits for the started root');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, '"A"');
SELECT is(
    (SELECT s.input FROM pg_temp.start_all() AS s WHERE s.step_slug = 'c'),
    '{"run": {"kind": "a"}, "a": "A", "b": {"flag": false}}'::jsonb,
    'with both dependencies completed the fan-in gets both'
);

SELECT * FROM finish();
ROLLBACK;
