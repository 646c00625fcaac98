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
-- Locks: the task rows; for exhausted ones also as fail_task.
-- Errors: 22004 NULL flow_slug or msg_ids; 22023 invalid slug.
CREATE FUNCTION pgflow.start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
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
    FOR v_id IN
        SELECT t.message_id
        FROM unnest(start_tasks.msg_ids) AS m(id)
        JOIN pgflow.step_tasks AS t ON t.message_id = m.id
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.flow_slug = start_tasks.flow_slug
          AND t.status = 'queued'
          AND t.attempts_count - t.retried_attempts >= coalesce(s.opt_max_attempts, f.opt_max_attempts)
        ORDER BY t.message_id
        FOR UPDATE OF t
    LOOP
        PERFORM pgflow._expire_lease(v_id);
    END LOOP;

    RETURN QUERY
    SELECT * FROM pgflow._start_tasks(start_tasks.flow_slug, start_tasks.msg_ids,
                                      start_tasks.worker_id, ARRAY['queued'], false);
END;
$$;

COMMENT ON FUNCTION pgflow.start_tasks(text, bigint[], uuid) IS
    'start leased tasks: count the attempt, set the lease, return each task''s input';
