BEGIN;
SELECT plan(8);

-- a and k are roots; k is skipped when it fails; b waits for a and k
SELECT pgflow.create_flow('f', max_attempts => 1);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'k', when_exhausted => 'skip');
SELECT pgflow.add_step('f', 'b', ARRAY['a', 'k']);

CREATE FUNCTION pg_temp.start_step(step text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
              WHERE t.step_slug = step AND t.status = 'queued'),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_step('k');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'k', 0, 'k broke');
SELECT pg_temp.start_step('a');
SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000001');
-- the worker of a reports after the cancel: ignored
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"lost"');

SELECT is(
    (SELECT (r.status, r.cancelled_at, r.remaining_steps)::text
     FROM pgflow.retry_run('00000000-0000-0000-0000-000000000001') AS r),
    '(started,,2)',
    'a cancelled run is started again, its cancellation cleared'
);
SELECT is(
    ARRAY(SELECT (ss.step_slug, ss.status, ss.skip_reason)::text FROM pgflow.step_states AS ss
          ORDER BY ss.step_slug),
    ARRAY['(a,started,)', '(b,created,)', '(k,skipped,handler_failed)'],
    'the cancelled step runs again, the skipped step stays skipped'
);
SELECT is(
    ARRAY(SELECT (t.step_slug, t.status, t.attempts_count, t.output)::text FROM pgflow.step_tasks AS t
          ORDER BY t.step_slug),
    ARRAY['(a,queued,1,)', '(k,failed,1,)'],
    'the cancelled task is queued again without the late output; the skipped step''s task is not'
);
SELECT is((SELECT (status, error_message)::text FROM pgflow.run_retries), '(cancelled,)',
          'the history says the run had been cancelled');
SELECT is((SELECT (status, attempts_count)::text FROM pgflow.task_attempts), '(cancelled,1)',
          'and keeps the cancelled attempt');
SELECT pg_temp.start_step('a');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"A"');
SELECT is((SELECT status FROM pgflow.step_states WHERE step_slug = 'b'), 'started',
          'the step waiting on both starts');
SELECT is(
    (SELECT s.input FROM pgflow.start_tasks('f',
         ARRAY(SELECT message_id FROM pgflow.step_tasks WHERE step_slug = 'b'),
         '00000000-0000-0000-0000-0000000000a1') AS s),
    '{"run": {}, "a": "A"}'::jsonb,
    'it gets the retried step''s output and not the skipped one''s'
);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '"B"');
SELECT is((SELECT (status, output)::text FROM pgflow.runs), '(completed,"{""b"": ""B""}")',
          'the run completes');

SELECT * FROM finish();
ROLLBACK;
