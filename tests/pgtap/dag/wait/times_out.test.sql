BEGIN;
SELECT plan(15);

-- one flow per when_exhausted mode: w waits (60 s), b after it, x beside it
SELECT pgflow.create_flow('fl');
SELECT pgflow.add_step('fl', 'w', step_type => 'wait', wait_event => 'ok', wait_key => 'run.id', timeout => 60);
SELECT pgflow.add_step('fl', 'b', ARRAY['w']);
SELECT pgflow.create_flow('sk');
SELECT pgflow.add_step('sk', 'w', step_type => 'wait', wait_event => 'ok', wait_key => 'run.id', timeout => 60,
                       when_exhausted => 'skip');
SELECT pgflow.add_step('sk', 'b', ARRAY['w']);
SELECT pgflow.create_flow('sc');
SELECT pgflow.add_step('sc', 'w', step_type => 'wait', wait_event => 'ok', wait_key => 'run.id', timeout => 60,
                       when_exhausted => 'skip-cascade');
SELECT pgflow.add_step('sc', 'b', ARRAY['w']);
SELECT pgflow.add_step('sc', 'x');
-- no timeout: waits forever
SELECT pgflow.create_flow('nt');
SELECT pgflow.add_step('nt', 'w', step_type => 'wait', wait_event => 'ok', wait_key => 'run.id');

SELECT pgflow.start_flow(f, jsonb_build_object('id', f)) FROM unnest(ARRAY['fl', 'sk', 'sc', 'nt']) AS f;
CREATE FUNCTION pg_temp.status(flow text, step text) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(':', ss.status, ss.skip_reason) FROM pgflow.step_states AS ss
    WHERE ss.flow_slug = flow AND ss.step_slug = step;
$$;

SELECT is((SELECT w.deadline FROM pgflow.waits AS w WHERE w.flow_slug = 'nt'), NULL,
          'a wait step without timeout has no deadline (it does not inherit the flow''s task timeout)');
SELECT is(pgflow.expire_waits(), 0, 'nothing is due before the deadline');
-- the deadline passes
UPDATE pgflow.waits SET deadline = now() - interval '1 s' WHERE flow_slug <> 'nt';
SELECT is(pgflow.emit_event('ok', '"fl"', '{}'), 0, 'an emit after the deadline completes nothing');
SELECT is(pgflow.expire_waits(), 3, 'expire_waits times out every wait past its deadline');

SELECT is((SELECT (r.status, r.error_message)::text FROM pgflow.runs AS r WHERE r.flow_slug = 'fl'),
          '(failed,"step ""w"" failed: timed out after 60 s waiting for event ""ok"" with key ""fl""")',
          'fail: the run fails with a message naming the event and key');
SELECT is(pg_temp.status('fl', 'w'), 'failed', 'the step failed');
SELECT is(pg_temp.status('fl', 'b'), 'created', 'its dependent never starts');

SELECT is(pg_temp.status('sk', 'w'), 'skipped:wait_timed_out', 'skip: the step is skipped (wait_timed_out)');
SELECT is((SELECT ss.error_message FROM pgflow.step_states AS ss WHERE ss.flow_slug = 'sk' AND ss.step_slug = 'w'),
          'timed out after 60 s waiting for event "ok" with key "sk"', 'with the message');
SELECT is(pg_temp.status('sk', 'b'), 'started', 'and its dependent goes on');

SELECT is(pg_temp.status('sc', 'w') || ' ' || pg_temp.status('sc', 'b'),
          'skipped:wait_timed_out skipped:dependency_skipped',
          'skip-cascade: the step and its dependents are skipped');
SELECT is(pg_temp.status('sc', 'x'), 'started', 'other branches go on');

SELECT is(pg_temp.status('nt', 'w'), 'started', 'a wait without deadline still waits');
SELECT is(pgflow.expire_waits(), 0, 'a second call finds nothing');
SELECT throws_ok($$SELECT pgflow.expire_waits(0)$$, '22023', NULL, 'max_rows must be at least 1');

SELECT * FROM finish();
ROLLBACK;
