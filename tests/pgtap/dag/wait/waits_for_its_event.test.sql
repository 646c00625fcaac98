BEGIN;
SELECT plan(16);

-- order runs first, approval waits for "approved" with the run's order_id,
-- ship gets the event's payload as approval's output
SELECT pgflow.create_flow('f', step_events => true);
SELECT pgflow.add_step('f', 'order');
SELECT pgflow.add_step('f', 'approval', ARRAY['order'], step_type => 'wait', wait_event => 'approved',
                       wait_key => 'run.order_id', timeout => 3600);
SELECT pgflow.add_step('f', 'ship', ARRAY['approval']);

SELECT pgflow.start_flow('f', '{"order_id": 42}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT is((SELECT ss.status FROM pgflow.step_states AS ss WHERE ss.step_slug = 'approval'), 'created',
          'a wait step does not wait before its dependencies are done');
SELECT is(pgflow.emit_event('approved', '7', '{}'), 0, 'an event nobody waits for completes nothing');

SELECT pgflow.start_tasks('f', ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 10) AS m),
                          '00000000-0000-0000-0000-0000000000a1');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'order', 0, '{"total": 10}');

SELECT is((SELECT (ss.status, ss.initial_tasks, ss.remaining_tasks)::text FROM pgflow.step_states AS ss
           WHERE ss.step_slug = 'approval'), '(started,0,0)', 'once ready, it is started with no task');
SELECT is((SELECT count(*)::integer FROM pgflow.step_tasks AS t WHERE t.step_slug = 'approval'), 0,
          'workers get nothing to claim for it');
SELECT is((SELECT count(*)::integer FROM pgflow.read_with_poll('f', 30, 10)), 0, 'nothing is claimable');
SELECT is((SELECT (w.event_name, w.event_key, w.deadline = now() + interval '3600 s')::text
           FROM pgflow.waits AS w), '(approved,42,t)', 'pgflow.waits says for what and until when');
SELECT is(pgflow.get_run('00000000-0000-0000-0000-000000000001') -> 'steps' -> 1 -> 'waiting_for',
          jsonb_build_object('event', 'approved', 'key', 42, 'until', now() + interval '3600 s'),
          'get_run shows what the step waits for and until when');
SELECT is((SELECT d -> 'waiting' FROM pgflow.list_runs('f') AS d),
          jsonb_build_array(jsonb_build_object('step_slug', 'approval', 'event', 'approved', 'key', 42,
                                               'until', now() + interval '3600 s')),
          'list_runs shows the waiting step');
SELECT is(pgflow.get_run('00000000-0000-0000-0000-000000000001') -> 'steps' -> 0 -> 'waiting_for',
          'null'::jsonb, 'other steps wait for nothing');

SELECT is(pgflow.emit_event('approved', '43', '{"by": "x"}'), 0, 'another key completes nothing');
SELECT is(pgflow.emit_event('rejected', '42', '{"by": "x"}'), 0, 'another event completes nothing');
SELECT is(pgflow.emit_event('approved', '42', '{"by": "ann"}'), 1, 'the event completes the waiting step');
SELECT is((SELECT (ss.status, ss.output)::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'approval'),
          '(completed,"{""by"": ""ann""}")', 'with the payload as its output');
SELECT is((SELECT count(*)::integer FROM pgflow.waits), 0, 'and waits no more');
SELECT is((SELECT t.input FROM pgflow.start_tasks('f',
              ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 10) AS m),
              '00000000-0000-0000-0000-0000000000a1') AS t),
          '{"run": {"order_id": 42}, "approval": {"by": "ann"}}'::jsonb,
          'its dependent starts and receives the payload like any output');
SELECT is((SELECT (e.consumed_at IS NOT NULL, e.completed_steps)::text FROM pgflow.events AS e
           WHERE e.event_name = 'approved' AND e.event_key = '42'), '(t,1)', 'the event is recorded as consumed by one step');

SELECT * FROM finish();
ROLLBACK;
