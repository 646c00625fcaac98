-- list_runs: the most recent runs, newest first, optionally of one flow and
-- one status, as small JSON documents (ids, status, timestamps, remaining
-- steps, error; never inputs or outputs).  For dashboards and `pgflow runs`.
-- "waiting" lists the wait steps a started run waits in:
-- [{"step_slug", "event", "key", "until"}] (empty otherwise).
-- flow_slug: a flow name (every version of it) or one definition (order@3).
-- Locks nothing.  Errors: 22023 max_rows outside 1..10000 or unknown status.
CREATE FUNCTION pgflow.list_runs(flow_slug text DEFAULT NULL, status text DEFAULT NULL,
                                 max_rows integer DEFAULT 20)
RETURNS SETOF jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF list_runs.status IS NOT NULL THEN
        PERFORM pgflow._check_choice('status', list_runs.status,
                                     ARRAY['started', 'completed', 'failed', 'cancelled']);
    END IF;
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000, got %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass max_rows => 20, for example';
    END IF;
    RETURN QUERY
    SELECT jsonb_build_object(
        'run_id', r.run_id, 'flow_slug', r.flow_slug,
        'version', (SELECT f.version FROM pgflow.flows AS f WHERE f.flow_slug = r.flow_slug),
        'status', r.status,
        'remaining_steps', r.remaining_steps, 'error_message', r.error_message,
        'started_at', r.started_at,
        'finished_at', coalesce(r.completed_at, r.failed_at, r.cancelled_at),
        'waiting', coalesce((
            SELECT jsonb_agg(jsonb_build_object('step_slug', w.step_slug, 'event', w.event_name,
                                                'key', w.event_key, 'until', w.deadline)
                             ORDER BY w.step_slug)
            FROM pgflow.waits AS w
            JOIN pgflow.step_states AS ss ON ss.run_id = w.run_id AND ss.step_slug = w.step_slug
            WHERE w.run_id = r.run_id AND r.status = 'started' AND ss.status = 'started'),
            '[]'::jsonb))
    FROM pgflow.runs AS r
    WHERE (list_runs.flow_slug IS NULL OR r.flow_slug = list_runs.flow_slug
           OR r.flow_slug IN (SELECT f.flow_slug FROM pgflow.flows AS f
                              WHERE f.flow_name = list_runs.flow_slug))
      AND (list_runs.status IS NULL OR r.status = list_runs.status)
    ORDER BY r.started_at DESC, r.run_id
    LIMIT list_runs.max_rows;
END;
$$;

COMMENT ON FUNCTION pgflow.list_runs(text, text, integer) IS
    'the most recent runs (optionally of one flow / status) as small JSON documents';
