BEGIN;
SELECT plan(13);

-- fail_task(retry => false) fails now; retry_delay replaces the backoff;
-- max_delay caps it; jitter spreads it; fail_tasks does it for many tasks.
SELECT pgflow.create_flow('rc', max_attempts => 5, base_delay => 10, max_delay => 25);
SELECT pgflow.add_step('rc', 'a');
SELECT pgflow.add_step('rc', 'b', when_exhausted => 'skip');
SELECT pgflow.add_step('rc', 'j', jitter => true, max_delay => NULL);

CREATE FUNCTION pg_temp.claim() RETURNS void LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.claim_tasks('rc', 10, '00000000-0000-0000-0000-0000000000a1');
$$;
CREATE FUNCTION pg_temp.expire() RETURNS void LANGUAGE sql AS $$
    UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE status = 'queued';
$$;
CREATE FUNCTION pg_temp.task(run text, step text) RETURNS text LANGUAGE sql AS $$
    SELECT (t.status, t.attempts_count)::text FROM pgflow.step_tasks AS t
    WHERE t.run_id = run::uuid AND t.step_slug = step;
$$;
CREATE FUNCTION pg_temp.wait(run text, step text) RETURNS interval LANGUAGE sql AS $$
    SELECT t.vt - now() FROM pgflow.step_tasks AS t WHERE t.run_id = run::uuid AND t.step_slug = step;
$$;

SELECT pgflow.start_flow('rc', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.claim();

-- retry => false
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'b', 0, 'NotRetryable: bad card',
                           attempt => 1, retry => false),
          true, 'fail_task with retry => false records the failure');
SELECT is(pg_temp.task('00000000-0000-0000-0000-000000000001', 'b'), '(failed,1)',
          'the task fails at once, attempts left unused');
SELECT is((SELECT (status, skip_reason)::text FROM pgflow.step_states WHERE step_slug = 'b'),
          '(skipped,handler_failed)', 'and its step''s when_exhausted applies (skip)');

-- retry_delay replaces the backoff, bounded by max_delay
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'rate limited', 1,
                        retry_delay => 3);
SELECT is(pg_temp.wait('00000000-0000-0000-0000-000000000001', 'a'), interval '3 seconds',
          'retry_delay sets when the next attempt may start');
SELECT pg_temp.expire();
SELECT pg_temp.claim();
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'rate limited', 2,
                        retry_delay => 3600);
SELECT is(pg_temp.wait('00000000-0000-0000-0000-000000000001', 'a'), interval '25 seconds',
          'a retry_delay above max_delay is capped at max_delay');
SELECT throws_ok($$SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'x', 3,
                                           retry_delay => -1)$$,
                 '22023', NULL, 'a negative retry_delay is refused');

-- max_delay caps the exponential backoff: 10, 20, then 25 instead of 40
SELECT pg_temp.expire();
SELECT pg_temp.claim();
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'again', 3);
SELECT is(pg_temp.wait('00000000-0000-0000-0000-000000000001', 'a'), interval '25 seconds',
          'the third retry would wait 40 s: max_delay caps it at 25 s');

-- jitter: the wait is drawn between 0 and the backoff
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'j', 0, 'jittered', 1);
SELECT ok(pg_temp.wait('00000000-0000-0000-0000-000000000001', 'j') BETWEEN interval '0' AND interval '10 seconds',
          'with jitter the first retry waits between 0 and base_delay');

-- fail_tasks: many at once, fenced, with per-task retry and delay
SELECT pgflow.start_flow('rc', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pg_temp.claim();
SELECT is(pgflow.fail_tasks(
              ARRAY['00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000002',
                    '00000000-0000-0000-0000-000000000002']::uuid[],
              ARRAY['a', 'b', 'j'], ARRAY[0, 0, 0], ARRAY['e1', 'e2', 'e3'],
              attempts => ARRAY[1, 1, 7], retries => ARRAY[true, false, true],
              retry_delays => ARRAY[2, NULL, NULL]::double precision[]),
          2, 'fail_tasks returns how many failures it recorded (attempt 7 of j is not current)');
SELECT is(pg_temp.task('00000000-0000-0000-0000-000000000002', 'a'), '(queued,1)', 'a is queued again');
SELECT is(pg_temp.wait('00000000-0000-0000-0000-000000000002', 'a'), interval '2 seconds',
          'after its retry_delay');
SELECT is(pg_temp.task('00000000-0000-0000-0000-000000000002', 'b'), '(failed,1)', 'b failed for good');
SELECT is(pg_temp.task('00000000-0000-0000-0000-000000000002', 'j'), '(started,1)',
          'j is untouched: the report named another attempt');

SELECT * FROM finish();
ROLLBACK;
