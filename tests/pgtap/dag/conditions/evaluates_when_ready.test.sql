BEGIN;
SELECT plan(17);

-- Conditions are evaluated whenever a step becomes ready, however it got
-- there: after an empty-map cascade, after a skip, after a dependency ran out
-- of attempts, at start.

-- em: an empty root map completes at start; c needs m's output, d must not run
SELECT pgflow.create_flow('em');
SELECT pgflow.add_step('em', 'm', step_type => 'map');
SELECT pgflow.add_step('em', 'c', ARRAY['m'], required_input_pattern => '{"m": []}', when_unmet => 'fail');
SELECT pgflow.add_step('em', 'd', ARRAY['m'], required_input_pattern => '{"run": [1]}');
-- mid: the empty array comes from a's output, through two maps
SELECT pgflow.create_flow('mid');
SELECT pgflow.add_step('mid', 'a');
SELECT pgflow.add_step('mid', 'm1', ARRAY['a'], step_type => 'map');
SELECT pgflow.add_step('mid', 'm2', ARRAY['m1'], step_type => 'map');
SELECT pgflow.add_step('mid', 'c', ARRAY['m2'], required_input_pattern => '{"m2": [], "run": {"go": true}}',
                       when_unmet => 'skip');
SELECT pgflow.add_step('mid', 'e', ARRAY['m2'], forbidden_input_pattern => '{"run": {"go": true}}',
                       when_unmet => 'fail');
-- cm: conditions on map steps, and a map whose source was skipped
SELECT pgflow.create_flow('cm');
SELECT pgflow.add_step('cm', 'rm', step_type => 'map', required_input_pattern => '{"run": [1]}');
SELECT pgflow.add_step('cm', 'a', required_input_pattern => '{"run": [2]}');
SELECT pgflow.add_step('cm', 'am', ARRAY['a'], step_type => 'map');
SELECT pgflow.add_step('cm', 'after', ARRAY['am']);
-- hx: b becomes ready because a ran out of attempts (when_exhausted = skip)
SELECT pgflow.create_flow('hx', max_attempts => 1);
SELECT pgflow.add_step('hx', 'a', when_exhausted => 'skip');
SELECT pgflow.add_step('hx', 'b', ARRAY['a'], required_input_pattern => '{"a": {}}', when_unmet => 'fail');

CREATE FUNCTION pg_temp.status(run integer, step text) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(':', ss.status, ss.skip_reason)
    FROM pgflow.step_states AS ss
    WHERE ss.run_id = ('00000000-0000-0000-0000-00000000000' || run)::uuid AND ss.step_slug = step;
$$;
CREATE FUNCTION pg_temp.run(run integer) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(':', r.status, r.error_message)
    FROM pgflow.runs AS r WHERE r.run_id = ('00000000-0000-0000-0000-00000000000' || run)::uuid;
$$;

-- em, at start
SELECT pgflow.start_flow('em', '[]', run_id => '00000000-0000-0000-0000-000000000001');
SELECT is(pg_temp.status(1, 'm'), 'completed', 'the empty root map completes at start');
SELECT is(pg_temp.status(1, 'c'), 'started',
          'a dependent''s condition sees the output of a map completed by the empty-map cascade');
SELECT is(pg_temp.status(1, 'd'), 'skipped:condition_unmet',
          'an unmet condition after the cascade skips the dependent');
SELECT is(pg_temp.run(1), 'started', 'the run goes on');

-- mid, in complete_task
SELECT pgflow.start_flow('mid', '{"go": true}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_tasks('mid', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('mid', 30, 10)), gen_random_uuid());
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, '[]');
SELECT is(pg_temp.status(2, 'm2'), 'completed', 'the empty maps complete in complete_task');
SELECT is(pg_temp.run(2),
          'failed:step "e" failed: condition not met (when_unmet = fail)',
          'a forbidden pattern after the cascade is checked: it fails the run');
SELECT pgflow.start_flow('mid', '{"go": false}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT pgflow.start_tasks('mid', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('mid', 30, 10)), gen_random_uuid());
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000003', 'a', 0, '[]');
SELECT is(pg_temp.status(3, 'c'), 'skipped:condition_unmet',
          'a required pattern unmet after the cascade skips the step');
SELECT is(pg_temp.status(3, 'e'), 'started', 'a forbidden pattern not matched lets the step start');

-- cm: conditions on map steps; a map whose source is skipped
SELECT pgflow.start_flow('cm', '[1, 3]', run_id => '00000000-0000-0000-0000-000000000004');
SELECT is(
    (SELECT (ss.status, ss.initial_tasks)::text FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000004' AND ss.step_slug = 'rm'),
    '(started,2)',
    'a root map whose condition on {"run": input} is met fans out'
);
SELECT is(pg_temp.status(4, 'a'), 'skipped:condition_unmet', 'a root with an unmet condition is skipped');
SELECT is(pg_temp.status(4, 'am'), 'skipped:dependency_skipped',
          'a map whose source step was skipped is skipped (dependency_skipped)');
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks
     WHERE run_id = '00000000-0000-0000-0000-000000000004' AND step_slug IN ('a', 'am')),
    0::bigint,
    'neither gets a task'
);
SELECT is(pg_temp.status(4, 'after'), 'started',
          'the dependent of that map goes on without it (when_unmet = skip does not cascade)');
SELECT pgflow.start_flow('cm', '[2]', run_id => '00000000-0000-0000-0000-000000000005');
SELECT is(pg_temp.status(5, 'rm'), 'skipped:condition_unmet',
          'a root map whose condition is unmet is skipped instead of fanning out');
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks
     WHERE run_id = '00000000-0000-0000-0000-000000000005' AND step_slug = 'rm'),
    0::bigint,
    'and gets no task'
);

-- hx: after a dependency was skipped because it ran out of attempts
SELECT pgflow.start_flow('hx', '{}', run_id => '00000000-0000-0000-0000-000000000006');
SELECT pgflow.start_tasks('hx', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('hx', 30, 10)), gen_random_uuid());
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000006', 'a', 0, 'boom');
SELECT is(pg_temp.status(6, 'a'), 'skipped:handler_failed', 'the exhausted step is skipped');
SELECT is(pg_temp.run(6), 'failed:step "b" failed: condition not met (when_unmet = fail)',
          'its dependent''s condition is evaluated without its output and fails the run');

SELECT * FROM finish();
ROLLBACK;
