BEGIN;
SELECT plan(16);

-- Reports name the attempt their claim returned; a report of an attempt that
-- is not the task's current started attempt changes nothing, also across
-- cancel_run and retry_run.
SELECT pgflow.create_flow('fence', max_attempts => 2);
SELECT pgflow.add_step('fence', 'a');

CREATE FUNCTION pg_temp.claim(worker text) RETURNS integer LANGUAGE sql AS $$
    SELECT attempt FROM pgflow.claim_tasks('fence', 10, worker::uuid);
$$;
CREATE FUNCTION pg_temp.expire() RETURNS void LANGUAGE sql AS $$
    UPDATE pgflow.step_tasks SET vt = now() - interval '1 second';
$$;
CREATE FUNCTION pg_temp.task() RETURNS text LANGUAGE sql AS $$
    SELECT (t.status, t.attempts_count, t.output, t.error_message, t.last_worker_id)::text
    FROM pgflow.step_tasks AS t;
$$;

SELECT pgflow.start_flow('fence', '{}', run_id => '00000000-0000-0000-0000-000000000001');

-- worker A claims (attempt 1); its lease passes; worker B claims (attempt 2, the last)
SELECT is(pg_temp.claim('aaaaaaaa-0000-0000-0000-000000000000'), 1, 'A gets attempt 1');
SELECT pg_temp.expire();
SELECT is(pg_temp.claim('bbbbbbbb-0000-0000-0000-000000000000'), 2, 'B gets attempt 2');

SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'late failure of A',
                           attempt => 1),
          false, 'A''s late fail_task of attempt 1 returns false');
SELECT is(pg_temp.task(), '(started,2,,,bbbbbbbb-0000-0000-0000-000000000000)',
          'and changes nothing: B''s attempt is still running');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"A"', attempt => 1),
          false, 'A''s late complete_task of attempt 1 returns false');
SELECT is((SELECT status FROM pgflow.runs), 'started', 'the run still runs');
SELECT is(pgflow.complete_tasks(ARRAY['00000000-0000-0000-0000-000000000001'::uuid], ARRAY['a'],
                                ARRAY[0], ARRAY['"A"'::jsonb], attempts => ARRAY[1]),
          0, 'complete_tasks of a superseded attempt counts nothing');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"B"', attempt => 2),
          true, 'B''s complete_task of attempt 2 is accepted');
SELECT is((SELECT (status, output)::text FROM pgflow.runs), '(completed,"{""a"": ""B""}")',
          'the run completes with B''s output');

-- cancel + retry: a report from before the cancel must not be taken after the retry
SELECT pgflow.start_flow('fence', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT is(pg_temp.claim('aaaaaaaa-0000-0000-0000-000000000000'), 1, 'A claims the second run (attempt 1)');
SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000002');
SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000002');
SELECT is(pg_temp.claim('bbbbbbbb-0000-0000-0000-000000000000'), 2,
          'after cancel and retry the next claim is attempt 2, not 1 again');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, '"stale"', attempt => 1),
          false, 'A''s pre-cancel completion is refused after the retry');
SELECT is((SELECT status FROM pgflow.step_tasks WHERE run_id = '00000000-0000-0000-0000-000000000002'),
          'started', 'the retried attempt still runs');
SELECT is(pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'a', 0, 'first try after retry',
                           attempt => 2),
          true, 'the retried attempt fails normally');
SELECT is((SELECT status FROM pgflow.step_tasks WHERE run_id = '00000000-0000-0000-0000-000000000002'),
          'queued', 'with the retry''s own budget: max_attempts counts from the retry');

-- a NULL attempt reports for whatever attempt runs (the protocol before fencing)
SELECT pg_temp.expire();
SELECT pg_temp.claim('bbbbbbbb-0000-0000-0000-000000000000');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, '"unfenced"'),
          true, 'without an attempt the current started attempt is completed');

SELECT * FROM finish();
ROLLBACK;
