-- Notifications.  NOTIFY is not free: a transaction that notifies takes a
-- cluster-wide lock from pre-commit until its commit is flushed, so notifying
-- commits serialise.  Identical notifications within a transaction are
-- collapsed by PostgreSQL, so each transaction sends at most one wake-up per
-- flow and one event per (event, run, step).

-- _wake_workers: tells LISTENing workers that tasks of a flow are claimable now.
-- Channel pgflow_tasks, payload = flow slug.
CREATE FUNCTION pgflow._wake_workers(flow_slug text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('pgflow_tasks', flow_slug);
$$;

COMMENT ON FUNCTION pgflow._wake_workers(text) IS
    'NOTIFY pgflow_tasks with the flow slug (collapsed to one per flow per transaction)';

-- _emit: announces a run or step event on channel pgflow_events as a small
-- JSON object (ids and status, never outputs: NOTIFY payloads are < 8 kB).
CREATE FUNCTION pgflow._emit(event text, flow_slug text, run_id uuid, step_slug text, status text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('pgflow_events', jsonb_strip_nulls(
        jsonb_build_object(
            'event', event, 'flow_slug', flow_slug, 'run_id', run_id,
            'step_slug', step_slug, 'status', status))::text);
$$;

COMMENT ON FUNCTION pgflow._emit(text, text, uuid, text, text) IS
    'NOTIFY pgflow_events with {"event", "flow_slug", "run_id", "step_slug"?, "status"}';

-- _emit_step: _emit for a step status change, only when the flow opted in
-- (flows.opt_step_events).
CREATE FUNCTION pgflow._emit_step(flow_slug text, run_id uuid, step_slug text, status text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgflow._emit('step:' || _emit_step.step_slug || ':' || _emit_step.status,
                        _emit_step.flow_slug, _emit_step.run_id, _emit_step.step_slug,
                        _emit_step.status)
    FROM pgflow.flows AS f
    WHERE f.flow_slug = _emit_step.flow_slug AND f.opt_step_events;
$$;

COMMENT ON FUNCTION pgflow._emit_step(text, uuid, text, text) IS
    'announce a step status change on pgflow_events if the flow opted in';
