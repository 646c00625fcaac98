BEGIN;
SELECT plan(5);

CREATE ROLE pgflow_tap_client;
CREATE ROLE pgflow_tap_worker;
SELECT pgflow.grant_client('pgflow_tap_client');
SELECT pgflow.grant_worker('pgflow_tap_worker');
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'go', wait_key => 'run.id');
SELECT pgflow.start_flow('f', '{"id": 1}');

SELECT ok(has_function_privilege('pgflow_tap_client', 'pgflow.emit_event(text, jsonb, jsonb, text)', 'EXECUTE'),
          'a client may emit events');
SELECT ok(NOT has_function_privilege('pgflow_tap_worker', 'pgflow.emit_event(text, jsonb, jsonb, text)', 'EXECUTE'),
          'a worker may not');
SELECT ok(has_function_privilege('pgflow_tap_worker', 'pgflow.expire_waits(integer)', 'EXECUTE'),
          'a worker may run the maintenance call');
SET LOCAL ROLE pgflow_tap_client;
SELECT is(pgflow.emit_event('go', '1', '{}'), 1, 'a client role completes a waiting step without table privileges');
RESET ROLE;
SET LOCAL ROLE pgflow_tap_worker;
SELECT is(pgflow.expire_waits(), 0, 'a worker role can call expire_waits');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
