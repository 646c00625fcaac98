BEGIN;
SELECT plan(4);

-- the wait step only waits when the run asks for an approval
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'approval', step_type => 'wait', wait_event => 'approved', wait_key => 'run.id',
                       required_input_pattern => '{"run": {"needs_approval": true}}');
SELECT pgflow.add_step('f', 'after', ARRAY['approval']);
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'approval', step_type => 'wait', wait_event => 'approved', wait_key => 'run.id',
                       forbidden_input_pattern => '{"run": {"vip": true}}', when_unmet => 'fail');

SELECT pgflow.start_flow('f', '{"id": 1, "needs_approval": true}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('f', '{"id": 2, "needs_approval": false}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_flow('g', '{"id": 3, "vip": true}', run_id => '00000000-0000-0000-0000-000000000003');

SELECT is((SELECT count(*)::integer FROM pgflow.waits), 1, 'only the run meeting the condition waits');
SELECT is((SELECT concat_ws(':', ss.status, ss.skip_reason) FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-0000-0000-000000000002' AND ss.step_slug = 'approval'),
          'skipped:condition_unmet', 'an unmet condition skips the wait step');
SELECT is((SELECT ss.status FROM pgflow.step_states AS ss
           WHERE ss.run_id = '00000000-0000-0000-0000-000000000002' AND ss.step_slug = 'after'),
          'started', 'and its dependent goes on');
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-0000-0000-000000000003'),
          'failed', 'when_unmet => fail fails the run');

SELECT * FROM finish();
ROLLBACK;
