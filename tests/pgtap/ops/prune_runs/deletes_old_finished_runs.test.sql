BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(14);

SELECT pgflow.create_flow('f', max_attempts => 1);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'm', ARRAY['a'], step_type => 'map');
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'x');

-- runs 1..3 (flow f) finish: completed, failed then retried and failed again,
-- cancelled; run 4 (flow g) completes; runs 5 (f) and 6 (g) keep running
CREATE FUNCTION pg_temp.run_a(run uuid, output jsonb, fail boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
              WHERE t.run_id = run AND t.status = 'queued'),
        '00000000-0000-0000-0000-0000000000a1');
    IF fail THEN
        PERFORM pgflow.fail_task(run, 'a', 0, 'boom');
    ELSE
        PERFORM pgflow.complete_task(run, 'a', 0, output);
    END IF;
END;
$$;
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.run_a('00000000-0000-0000-0000-000000000001', '[]', false);
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pg_temp.run_a('00000000-0000-0000-0000-000000000002', NULL, true);
SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000002');
SELECT pg_temp.run_a('00000000-0000-0000-0000-000000000002', NULL, true);
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT pg_temp.run_a('00000000-0000-0000-0000-000000000003', '[1, 2]', false);
SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000003');
SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000004');
SELECT pgflow.start_tasks('g', ARRAY(SELECT message_id FROM pgflow.step_tasks
                                     WHERE run_id = '00000000-0000-0000-0000-000000000004'), NULL);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000004', 'x', 0, '1');
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000005');
SELECT pg_temp.run_a('00000000-0000-0000-0000-000000000005', '[1]', false);
SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000006');
SELECT is(
    ARRAY(SELECT status FROM pgflow.runs ORDER BY run_id),
    ARRAY['completed', 'failed', 'cancelled', 'completed', 'started', 'started'],
    'the runs are set up'
);

-- everything happened two days ago; run 4 finished only an hour ago
UPDATE pgflow.runs SET started_at = started_at - interval '2 days',
                       completed_at = completed_at - interval '2 days',
                       failed_at = failed_at - interval '2 days',
                       cancelled_at = cancelled_at - interval '2 days';
UPDATE pgflow.runs SET completed_at = now() - interval '1 hour'
WHERE run_id = '00000000-0000-0000-0000-000000000004';

CREATE TEMP TABLE running AS
    SELECT r.*, (SELECT string_agg((t.*)::text, ';' ORDER BY t.step_slug, t.task_index)
                 FROM pgflow.step_tasks AS t WHERE t.run_id = r.run_id) AS tasks,
           (SELECT string_agg((ss.*)::text, ';' ORDER BY ss.step_slug)
            FROM pgflow.step_states AS ss WHERE ss.run_id = r.run_id) AS steps
    FROM pgflow.runs AS r WHERE r.status = 'started';

SELECT is(pgflow.prune_runs(interval '3 days'), 0::bigint, 'nothing finished more than 3 days ago');
SELECT is(pgflow.prune_runs(interval '1 day', batch_size => 2), 2::bigint,
          'a batch deletes at most batch_size runs');
SELECT is(pgflow.prune_runs(interval '1 day'), 1::bigint, 'the next call deletes the rest that is due');
SELECT is(pgflow.prune_runs(interval '1 day'), 0::bigint, 'then nothing is left to prune');
SELECT is(
    ARRAY(SELECT run_id::text FROM pgflow.runs ORDER BY run_id),
    ARRAY['00000000-0000-0000-0000-000000000004', '00000000-0000-0000-0000-000000000005',
          '00000000-0000-0000-0000-000000000006'],
    'the completed, failed and cancelled runs that finished 2 days ago are gone'
);
SELECT is_empty(
    $$SELECT run_id FROM pgflow.step_states WHERE run_id < '00000000-0000-0000-0000-000000000004'
      UNION ALL SELECT run_id FROM pgflow.step_tasks WHERE run_id < '00000000-0000-0000-0000-000000000004'
      UNION ALL SELECT run_id FROM pgflow.run_retries
      UNION ALL SELECT run_id FROM pgflow.task_attempts$$,
    'with every row of them: step states, tasks and retry history'
);
SELECT results_eq(
    $$SELECT r.*, (SELECT string_agg((t.*)::text, ';' ORDER BY t.step_slug, t.task_index)
                   FROM pgflow.step_tasks AS t WHERE t.run_id = r.run_id),
             (SELECT string_agg((ss.*)::text, ';' ORDER BY ss.step_slug)
              FROM pgflow.step_states AS ss WHERE ss.run_id = r.run_id)
      FROM pgflow.runs AS r WHERE r.status = 'started' ORDER BY r.run_id$$,
    'SELECT * FROM running ORDER BY run_id',
    'started runs, older than the cutoff too, are not touched'
);
SELECT is(pgflow.prune_runs(interval '0'), 1::bigint, 'older_than 0 prunes every finished run');
SELECT is(
    ARRAY(SELECT status FROM pgflow.runs ORDER BY run_id),
    ARRAY['started', 'started'],
    'only the running runs remain'
);
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks WHERE status = 'queued'), 2::bigint,
    'their tasks are still claimable'
);

-- bad arguments
SELECT throws_ok($$SELECT pgflow.prune_runs(NULL)$$,
    '22004', 'older_than must not be NULL', 'a NULL interval is refused');
SELECT throws_ok($$SELECT pgflow.prune_runs(interval '-1 day')$$,
    '22023', 'older_than must not be negative, got -1 days', 'a negative interval is refused');
SELECT throws_ok($$SELECT pgflow.prune_runs(interval '1 day', 0)$$,
    '22023', 'batch_size must be >= 1, got 0', 'an empty batch is refused');

SELECT * FROM finish();
ROLLBACK;
