BEGIN;
SELECT plan(16);

-- sc: a is skipped with everything downstream of it unless go; x is unrelated;
--     y joins a and x; m maps over b
SELECT pgflow.create_flow('sc');
SELECT pgflow.add_step('sc', 'a', required_input_pattern => '{"run": {"go": true}}',
                       when_unmet => 'skip-cascade');
SELECT pgflow.add_step('sc', 'b', ARRAY['a']);
SELECT pgflow.add_step('sc', 'c', ARRAY['b']);
SELECT pgflow.add_step('sc', 'm', ARRAY['b'], step_type => 'map');
SELECT pgflow.add_step('sc', 'x');
SELECT pgflow.add_step('sc', 'y', ARRAY['a', 'x']);
-- fl: a fails the run when go is missing
SELECT pgflow.create_flow('fl');
SELECT pgflow.add_step('fl', 'other');
SELECT pgflow.add_step('fl', 'a', required_input_pattern => '{"run": {"go": true}}', when_unmet => 'fail');
SELECT pgflow.add_step('fl', 'b', ARRAY['a']);
-- fd: a dependent fails the run when its dependency's output is forbidden
SELECT pgflow.create_flow('fd');
SELECT pgflow.add_step('fd', 'a');
SELECT pgflow.add_step('fd', 'z');
SELECT pgflow.add_step('fd', 'b', ARRAY['a'], forbidden_input_pattern => '{"a": {"bad": true}}',
                       when_unmet => 'fail');
-- sk: nothing ever runs: a needs go; {"run": {}} is contained in every object
--     input, so b is always forbidden; c needs a's output
SELECT pgflow.create_flow('sk');
SELECT pgflow.add_step('sk', 'a', required_input_pattern => '{"run": {"go": true}}');
SELECT pgflow.add_step('sk', 'b', forbidden_input_pattern => '{"run": {}}');
SELECT pgflow.add_step('sk', 'c', ARRAY['a', 'b'], required_input_pattern => '{"a": {}}');

-- skip-cascade
SELECT pgflow.start_flow('sc', '{"go": false}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT results_eq(
    $$SELECT step_slug, status, skip_reason FROM pgflow.step_states
      WHERE run_id = '00000000-0000-0000-0000-000000000001' ORDER BY step_slug$$,
    $$VALUES ('a', 'skipped', 'condition_unmet'), ('b', 'skipped', 'dependency_skipped'),
             ('c', 'skipped', 'dependency_skipped'), ('m', 'skipped', 'dependency_skipped'),
             ('x', 'started', NULL), ('y', 'skipped', 'dependency_skipped')$$,
    'skip-cascade skips the step (condition_unmet) and everything downstream (dependency_skipped)'
);
SELECT ok(
    (SELECT bool_and(ss.skipped_at = now()) FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.status = 'skipped'),
    'every skipped step is skipped now'
);
SELECT is(
    (SELECT remaining_steps FROM pgflow.runs WHERE run_id = '00000000-0000-0000-0000-000000000001'),
    1, 'only the unrelated step remains'
);
SELECT is(
    (SELECT string_agg(step_slug, ',') FROM pgflow.step_tasks WHERE run_id = '00000000-0000-0000-0000-000000000001'),
    'x', 'only the unrelated step has a task'
);
SELECT pgflow.start_tasks('sc', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('sc', 30, 10)), gen_random_uuid());
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'x', 0, '"X"');
SELECT is(
    (SELECT (ss.status, ss.skip_reason)::text FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug = 'y'),
    '(skipped,dependency_skipped)',
    'a cascaded step stays skipped when its other dependency completes'
);
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '(completed,0,{})',
    'the run completes; all its leaves were skipped, so its output is {}'
);

SELECT pgflow.start_flow('sc', '{"go": true}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT is(
    (SELECT string_agg(step_slug || '=' || status, ',' ORDER BY step_slug) FROM pgflow.step_states
     WHERE run_id = '00000000-0000-0000-0000-000000000002'),
    'a=started,b=created,c=created,m=created,x=started,y=created',
    'with the condition met nothing is skipped'
);

-- when_unmet = fail on a root
SELECT is(
    (SELECT (r.status, r.error_message, r.failed_at = now())::text
     FROM pgflow.start_flow('fl', '{}', run_id => '00000000-0000-0000-0000-000000000003') AS r),
    '(failed,"step ""a"" failed: condition not met (when_unmet = fail)",t)',
    'when_unmet = fail fails the run in start_flow, naming the step'
);
SELECT is(
    (SELECT string_agg(step_slug || '=' || status, ',' ORDER BY step_slug) FROM pgflow.step_states
     WHERE run_id = '00000000-0000-0000-0000-000000000003'),
    'a=failed,b=created,other=cancelled',
    'the step is failed and the other started root is cancelled'
);
SELECT is(
    (SELECT string_agg(step_slug || '=' || status, ',') FROM pgflow.step_tasks
     WHERE run_id = '00000000-0000-0000-0000-000000000003'),
    'other=cancelled',
    'the other root''s queued task is cancelled'
);
SELECT is(
    (SELECT ss.error_message FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000003' AND ss.step_slug = 'a'),
    'condition not met (when_unmet = fail)',
    'the failed step records why'
);

-- when_unmet = fail on a dependent
SELECT pgflow.start_flow('fd', '{}', run_id => '00000000-0000-0000-0000-000000000004');
SELECT pgflow.start_tasks('fd', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('fd', 30, 10)), gen_random_uuid());
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000004', 'a', 0, '{"bad": true}'), true,
          'the dependency completes with a forbidden output');
SELECT is(
    (SELECT (r.status, r.error_message)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000004'),
    '(failed,"step ""b"" failed: condition not met (when_unmet = fail)")',
    'the dependent''s unmet condition fails the run, naming the dependent'
);
SELECT is(
    (SELECT t.status FROM pgflow.step_tasks AS t
     WHERE t.run_id = '00000000-0000-0000-0000-000000000004' AND t.step_slug = 'z'),
    'cancelled',
    'the run''s running task is cancelled'
);

-- a run of only skipped steps
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output, r.completed_at = now())::text
     FROM pgflow.start_flow('sk', '{"go": false}', run_id => '00000000-0000-0000-0000-000000000005') AS r),
    '(completed,0,{},t)',
    'a run whose steps are all skipped completes at once with output {}'
);
SELECT is(
    (SELECT string_agg(step_slug || '=' || skip_reason, ',' ORDER BY step_slug) FROM pgflow.step_states
     WHERE run_id = '00000000-0000-0000-0000-000000000005'),
    'a=condition_unmet,b=condition_unmet,c=condition_unmet',
    'a dependent is evaluated once its dependencies are skipped, without them in its input'
);

SELECT * FROM finish();
ROLLBACK;
