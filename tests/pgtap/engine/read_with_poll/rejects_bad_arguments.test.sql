BEGIN;
SELECT plan(10);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.start_flow('f', '{}');

SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f', 30, 0)$$, '22023',
    'qty must be >= 1, got 0', 'qty 0 is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f', 0, 10)$$, '22023',
    'vt must be >= 1, got 0', 'vt 0 is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f', -5, 10)$$, '22023',
    'vt must be >= 1, got -5', 'a negative vt is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f', 30, 10, max_poll_seconds => -1)$$, '22023',
    'max_poll_seconds must be >= 0, got -1', 'a negative max_poll_seconds is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f', 30, 10, poll_interval_ms => 0)$$, '22023',
    'poll_interval_ms must be >= 1, got 0', 'poll_interval_ms 0 is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll(NULL, 30, 10)$$, '22004',
    'flow slug must not be NULL', 'a NULL flow slug is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f', NULL, 10)$$, '22004',
    'vt must not be NULL', 'a NULL vt is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f', 30, NULL)$$, '22004',
    'qty must not be NULL', 'a NULL qty is refused');
SELECT throws_ok($$SELECT * FROM pgflow.read_with_poll('f-x', 30, 10)$$, '22023',
    'invalid flow slug "f-x": character "-" is not allowed', 'an invalid flow slug is refused');

SELECT is((SELECT read_ct FROM pgflow.step_tasks), 0, 'refused reads lease nothing');

SELECT * FROM finish();
ROLLBACK;
