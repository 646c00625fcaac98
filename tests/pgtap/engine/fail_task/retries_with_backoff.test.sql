BEGIN;
SELECT plan(17);

-- flow: base_delay 2, four attempts; b overrides base_delay with 5
SELECT pgflow.create_flow('f', max_attempts => 4, base_delay => 2);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', base_delay => 5);

-- starts the queued tasks of one step (as a worker would after reading them)
CREATE FUNCTION pg_temp.start_step(step text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t WHERE t.step_slug = step),
        '00000000-0000-0000-0000-0000000000a1');
$$;
-- makes a step's retry due at once
CREATE FUNCTION pg_temp.expire(step text) RETURNS void LANGUAGE sql AS $$
    UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = step;
$$;
CREATE FUNCTION pg_temp.task(step text) RETURNS text LANGUAGE sql AS $$
    SELECT (t.status, t.attempts_count, t.error_message)::text
    FROM pgflow.step_tasks AS t WHERE t.step_slug = step;
$$;
CREATE FUNCTION pg_temp.vt(step text) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT t.vt FROM pgflow.step_tasks AS t WHERE t.step_slug = step;
$$;

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_step('a');

-- attempt 1
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom 1'), true,
          'fail_task returns true when it records a failure');
SELECT is(pg_temp.task('a'), '(queued,1,"boom 1")',
          'with attempts left the task is queued again with the error message');
SELECT is(pg_temp.vt('a'), now() + interval '2 seconds',
          'the first retry waits base_delay (2 s)');
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('f', 30, 10) WHERE message ->> 'step_slug' = 'a'$$,
    'the task cannot be claimed before its retry is due');
SELECT is(
    (SELECT (ss.status, ss.remaining_tasks, ss.error_message, ss.failed_at)::text
     FROM pgflow.step_states AS ss WHERE ss.step_slug = 'a'),
    '(started,1,,)',
    'the step stays started while its task retries'
);
SELECT is((SELECT (status, remaining_steps)::text FROM pgflow.runs), '(started,2)',
          'the run is unaffected by a retry');

-- attempt 2
SELECT pg_temp.expire('a');
SELECT is(pg_temp.start_step('a'), 1::bigint, 'a due retry is started again');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom 2');
SELECT is(pg_temp.task('a'), '(queued,2,"boom 2")', 'the second failure is recorded');
SELECT is(pg_temp.vt('a'), now() + interval '4 seconds',
          'the second retry waits base_delay * 2 (4 s)');

-- attempt 3
SELECT pg_temp.expire('a');
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'boom 3');
SELECT is(pg_temp.task('a'), '(queued,3,"boom 3")', 'the third failure is recorded');
SELECT is(pg_temp.vt('a'), now() + interval '8 seconds',
          'the third retry waits base_delay * 4 (8 s)');

-- step-level base_delay
SELECT pg_temp.start_step('b');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'b', 0, 'b failed');
SELECT is(pg_temp.vt('b'), now() + interval '5 seconds',
          'a step-level base_delay overrides the flow''s (first retry 5 s)');
SELECT pg_temp.expire('b');
SELECT pg_temp.start_step('b');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'b', 0, NULL);
SELECT is(pg_temp.vt('b'), now() + interval '10 seconds',
          'and doubles with each attempt (second retry 10 s)');
SELECT is(pg_temp.task('b'), '(queued,2,"unknown error")',
          'a NULL error message is stored as "unknown error"');

-- the delay is capped (2^31 - 1 s) instead of overflowing
UPDATE pgflow.steps SET opt_max_attempts = 100 WHERE step_slug = 'b';
UPDATE pgflow.step_tasks SET attempts_count = 59 WHERE step_slug = 'b';
SELECT pg_temp.expire('b');
SELECT pg_temp.start_step('b');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'b', 0, 'b failed again');
SELECT is(pg_temp.vt('b'), now() + make_interval(secs => 2147483647),
          'a huge backoff is capped at 2^31 - 1 seconds');

-- a retried task completes normally
SELECT pg_temp.expire('a');
SELECT pg_temp.start_step('a');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"ok"'), true,
          'the last attempt may still succeed');
SELECT is(
    (SELECT (ss.status, ss.output)::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'a'),
    '(completed,"""ok""")',
    'and its step completes'
);

SELECT * FROM finish();
ROLLBACK;
