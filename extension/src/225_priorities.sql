-- Run priorities and trace contexts (start_flow(priority =>, trace_context =>)).
--
-- A run's priority (an integer, default 0, higher first) is copied into each
-- of its tasks when they are created, and a sub-flow's child runs inherit
-- their parent's.  Claims (claim_tasks, read_with_poll) take the claimable
-- tasks of the highest priority level first, oldest (vt) first within a
-- level: one ordered range of step_tasks_ready_idx per level, the levels
-- found by a loose index scan over the same index, so a claim never reads a
-- level's tasks that are not yet claimable.  Only flows that ever had a run
-- with a priority other than 0 (flows.prioritized, set by _start_run, never
-- reset) look for levels: the others claim one range, priority 0, as before.
-- Priorities order what is claimable; they do not jump a start_delay, a
-- retry's backoff or a concurrency limit (a parked task is un-parked by its
-- gate, highest priority first, then oldest).

ALTER TABLE pgflow.runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE pgflow.runs ADD COLUMN trace_context text;
ALTER TABLE pgflow.runs ADD CONSTRAINT runs_trace_context_check
    CHECK (trace_context ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
COMMENT ON COLUMN pgflow.runs.priority IS
    'claims take higher-priority runs'' tasks first (default 0; a child run has its parent''s)';
COMMENT ON COLUMN pgflow.runs.trace_context IS
    'the W3C traceparent start_flow was given: workers make their task spans its children';

ALTER TABLE pgflow.flows ADD COLUMN prioritized boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN pgflow.flows.prioritized IS
    'a run with a priority other than 0 was started: claims look through priority levels (never reset)';

ALTER TABLE pgflow.step_tasks ADD COLUMN priority integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN pgflow.step_tasks.priority IS
    'its run''s priority (copied when the task is created): claims take higher first';

-- Claimable work of a flow by priority level, oldest first within a level:
-- queued tasks whose vt has passed and started tasks whose lease expired.
CREATE INDEX step_tasks_ready_idx ON pgflow.step_tasks (flow_slug, priority, vt)
    WHERE status IN ('queued', 'started');

-- _check_trace_context: raises unless a trace context is NULL or a W3C
-- traceparent of version 00 with a non-zero trace id and parent id.
-- Errors: 22023.
CREATE FUNCTION pgflow._check_trace_context(trace_context text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF trace_context IS NOT NULL
       AND (trace_context !~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
            OR substr(trace_context, 4, 32) = repeat('0', 32)
            OR substr(trace_context, 37, 16) = repeat('0', 16)) THEN
        RAISE EXCEPTION 'trace_context "%" is not a W3C traceparent', left(trace_context, 80)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lower case, e.g. the traceparent header of the current span, or NULL';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_trace_context(text) IS
    'raise unless a trace context is NULL or a valid W3C traceparent (version 00)';

-- trace_contexts: the trace contexts of runs (for workers that make task
-- spans children of the trace a run was started in); runs without one, and
-- unknown runs, are left out.
CREATE FUNCTION pgflow.trace_contexts(run_ids uuid[])
RETURNS TABLE (run_id uuid, trace_context text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.run_id, r.trace_context
    FROM pgflow.runs AS r
    WHERE r.run_id = ANY (trace_contexts.run_ids) AND r.trace_context IS NOT NULL;
$$;

COMMENT ON FUNCTION pgflow.trace_contexts(uuid[]) IS
    'the W3C trace contexts the given runs were started with (runs without one are left out)';
