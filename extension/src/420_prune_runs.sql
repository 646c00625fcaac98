-- prune_runs: deletes up to batch_size finished runs (completed, failed,
-- cancelled) that finished more than older_than ago, with every row of them
-- (step states, tasks, retry history: the foreign keys cascade); returns how
-- many runs it deleted.  Started runs are never touched.  Call it again
-- until it returns less than batch_size to prune everything due; small
-- batches keep each transaction (and its locks and WAL) short.
-- Finding candidates costs no write on the hot path: no index on finish time
-- exists (it would turn every run's final UPDATE into a non-HOT update with
-- one more index entry).  A run finishes after it starts, so every run due
-- has started_at < now() - older_than; the existing index
-- runs_flow_slug_started_at_idx is range-scanned per flow for that, and the
-- status and finish time are checked on the few rows it yields.
-- Child runs (sub-flows) are never pruned on their own: they go with their
-- parent run (the foreign key cascades through the parent's tasks), so no
-- child outlives its parent and no child of a kept parent goes; only
-- top-level runs count in batch_size and in the result.
-- Locks: the runs rows it deletes (FOR UPDATE SKIP LOCKED: a run being
-- retried or deleted concurrently is left for the next call), then through
-- the cascade their step_states, step_tasks and history rows.
-- Errors: 22004 NULL argument; 22023 negative older_than or batch_size < 1.
CREATE FUNCTION pgflow.prune_runs(older_than interval, batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_flow text;
    v_deleted bigint := 0;
    v_n bigint;
BEGIN
    IF prune_runs.older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass an interval, e.g. older_than => interval ''7 days''';
    END IF;
    IF prune_runs.older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, got %', prune_runs.older_than
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass an interval >= 0, e.g. older_than => interval ''7 days''';
    END IF;
    PERFORM pgflow._check_option('batch_size', prune_runs.batch_size, 1, false);
    -- an interval reaching before the first representable instant prunes nothing
    v_cutoff := CASE
        WHEN prune_runs.older_than > now() - '4713-01-01 00:00:00+00 BC'::timestamptz THEN '-infinity'
        ELSE now() - prune_runs.older_than
    END;

    FOR v_flow IN SELECT f.flow_slug FROM pgflow.flows AS f ORDER BY f.flow_slug LOOP
        WITH due AS (
            SELECT r.run_id
            FROM pgflow.runs AS r
            WHERE r.flow_slug = v_flow
              AND r.started_at < v_cutoff
              AND r.status IN ('completed', 'failed', 'cancelled')
              AND r.parent_run_id IS NULL
              AND coalesce(r.completed_at, r.failed_at, r.cancelled_at) < v_cutoff
            ORDER BY r.started_at
            LIMIT prune_runs.batch_size - v_deleted
            FOR UPDATE SKIP LOCKED
        )
        DELETE FROM pgflow.runs AS r
        USING due AS d
        WHERE r.run_id = d.run_id;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_deleted := v_deleted + v_n;
        EXIT WHEN v_deleted >= prune_runs.batch_size;
    END LOOP;
    RETURN v_deleted;
END;
$$;

COMMENT ON FUNCTION pgflow.prune_runs(interval, integer) IS
    'delete up to batch_size runs finished longer than older_than ago, with all their rows';
