-- dashboard_snapshot: what a dashboard or a metrics exporter shows besides
-- the runs themselves, as one JSON document of aggregates (ids, counts and
-- ages; never inputs, outputs or error texts):
--   {"workers": [{"worker_id", "flow_slugs", "host", "pid", "started_at",
--                 "last_heartbeat_at", "stopped_at", "alive", "running"}],
--    "queues":  [{"flow_slug", "step_slug", "ready", "delayed", "started",
--                 "stalled", "oldest_claimable_s"}],
--    "tasks":   [{"flow_slug", "step_slug", "status", "count"}],
--    "runs":    [{"flow_slug", "status", "count"}],
--    "at": now()}
-- workers: the 500 most recently heard from; alive as the workers table's
-- comment says (not stopped, heartbeat within 30 s); running: its started
-- tasks whose lease has not expired.  queues: per step with open tasks
-- (the partial index of queued/started tasks): ready = queued and claimable
-- now, delayed = queued for later (backoff, start_delay), started = leased,
-- stalled = lease expired and not yet re-claimed; oldest_claimable_s: age in
-- seconds of the oldest claimable task (null: none).  tasks and runs count
-- every row by status (a scan of the history: cheap while prune_runs bounds
-- it, meant for a scrape every few seconds, not a tight loop);
-- with_counts => false leaves them out (empty arrays): what the Workers and
-- Queues pages call, reading only the workers table and the open tasks.
-- Locks nothing.  Errors: 22004 NULL with_counts.
CREATE FUNCTION pgflow.dashboard_snapshot(with_counts boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF with_counts IS NULL THEN
        RAISE EXCEPTION 'with_counts must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass true or false';
    END IF;
    RETURN jsonb_build_object(
        'at', now(),
        'workers', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'worker_id', w.worker_id, 'flow_slugs', to_jsonb(w.flow_slugs),
                       'host', w.host, 'pid', w.pid, 'started_at', w.started_at,
                       'last_heartbeat_at', w.last_heartbeat_at, 'stopped_at', w.stopped_at,
                       'alive', w.stopped_at IS NULL
                                AND w.last_heartbeat_at > now() - interval '30 seconds',
                       'running', (SELECT count(*) FROM pgflow.step_tasks AS t
                                   WHERE t.status = 'started' AND t.vt >= now()
                                     AND t.last_worker_id = w.worker_id))
                   ORDER BY w.last_heartbeat_at DESC, w.worker_id)
            FROM (SELECT * FROM pgflow.workers
                  ORDER BY last_heartbeat_at DESC, worker_id LIMIT 500) AS w), '[]'::jsonb),
        'queues', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'flow_slug', q.flow_slug, 'step_slug', q.step_slug,
                       'ready', q.ready, 'delayed', q.delayed, 'started', q.started,
                       'stalled', q.stalled, 'oldest_claimable_s', q.oldest)
                   ORDER BY q.flow_slug, q.step_slug)
            FROM (SELECT t.flow_slug, t.step_slug,
                         count(*) FILTER (WHERE t.status = 'queued' AND t.vt <= now()) AS ready,
                         count(*) FILTER (WHERE t.status = 'queued' AND t.vt > now()) AS delayed,
                         count(*) FILTER (WHERE t.status = 'started' AND t.vt >= now()) AS started,
                         count(*) FILTER (WHERE t.status = 'started' AND t.vt < now()) AS stalled,
                         extract(epoch FROM now() - min(t.vt) FILTER (
                             WHERE (t.status = 'queued' AND t.vt <= now())
                                OR (t.status = 'started' AND t.vt < now())))::double precision
                             AS oldest
                  FROM pgflow.step_tasks AS t
                  WHERE t.status IN ('queued', 'started')
                  GROUP BY t.flow_slug, t.step_slug) AS q), '[]'::jsonb),
        'tasks', coalesce((
            SELECT jsonb_agg(jsonb_build_object('flow_slug', c.flow_slug, 'step_slug', c.step_slug,
                                                'status', c.status, 'count', c.n)
                   ORDER BY c.flow_slug, c.step_slug, c.status)
            FROM (SELECT t.flow_slug, t.step_slug, t.status, count(*) AS n
                  FROM pgflow.step_tasks AS t
                  WHERE dashboard_snapshot.with_counts
                  GROUP BY t.flow_slug, t.step_slug, t.status) AS c), '[]'::jsonb),
        'runs', coalesce((
            SELECT jsonb_agg(jsonb_build_object('flow_slug', c.flow_slug, 'status', c.status,
                                                'count', c.n)
                   ORDER BY c.flow_slug, c.status)
            FROM (SELECT r.flow_slug, r.status, count(*) AS n
                  FROM pgflow.runs AS r
                  WHERE dashboard_snapshot.with_counts
                  GROUP BY r.flow_slug, r.status) AS c), '[]'::jsonb));
END;
$$;

COMMENT ON FUNCTION pgflow.dashboard_snapshot(boolean) IS
    'workers, queue depths per step, tasks and runs by status as JSON (aggregates only; for dashboards and metrics)';
