-- start_tasks: starts leased tasks (msg_ids from read_with_poll): each task
-- still queued becomes started, counts an attempt, gets a lease of the step
-- timeout + 2 s (heartbeat + 2 s for a step with a heartbeat) and records
-- the worker; returns what its handler needs (attempt: the attempt's number
-- over the task's whole life, which its reports name).
-- Handler input: a single step gets {"run": <flow input>, "<dep>": <output>,
-- ...} over its completed dependencies; a map task gets its array element.
-- A leased task whose attempts are already used up (its lease expired on the
-- last attempt) is failed instead of returned (when_exhausted applies).
-- Tasks not queued any more (started by another worker, cancelled) are
-- silently left out: the caller only runs what is returned.  A paused flow
-- (pause_flow) starts nothing.
-- Generic plans only (plan_cache_mode): the check for exhausted tasks was
-- otherwise re-planned on every call, which took seven times as long as
-- running it.
-- Locks: the task rows; for exhausted ones also as fail_task.
-- Errors: 22004 NULL flow_slug or msg_ids; 22023 invalid slug.
CREATE FUNCTION pgflow.start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_task record;
BEGIN
    PERFORM pgflow._check_slug('flow slug', start_tasks.flow_slug);
    IF start_tasks.msg_ids IS NULL THEN
        RAISE EXCEPTION 'msg_ids must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the msg_id values read_with_poll returned';
    END IF;

    -- Losing this lease in a crash only makes the task claimable again: the
    -- commit need not wait for its WAL flush (see claim_tasks).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- a paused flow (pause_flow) starts nothing: the leases run out and the
    -- tasks are claimable again after resume_flow
    IF EXISTS (SELECT 1 FROM pgflow.paused_flows AS p WHERE p.flow_slug = start_tasks.flow_slug) THEN
        RETURN;
    END IF;
    -- the named tasks out of attempts: one probe of the message_id key per
    -- id (OFFSET 0 keeps the subquery apart, so the flow's condition is not
    -- an index condition: a generic plan without statistics then read every
    -- queued task of the flow instead), then each locked and checked again
    FOR v_task IN
        SELECT t.message_id, coalesce(s.opt_max_attempts, f.opt_max_attempts) AS max_attempts
        FROM unnest(start_tasks.msg_ids) AS m(id)
        CROSS JOIN LATERAL (
            SELECT t0.message_id, t0.flow_slug, t0.step_slug, t0.status, t0.attempts_count,
                   t0.retried_attempts
            FROM pgflow.step_tasks AS t0
            WHERE t0.message_id = m.id
            OFFSET 0
        ) AS t
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.flow_slug = start_tasks.flow_slug
          AND t.status = 'queued'
          AND t.attempts_count - t.retried_attempts >= coalesce(s.opt_max_attempts, f.opt_max_attempts)
        ORDER BY t.message_id
    LOOP
        PERFORM FROM pgflow.step_tasks AS t
        WHERE t.message_id = v_task.message_id
          AND t.status = 'queued'
          AND t.attempts_count - t.retried_attempts >= v_task.max_attempts
        FOR UPDATE;
        IF FOUND THEN
            PERFORM pgflow._expire_lease(v_task.message_id);
        END IF;
    END LOOP;

    RETURN QUERY
    SELECT * FROM pgflow._start_tasks(start_tasks.flow_slug, start_tasks.msg_ids,
                                      start_tasks.worker_id, ARRAY['queued'], false);
END;
$$;

COMMENT ON FUNCTION pgflow.start_tasks(text, bigint[], uuid) IS
    'start leased tasks: count the attempt, set the lease, return each task''s input';
