BEGIN;
SELECT plan(12);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');

SELECT throws_ok($$SELECT pgflow.add_step('f', 'w', step_type => 'wait')$$, '22004',
                 'wait step "w" needs wait_event and wait_key', 'a wait step needs an event and a key');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => '9x', wait_key => 'run.id')$$,
                 '22023', 'wait step "w": invalid event name "9x"', 'the event name is checked');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'e', wait_key => 'run')$$,
                 '22023', 'wait step "w": invalid key path "run"', 'the key is a path into the input');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'e', wait_key => 'run..id')$$,
                 '22023', 'wait step "w": invalid key path "run..id"', 'without empty segments');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'e', wait_key => 'b.id')$$,
                 '22023', 'wait step "w": key path "b.id" starts with "b", which is neither run nor a dependency',
                 'the path starts at run or a dependency');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'e', wait_key => 'run.id',
                                          max_attempts => 2)$$,
                 '22023', 'wait step "w" has no task: max_attempts, base_delay, start_delay, heartbeat, max_delay and jitter do not apply',
                 'task tunables are refused');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'x', wait_event => 'e', wait_key => 'run.id')$$,
                 '22023', 'step "x" is a single step: wait_event and wait_key are only for wait steps',
                 'wait options are refused on other steps');

SELECT is((SELECT (s.step_type, s.opt_timeout, s.when_exhausted)::text
           FROM pgflow.add_step('f', 'w', ARRAY['a'], step_type => 'wait', wait_event => 'order.paid',
                                wait_key => 'a.order.id', timeout => 86400, when_exhausted => 'skip') AS s),
          '(wait,86400,skip)', 'a wait step is added with its timeout and mode');
SELECT is((SELECT (w.event_name, w.key_path)::text FROM pgflow.step_waits AS w),
          '(order.paid,"{a,order,id}")', 'step_waits holds its event and key path');
SELECT lives_ok($$SELECT pgflow.add_step('f', 'w', ARRAY['a'], step_type => 'wait', wait_event => 'order.paid',
                                         wait_key => 'a.order.id', timeout => 60, when_exhausted => 'skip')$$,
                'the same call again is a no-op (the timeout is a tunable)');
SELECT throws_ok($$SELECT pgflow.add_step('f', 'w', ARRAY['a'], step_type => 'wait', wait_event => 'order.shipped',
                                          wait_key => 'a.order.id', when_exhausted => 'skip')$$,
                 '42P17', NULL, 'another event is another structure');
SELECT is((SELECT f -> 'steps' -> 1 -> 'wait' FROM pgflow.flow_shape('f') AS f),
          '{"event": "order.paid", "key": "a.order.id"}'::jsonb, 'flow_shape shows what it waits for');

SELECT * FROM finish();
ROLLBACK;
