BEGIN;
SELECT plan(5);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'done', wait_key => 'run.id');
SELECT pgflow.start_flow('f', '{"id": 1}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('f', '{"id": 1}', run_id => '00000000-0000-0000-0000-000000000002');

SELECT is(pgflow.emit_event('done', '1', '"first"', event_id => 'evt-1'), 2, 'the first emit completes');
SELECT pgflow.start_flow('f', '{"id": 1}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT is(pgflow.emit_event('done', '1', '"again"', event_id => 'evt-1'), 0,
          'a repeated event_id is a no-op returning 0');
SELECT is((SELECT ss.status FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-0000-0000-000000000003'), 'started',
          'even for a step that waits now');
SELECT is((SELECT count(*)::integer FROM pgflow.events), 1, 'and it is not recorded twice');
SELECT is(pgflow.emit_event('done', '1', '"other"', event_id => 'evt-2'), 1, 'another id completes');

SELECT * FROM finish();
ROLLBACK;
