-- cancel_run: cancels a started run: the run becomes cancelled (cancelled_at),
-- its queued and started tasks cancelled (never claimed again; a late
-- complete_task or fail_task of one changes nothing, as both only act on
-- started tasks), its started steps cancelled; steps still waiting stay
-- created (retry_run resumes from there).  Announces run:cancelled on
-- pgflow_events (and step:<slug>:cancelled when the flow opted in).
-- Cancelling a run that is already finished (completed, failed, cancelled)
-- changes nothing: a NOTICE says so and the run is returned as it is.
-- Locks, in the engine's order: the run's open task rows (by message_id),
-- its started step_states rows, then the runs row; a completion in flight
-- either commits first (and is kept) or finds its task cancelled.
-- Child runs (sub-flows): the running children of the run are cancelled
-- first (and theirs, recursively: a child's rows before its parent's, the
-- order in which a finishing child reports to its parent); a child run
-- cancelled by itself fails its parent task ("was cancelled").
-- Errors: 22004 NULL run_id; 42704 unknown run.
CREATE FUNCTION pgflow.cancel_run(run_id uuid)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
BEGIN
    IF cancel_run.run_id IS NULL THEN
        RAISE EXCEPTION 'run_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the run_id start_flow returned';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgflow.runs AS r WHERE r.run_id = cancel_run.run_id) THEN
        RAISE EXCEPTION 'run % does not exist', cancel_run.run_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'check the run_id (pgflow.runs lists the runs; pruned runs are gone)';
    END IF;
    RETURN pgflow._cancel_run(cancel_run.run_id, true);
END;
$$;

COMMENT ON FUNCTION pgflow.cancel_run(uuid) IS
    'cancel a started run (and its running child runs) and its open tasks and steps; a finished run is returned unchanged';

-- _cancel_run: the body of cancel_run.  notify_parent: a child run reports
-- its cancellation to its parent task (false when the parent is being
-- cancelled or failed itself).
-- Locks: the running child runs first (as _cancel_run), then as cancel_run.
CREATE FUNCTION pgflow._cancel_run(run_id uuid, notify_parent boolean)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_cancelled text[];
BEGIN
    SELECT * INTO STRICT v_run FROM pgflow.runs AS r WHERE r.run_id = _cancel_run.run_id;

    IF v_run.status = 'started' THEN
        -- children first: a child's rows are locked before its parent's
        PERFORM pgflow._cancel_children(_cancel_run.run_id, true);
        -- task -> step_state -> run, like complete_task and fail_task
        PERFORM 1 FROM pgflow.step_tasks AS t
        WHERE t.run_id = _cancel_run.run_id AND t.status IN ('queued', 'started')
        ORDER BY t.message_id
        FOR UPDATE;
        PERFORM 1 FROM pgflow.step_states AS ss
        WHERE ss.run_id = _cancel_run.run_id AND ss.status = 'started'
        ORDER BY ss.step_slug
        FOR UPDATE;
        SELECT * INTO STRICT v_run FROM pgflow.runs AS r
        WHERE r.run_id = _cancel_run.run_id
        FOR UPDATE;
    END IF;

    -- the run may have finished while we waited for the locks
    IF v_run.status <> 'started' THEN
        RAISE NOTICE 'run % is already %; nothing to cancel', v_run.run_id, v_run.status;
        RETURN v_run;
    END IF;

    -- tasks queued by a transaction that committed while we waited are
    -- caught here: every statement sees the latest committed rows
    UPDATE pgflow.step_tasks AS t
    SET status = 'cancelled'
    WHERE t.run_id = _cancel_run.run_id AND t.status IN ('queued', 'started');

    WITH cancelled AS (
        UPDATE pgflow.step_states AS ss
        SET status = 'cancelled'
        WHERE ss.run_id = _cancel_run.run_id AND ss.status = 'started'
        RETURNING ss.step_slug
    )
    SELECT coalesce(array_agg(c.step_slug ORDER BY c.step_slug), '{}') INTO v_cancelled
    FROM cancelled AS c;

    UPDATE pgflow.runs AS r
    SET status = 'cancelled', cancelled_at = now()
    WHERE r.run_id = _cancel_run.run_id
    RETURNING * INTO STRICT v_run;

    PERFORM pgflow._emit_step(v_run.flow_slug, v_run.run_id, s, 'cancelled')
    FROM unnest(v_cancelled) AS s;
    PERFORM pgflow._emit('run:cancelled', v_run.flow_slug, v_run.run_id, NULL, 'cancelled');
    -- children started while we waited for the locks
    PERFORM pgflow._cancel_children(_cancel_run.run_id, false);
    IF _cancel_run.notify_parent THEN
        PERFORM pgflow._child_finished(_cancel_run.run_id);
    END IF;
    RETURN v_run;
END;
$$;

COMMENT ON FUNCTION pgflow._cancel_run(uuid, boolean) IS
    'cancel a started run and its running children; notify_parent: a child run fails its parent task';
