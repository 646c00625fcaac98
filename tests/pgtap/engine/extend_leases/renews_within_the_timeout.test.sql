BEGIN;
SELECT plan(14);

-- A step with a heartbeat gets a short lease (heartbeat + 2 s) that the
-- worker renews; timeout stays the longest one attempt may run: a lease is
-- never renewed past started_at + timeout + 2 s.
SELECT pgflow.create_flow('beat', timeout => 600, heartbeat => 5);
SELECT pgflow.add_step('beat', 'long');
SELECT pgflow.add_step('beat', 'plain', heartbeat => NULL);
SELECT pgflow.create_flow('still', timeout => 30);
SELECT pgflow.add_step('still', 'plain');

SELECT pgflow.start_flow('beat', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('still', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.claim_tasks('beat', 10, '00000000-0000-0000-0000-0000000000a1');
SELECT pgflow.claim_tasks('still', 10, '00000000-0000-0000-0000-0000000000a1');

CREATE FUNCTION pg_temp.vt(run text, step text) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT t.vt FROM pgflow.step_tasks AS t WHERE t.run_id = run::uuid AND t.step_slug = step;
$$;
CREATE FUNCTION pg_temp.extend(run text, step text, attempt integer) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT e.step_slug || ':' || e.task_index
    FROM pgflow.extend_leases(ARRAY[run::uuid], ARRAY[step], ARRAY[0], ARRAY[attempt]) AS e;
$$;

SELECT is(pg_temp.vt('00000000-0000-0000-0000-000000000001', 'long'), now() + interval '7 seconds',
          'a heartbeat step is leased for heartbeat + 2 s at its claim, not timeout + 2 s');
SELECT is(pg_temp.vt('00000000-0000-0000-0000-000000000001', 'plain'), now() + interval '7 seconds',
          'a step inherits the flow''s heartbeat');
SELECT is(pg_temp.vt('00000000-0000-0000-0000-000000000002', 'plain'), now() + interval '32 seconds',
          'without a heartbeat the lease is timeout + 2 s, as before');

-- renewing: the lease moves to now() + heartbeat + 2 s
UPDATE pgflow.step_tasks SET vt = now() + interval '1 second', started_at = now() - interval '100 seconds'
WHERE run_id = '00000000-0000-0000-0000-000000000001' AND step_slug = 'long';
SELECT results_eq($$SELECT * FROM pg_temp.extend('00000000-0000-0000-0000-000000000001', 'long', 1)$$,
                  ARRAY['long:0'], 'extend_leases returns the tasks whose lease it holds');
SELECT is(pg_temp.vt('00000000-0000-0000-0000-000000000001', 'long'), now() + interval '7 seconds',
          'and renews the lease to now() + heartbeat + 2 s');

-- never past the timeout
UPDATE pgflow.step_tasks SET started_at = now() - interval '597 seconds'
WHERE run_id = '00000000-0000-0000-0000-000000000001' AND step_slug = 'long';
SELECT pg_temp.extend('00000000-0000-0000-0000-000000000001', 'long', 1);
SELECT is(pg_temp.vt('00000000-0000-0000-0000-000000000001', 'long'),
          now() - interval '597 seconds' + interval '602 seconds',
          'a renewal stops at started_at + timeout + 2 s');
UPDATE pgflow.step_tasks SET started_at = now() - interval '700 seconds', vt = now() - interval '1 second'
WHERE run_id = '00000000-0000-0000-0000-000000000001' AND step_slug = 'long';
SELECT is_empty($$SELECT * FROM pg_temp.extend('00000000-0000-0000-0000-000000000001', 'long', 1)$$,
                'an attempt past its timeout is not renewed (its lease has ended)');
SELECT is(pg_temp.vt('00000000-0000-0000-0000-000000000001', 'long'), now() - interval '1 second',
          'and its lease stays expired, so another worker may claim it');

-- fencing
SELECT pgflow.claim_tasks('beat', 10, '00000000-0000-0000-0000-0000000000b2');
SELECT is((SELECT attempts_count FROM pgflow.step_tasks
           WHERE run_id = '00000000-0000-0000-0000-000000000001' AND step_slug = 'long'), 2,
          'the expired attempt was claimed again as attempt 2');
SELECT is_empty($$SELECT * FROM pg_temp.extend('00000000-0000-0000-0000-000000000001', 'long', 1)$$,
                'the superseded attempt 1 cannot renew the lease');
SELECT isnt_empty($$SELECT * FROM pg_temp.extend('00000000-0000-0000-0000-000000000001', 'long', 2)$$,
                  'attempt 2 can');
SELECT is_empty($$SELECT * FROM pg_temp.extend('00000000-0000-0000-0000-000000000001', 'nope', 1)$$,
                'an unknown task is simply not returned');

-- arguments
SELECT throws_ok($$SELECT * FROM pgflow.extend_leases(NULL, ARRAY['a'], ARRAY[0], ARRAY[1])$$,
                 '22004', NULL, 'NULL arrays are refused');
SELECT throws_ok($$SELECT * FROM pgflow.extend_leases(ARRAY[gen_random_uuid()], ARRAY['a', 'b'], ARRAY[0], ARRAY[1])$$,
                 '22023', NULL, 'arrays of different lengths are refused');

SELECT * FROM finish();
ROLLBACK;
