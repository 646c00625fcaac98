BEGIN;
SELECT plan(14);

-- a -> b -> c
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', ARRAY['a']);
SELECT pgflow.add_step('f', 'c', ARRAY['b']);

CREATE FUNCTION pg_temp.start_all() RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks('f',
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.state(step text) RETURNS text LANGUAGE sql AS $$
    SELECT (ss.status, ss.remaining_deps, ss.initial_tasks, ss.remaining_tasks)::text
    FROM pgflow.step_states AS ss WHERE ss.step_slug = step;
$$;

SELECT pgflow.start_flow('f', '{"n": 0}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_all();

SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '{"n": 1}'), true,
          'complete_task returns true when it records an output');
SELECT is(
    (SELECT (t.status, t.output, t.completed_at = now())::text FROM pgflow.step_tasks AS t
     WHERE t.step_slug = 'a'),
    '(completed,"{""n"": 1}",t)',
    'the task is completed now with its output'
);
SELECT is(
    (SELECT (ss.status, ss.output, ss.remaining_tasks, ss.completed_at = now())::text
     FROM pgflow.step_states AS ss WHERE ss.step_slug = 'a'),
    '(completed,"{""n"": 1}",0,t)',
    'its step is completed with the task''s output'
);
SELECT is(pg_temp.state('b'), '(started,0,1,1)', 'the dependent step starts');
SELECT is(
    (SELECT (t.status, t.vt = now())::text FROM pgflow.step_tasks AS t WHERE t.step_slug = 'b'),
    '(queued,t)',
    'with one task claimable now'
);
SELECT is(pg_temp.state('c'), '(created,1,,)', 'the step after it still waits');
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output)::text FROM pgflow.runs AS r),
    '(started,2,)',
    'the run counts one step fewer and has no output yet'
);

SELECT pg_temp.start_all();
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '{"n": 2}');
SELECT is(pg_temp.state('c'), '(started,0,1,1)', 'the last step starts after the middle one');
SELECT is((SELECT remaining_steps FROM pgflow.runs), 1, 'one step remains');

SELECT pg_temp.start_all();
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'c', 0, '{"n": 3}'), true,
          'the last task completes');
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.completed_at = now(), r.failed_at)::text FROM pgflow.runs AS r),
    '(completed,0,t,)',
    'the run is completed now'
);
SELECT is(
    (SELECT r.output FROM pgflow.runs AS r),
    '{"c": {"n": 3}}'::jsonb,
    'the run output holds only the leaf step''s output'
);
SELECT results_eq(
    $$SELECT step_slug, status, output FROM pgflow.step_states ORDER BY step_slug$$,
    $$VALUES ('a', 'completed', '{"n": 1}'::jsonb), ('b', 'completed', '{"n": 2}'::jsonb),
             ('c', 'completed', '{"n": 3}'::jsonb)$$,
    'every step is completed with its output'
);
SELECT is_empty($$SELECT * FROM pg_temp.start_all()$$, 'nothing is left to claim');

SELECT * FROM finish();
ROLLBACK;
