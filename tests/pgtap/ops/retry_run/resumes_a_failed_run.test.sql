BEGIN;
SELECT plan(21);

-- a -> b -> c; d is another root that completes; s is skipped (condition)
SELECT pgflow.create_flow('f', max_attempts => 2);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', ARRAY['a'], max_attempts => 1);
SELECT pgflow.add_step('f', 'c', ARRAY['b']);
SELECT pgflow.add_step('f', 'd');
SELECT pgflow.add_step('f', 's', required_input_pattern => '{"run": {"go": true}}');

CREATE FUNCTION pg_temp.start_step(step text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
              WHERE t.step_slug = step AND t.status = 'queued'),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '{"go": false}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_step('a');
SELECT pg_temp.start_step('d');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"A"');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'd', 0, '"D"');
SELECT pg_temp.start_step('b');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'b', 0, 'boom');
SELECT is((SELECT (status, remaining_steps)::text FROM pgflow.runs), '(failed,2)',
          'the run failed at b with b and c left');
CREATE TEMP TABLE completed_before AS
    SELECT t.step_slug, t.output, t.completed_at, t.attempts_count
    FROM pgflow.step_tasks AS t WHERE t.status = 'completed';

SELECT is(
    (SELECT (r.status, r.failed_at, r.error_message, r.remaining_steps, r.output)::text
     FROM pgflow.retry_run('00000000-0000-0000-0000-000000000001') AS r),
    '(started,,,2,)',
    'retry_run returns the run started again, its error cleared, its counter as it was'
);
SELECT is(
    ARRAY(SELECT (ss.step_slug, ss.status, ss.remaining_deps, ss.remaining_tasks, ss.error_message)::text
          FROM pgflow.step_states AS ss ORDER BY ss.step_slug),
    ARRAY['(a,completed,0,0,)', '(b,started,0,1,)', '(c,created,1,,)', '(d,completed,0,0,)',
          '(s,skipped,0,,)'],
    'the failed step runs again; completed and skipped steps stay; c still waits for b'
);
SELECT is(
    (SELECT (t.status, t.attempts_count, t.retried_attempts, t.read_ct, t.error_message,
             t.last_worker_id, t.vt <= now())::text
     FROM pgflow.step_tasks AS t WHERE t.step_slug = 'b'),
    '(queued,1,1,0,,,t)',
    'the failed task is queued again, claimable now, with a fresh budget of attempts'
);
SELECT results_eq(
    $$SELECT t.step_slug, t.output, t.completed_at, t.attempts_count
      FROM pgflow.step_tasks AS t WHERE t.status = 'completed' ORDER BY 1$$,
    $$SELECT * FROM completed_before ORDER BY 1$$,
    'completed tasks keep their outputs and are not re-queued'
);
SELECT is(
    ARRAY(SELECT (m.message ->> 'step_slug') FROM pgflow.read_with_poll('f', 30, 10) AS m),
    ARRAY['b'],
    'only the failed step can be claimed'
);

-- the history of the failed attempt stays
SELECT is(
    (SELECT (rr.retry_number, rr.status, rr.error_message, rr.finished_at = now())::text
     FROM pgflow.run_retries AS rr),
    '(1,failed,"step ""b"" failed: boom",t)',
    'run_retries keeps the failed run''s status and error'
);
SELECT is(
    (SELECT (ta.retry_number, ta.step_slug, ta.task_index, ta.status, ta.attempts_count,
             ta.error_message, ta.last_worker_id)::text
     FROM pgflow.task_attempts AS ta),
    '(1,b,0,failed,1,boom,00000000-0000-0000-0000-0000000000a1)',
    'task_attempts keeps the failed task''s attempts, error and worker'
);

-- the run now completes normally
SELECT is(pg_temp.start_step('b'), 1::bigint, 'the re-queued task starts');
SELECT is((SELECT (attempts_count, attempts_count - retried_attempts)::text
           FROM pgflow.step_tasks WHERE step_slug = 'b'), '(2,1)',
          'as attempt 2 of its life, the first since the retry');
SELECT ok(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '"B"'),
          'and completes');
SELECT is((SELECT status FROM pgflow.step_states WHERE step_slug = 'c'), 'started',
          'its dependent starts');
SELECT pg_temp.start_step('c');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'c', 0, '"C"');
SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output, r.completed_at = now())::text FROM pgflow.runs AS r),
    '(completed,0,"{""c"": ""C"", ""d"": ""D""}",t)',
    'the run completes with the outputs of its leaves'
);

-- a second failure and retry numbers the history
SELECT pgflow.start_flow('f', '{"go": true}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'a', 0, 'first');
UPDATE pgflow.step_tasks SET vt = now() WHERE run_id = '00000000-0000-0000-0000-000000000002';
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'a', 0, 'second');
SELECT is((SELECT status FROM pgflow.runs WHERE run_id = '00000000-0000-0000-0000-000000000002'),
          'failed', 'a second run fails at a after two attempts');
SELECT is(
    ARRAY(SELECT (ss.step_slug, ss.status)::text FROM pgflow.step_states AS ss
          WHERE ss.run_id = '00000000-0000-0000-0000-000000000002' ORDER BY ss.step_slug),
    ARRAY['(a,failed)', '(b,created)', '(c,created)', '(d,cancelled)', '(s,cancelled)'],
    'its other started steps were cancelled'
);
SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000002');
SELECT is(
    ARRAY(SELECT (t.step_slug, t.status, t.attempts_count)::text FROM pgflow.step_tasks AS t
          WHERE t.run_id = '00000000-0000-0000-0000-000000000002' ORDER BY t.step_slug),
    ARRAY['(a,queued,2)', '(d,queued,0)', '(s,queued,0)'],
    'the failed and the cancelled steps are re-queued (attempt numbers go on)'
);
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'a', 0, 'third');
UPDATE pgflow.step_tasks SET vt = now() WHERE run_id = '00000000-0000-0000-0000-000000000002';
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'a', 0, 'fourth');
SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000002');
SELECT is(
    ARRAY(SELECT (ta.retry_number, ta.step_slug, ta.status, ta.attempts_count, ta.error_message)::text
          FROM pgflow.task_attempts AS ta
          WHERE ta.run_id = '00000000-0000-0000-0000-000000000002'
          ORDER BY ta.retry_number, ta.step_slug),
    ARRAY['(1,a,failed,2,second)', '(1,d,cancelled,0,)', '(1,s,cancelled,0,)',
          '(2,a,failed,4,fourth)', '(2,d,cancelled,0,)', '(2,s,cancelled,0,)'],
    'every retry keeps the attempts it replaced (counted over the task''s life)'
);
SELECT is(
    (SELECT count(*) FROM pgflow.run_retries WHERE run_id = '00000000-0000-0000-0000-000000000002'),
    2::bigint,
    'and is numbered'
);
SELECT is(
    (SELECT (status, remaining_tasks)::text FROM pgflow.step_states
     WHERE run_id = '00000000-0000-0000-0000-000000000002' AND step_slug = 'a'),
    '(started,1)',
    'a step retried twice waits for its one task'
);

-- a step that failed before it had tasks is evaluated again
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'x', required_input_pattern => '{"run": {"ok": true}}', when_unmet => 'fail');
SELECT pgflow.start_flow('g', '{"ok": false}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT is(
    (SELECT (r.status, r.error_message)::text FROM pgflow.retry_run('00000000-0000-0000-0000-000000000003') AS r),
    '(failed,"step ""x"" failed: condition not met (when_unmet = fail)")',
    'a condition that fails again fails the retried run again'
);
SELECT is(
    (SELECT count(*) FROM pgflow.run_retries WHERE run_id = '00000000-0000-0000-0000-000000000003'),
    1::bigint,
    'and the retry is on record'
);

SELECT * FROM finish();
ROLLBACK;
