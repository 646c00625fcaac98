BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(14);

SELECT pgflow.create_flow('f', step_events => true);
SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'go', wait_key => 'run.id', timeout => 60);
SELECT pgflow.add_step('f', 'b', ARRAY['w']);

-- cancel: the waiting step is cancelled, a later emit changes nothing
SELECT pgflow.start_flow('f', '{"id": 1}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000001');
SELECT is((SELECT ss.status FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug = 'w'),
          'cancelled', 'cancel_run cancels a waiting step');
SELECT is(pgflow.get_run('00000000-0000-0000-0000-000000000001') -> 'steps' -> 0 -> 'waiting_for', 'null'::jsonb,
          'which no longer shows as waiting');
SELECT is(pgflow.emit_event('go', '1', '{}'), 0, 'an emit for a cancelled wait completes nothing');
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
          'cancelled', 'the run stays cancelled');
SELECT pgflow.expire_waits();
SELECT is((SELECT count(*)::integer FROM pgflow.waits), 0, 'expire_waits drops the stale waits row');

-- retry after cancel: it waits again and consumes the event kept meanwhile
SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000001');
SELECT is((SELECT (ss.status, ss.output)::text FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug = 'w'),
          '(completed,{})', 'retry_run of a cancelled wait waits again (and takes the kept event)');

-- retry after a timeout: it waits again, with a new deadline
SELECT pgflow.start_flow('f', '{"id": 2}', run_id => '00000000-0000-0000-0000-000000000002');
UPDATE pgflow.waits SET deadline = now() - interval '1 s';
SELECT pgflow.expire_waits();
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
          'failed', 'a timed-out wait failed its run');
SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000002');
SELECT is((SELECT (ss.status, ss.error_message)::text FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-0000-0000-000000000002' AND ss.step_slug = 'w'),
          '(started,)', 'retry_run makes a timed-out wait wait again');
SELECT is((SELECT w.deadline FROM pgflow.waits AS w WHERE w.run_id = '00000000-0000-0000-0000-000000000002'),
          now() + interval '60 s', 'with a new deadline');
SELECT is(pgflow.emit_event('go', '2', '"late"'), 1, 'and the next event completes it');
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-0000-0000-000000000002'),
          'started', 'the run goes on');

-- prune: finished runs go with their waits; old events go with expire_waits
SELECT pgflow.start_flow('f', '{"id": 3}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000003');
UPDATE pgflow.runs SET started_at = now() - interval '2 days', cancelled_at = now() - interval '1 day'
WHERE run_id = '00000000-0000-0000-0000-000000000003';
SELECT is(pgflow.prune_runs(interval '1 hour'), 1::bigint, 'the cancelled run is pruned');
SELECT is((SELECT count(*)::integer FROM pgflow.waits), 0, 'prune_runs deletes the waits of pruned runs');
UPDATE pgflow.events SET emitted_at = now() - interval '8 days'
WHERE event_seq = (SELECT min(event_seq) FROM pgflow.events);
SELECT pgflow.expire_waits();
SELECT is((SELECT count(*)::integer FROM pgflow.events), 1,
          'expire_waits deletes events older than pgflow.event_retention (7 days by default)');

SELECT * FROM finish();
ROLLBACK;
