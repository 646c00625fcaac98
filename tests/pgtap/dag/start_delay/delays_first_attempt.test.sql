BEGIN;
SELECT plan(10);

-- a waits 30 s before its first attempt, b 10 s after a; retries use backoff
SELECT pgflow.create_flow('f', base_delay => 3, max_attempts => 3);
SELECT pgflow.add_step('f', 'a', start_delay => 30);
SELECT pgflow.add_step('f', 'b', ARRAY['a'], start_delay => 10);
SELECT pgflow.add_step('f', 'now', start_delay => 0);
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'm', step_type => 'map', start_delay => 5);

CREATE FUNCTION pg_temp.vt(step text) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT t.vt FROM pgflow.step_tasks AS t WHERE t.flow_slug = 'f' AND t.step_slug = step;
$$;
CREATE FUNCTION pg_temp.start_step(step text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t WHERE t.flow_slug = 'f' AND t.step_slug = step),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT is(pg_temp.vt('a'), now() + interval '30 seconds',
          'a root task with start_delay is claimable start_delay seconds after start');
SELECT is(
    (SELECT (t.status, t.queued_at = now())::text FROM pgflow.step_tasks AS t WHERE t.step_slug = 'a'),
    '(queued,t)',
    'it is queued now'
);
SELECT is(pg_temp.vt('now'), now(), 'start_delay 0 makes a task claimable at once');
SELECT is(
    (SELECT string_agg(m.message ->> 'step_slug', ',') FROM pgflow.read_with_poll('f', 30, 10) AS m),
    'now',
    'delayed tasks are not claimable before their start delay'
);

-- the delay applies once: a retry waits the backoff, not the start delay
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'a';
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom');
SELECT is(pg_temp.vt('a'), now() + interval '3 seconds',
          'a retry waits base_delay, not start_delay');
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'a';
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom');
SELECT is(pg_temp.vt('a'), now() + interval '6 seconds', 'the second retry waits base_delay * 2');

-- a dependent's delay counts from when it becomes ready
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'a';
SELECT pg_temp.start_step('a');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"A"');
SELECT is(
    (SELECT (ss.status, ss.started_at = now())::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'b'),
    '(started,t)',
    'a delayed dependent step starts when its dependencies are done'
);
SELECT is(pg_temp.vt('b'), now() + interval '10 seconds',
          'its task is claimable start_delay seconds after that');

-- maps: every task waits
SELECT pgflow.start_flow('g', '["x", "y", "z"]', run_id => '00000000-0000-0000-0000-000000000002');
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks WHERE flow_slug = 'g' AND vt = now() + interval '5 seconds'),
    3::bigint,
    'every task of a map waits the start delay'
);
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('g', 30, 10)$$, 'none of them is claimable yet');

SELECT * FROM finish();
ROLLBACK;
