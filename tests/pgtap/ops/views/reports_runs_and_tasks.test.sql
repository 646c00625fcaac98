BEGIN;
SELECT plan(10);

SELECT pgflow.create_flow('f', max_attempts => 2, timeout => 10);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', ARRAY['a']);
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'x');

CREATE FUNCTION pg_temp.start(run uuid, step text, worker uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
              WHERE t.run_id = run AND t.step_slug = step AND t.status = 'queued'),
        worker);
$$;
CREATE FUNCTION pg_temp.finish(run uuid, seconds integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.start(run, 'a', NULL);
    PERFORM pgflow.complete_task(run, 'a', 0, '1');
    PERFORM pg_temp.start(run, 'b', NULL);
    PERFORM pgflow.complete_task(run, 'b', 0, '2');
    UPDATE pgflow.runs SET started_at = completed_at - make_interval(secs => seconds)
    WHERE run_id = run;
END;
$$;

-- five completed runs of f taking 10..50 s, one older than a day; one failed;
-- one cancelled; one running with a live and one with an expired lease
SELECT pgflow.start_flow('f', '{}', run_id => format('00000000-0000-0000-0000-00000000000%s', i)::uuid)
FROM generate_series(1, 9) AS i;
SELECT pg_temp.finish(format('00000000-0000-0000-0000-00000000000%s', i)::uuid, 10 * i)
FROM generate_series(1, 5) AS i;
UPDATE pgflow.runs SET completed_at = now() - interval '2 days', started_at = now() - interval '3 days'
WHERE run_id = '00000000-0000-0000-0000-000000000005';
SELECT pg_temp.start('00000000-0000-0000-0000-000000000006', 'a', NULL);
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000006', 'a', 0, 'one');
UPDATE pgflow.step_tasks SET vt = now() WHERE run_id = '00000000-0000-0000-0000-000000000006';
SELECT pg_temp.start('00000000-0000-0000-0000-000000000006', 'a', NULL);
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000006', 'a', 0, 'two');
SELECT pgflow.cancel_run('00000000-0000-0000-0000-000000000007');
SELECT pg_temp.start('00000000-0000-0000-0000-000000000008', 'a', '00000000-0000-0000-0000-0000000000a8');
SELECT pg_temp.start('00000000-0000-0000-0000-000000000009', 'a', '00000000-0000-0000-0000-0000000000a9');
UPDATE pgflow.step_tasks SET vt = now() - interval '5 seconds'
WHERE run_id = '00000000-0000-0000-0000-000000000009';

SELECT is(
    (SELECT (runs, started, completed, failed, cancelled, completed_24h)::text
     FROM pgflow.run_stats WHERE flow_slug = 'f'),
    '(9,2,5,1,1,4)',
    'run_stats counts the runs of a flow by status'
);
SELECT is(
    (SELECT (p50_duration_24h, p95_duration_24h)::text FROM pgflow.run_stats WHERE flow_slug = 'f'),
    '(00:00:25,00:00:38.5)',
    'and the p50/p95 duration of the runs completed in the last 24 hours'
);
SELECT is(
    (SELECT (runs, started, p50_duration_24h)::text FROM pgflow.run_stats WHERE flow_slug = 'g'),
    '(0,0,)',
    'a flow without runs has a row of zeros'
);
SELECT is(
    ARRAY(SELECT (step_slug, tasks, completed_tasks, failed_tasks, attempts, failure_rate)::text
          FROM pgflow.step_stats WHERE flow_slug = 'f'),
    ARRAY['(a,9,5,1,9,0.1667)', '(b,5,5,0,5,0.0000)'],
    'step_stats counts tasks, attempts and the share of finished tasks that failed'
);
SELECT ok((SELECT mean_duration >= interval '0' FROM pgflow.step_stats WHERE step_slug = 'b'),
          'and the mean duration of completed tasks');
SELECT is(
    ARRAY(SELECT (run_id, step_slug, worker_id, lease_expires_at = now() + interval '12 seconds')::text
          FROM pgflow.active_tasks),
    ARRAY['(00000000-0000-0000-0000-000000000008,a,00000000-0000-0000-0000-0000000000a8,t)'],
    'active_tasks lists running tasks with their worker and lease'
);
SELECT is(
    ARRAY(SELECT (run_id, step_slug, worker_id, stalled_for >= interval '5 seconds')::text
          FROM pgflow.stalled_tasks),
    ARRAY['(00000000-0000-0000-0000-000000000009,a,00000000-0000-0000-0000-0000000000a9,t)'],
    'stalled_tasks lists started tasks whose lease expired'
);
SELECT pgflow.read_with_poll('f', 30, 10);
SELECT is_empty('SELECT * FROM pgflow.stalled_tasks', 'a re-claimed task is no longer stalled');

SELECT is(
    ARRAY(SELECT c.relname::text FROM pg_class AS c
          WHERE c.relnamespace = 'pgflow'::regnamespace AND c.relkind = 'v' ORDER BY 1),
    -- _inline_steps is the engine's own, not a report
    ARRAY['_inline_steps', 'active_tasks', 'run_stats', 'stalled_tasks', 'step_stats'],
    'the views are these'
);
SELECT is_empty(
    $$SELECT c.relname FROM pg_class AS c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS a
      WHERE c.relnamespace = 'pgflow'::regnamespace AND c.relkind = 'v' AND a.grantee = 0$$,
    'PUBLIC cannot read them'
);

SELECT * FROM finish();
ROLLBACK;
