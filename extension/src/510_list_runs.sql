-- list_runs: runs newest first (started_at DESC, run_id DESC), optionally of
-- one flow, one status, a time range and only the top-level ones, as small
-- JSON documents (ids, parent run, status, timestamps, remaining steps,
-- error; never inputs or outputs).  For dashboards and `pgflow runs`.
-- "waiting" lists the wait steps a started run waits in:
-- [{"step_slug", "event", "key", "until"}] (empty otherwise).
-- flow_slug: a flow name (every version of it) or one definition (order@3).
-- started_after / started_before: started_at >= / < these (NULL: open).
-- top_level: only the runs start_flow started (parent_run_id IS NULL), no
-- sub-flow children.
-- Keyset paging: cursor is a row this function returned (any object with
-- its "started_at" and "run_id"); direction 'older' (the default) returns
-- the max_rows runs that come after it in this order (the next page),
-- 'newer' the max_rows runs just before it (the previous page), still
-- newest first.  Rows with equal started_at are neither skipped nor
-- repeated (run_id breaks the tie).
-- Each page reads one bounded index range from the cursor on, however deep
-- and however long the history: runs_top_started_idx and
-- runs_child_started_idx (top-level runs / children, merged unless
-- top_level), runs_open_status_idx for status started / failed / cancelled,
-- runs_flow_slug_started_at_idx per version of flow_slug.  The filters the
-- chosen index does not hold (status completed, top_level with flow_slug or
-- a status) are checked on the rows of that range.
-- Locks nothing.  Errors: 22023 max_rows outside 1..10000, unknown status
-- or direction, a cursor that is not an object with a timestamp
-- "started_at" and a uuid "run_id"; 22004 direction or top_level NULL.
CREATE FUNCTION pgflow.list_runs(flow_slug text DEFAULT NULL, status text DEFAULT NULL,
                                 max_rows integer DEFAULT 20, cursor jsonb DEFAULT NULL,
                                 direction text DEFAULT 'older',
                                 started_after timestamptz DEFAULT NULL,
                                 started_before timestamptz DEFAULT NULL,
                                 top_level boolean DEFAULT false)
RETURNS SETOF jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- an ordered index range is the only plan wanted: without statistics (a
-- fresh or never analysed runs table) the planner takes status = 'completed'
-- for rare and would rather read every row of the range (a bitmap of a
-- million, or the whole table) and sort them: hundreds of ms
SET enable_bitmapscan = off
SET enable_seqscan = off
-- and with enable_seqscan off a read of the small flows table costs 1e10,
-- which is above jit_above_cost: compiling it took 35 ms of a 40 ms page
SET jit = off
AS $$
DECLARE
    v_slugs text[];
    v_at timestamptz;
    v_id uuid;
    v_where text := '';
    v_dir text;
    v_cols constant text := 'r.run_id, r.flow_slug, r.parent_run_id, r.status, r.remaining_steps,
                             r.error_message, r.started_at, r.completed_at, r.failed_at, r.cancelled_at';
    v_order text;
    v_source text;
BEGIN
    IF list_runs.status IS NOT NULL THEN
        PERFORM pgflow._check_choice('status', list_runs.status,
                                     ARRAY['started', 'completed', 'failed', 'cancelled']);
    END IF;
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000, got %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass max_rows => 20, for example';
    END IF;
    IF direction IS NULL OR top_level IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN direction IS NULL THEN 'direction' ELSE 'top_level' END
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'leave it out for the default (direction ''older'', top_level false)';
    END IF;
    PERFORM pgflow._check_choice('direction', direction, ARRAY['older', 'newer']);
    IF cursor IS NOT NULL THEN
        IF jsonb_typeof(cursor) <> 'object' OR jsonb_typeof(cursor -> 'started_at') IS DISTINCT FROM 'string'
           OR jsonb_typeof(cursor -> 'run_id') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'cursor must be an object with "started_at" and "run_id", got %',
                            left(cursor::text, 200)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass the last row list_runs returned (with direction => ''newer'', the first)';
        END IF;
        BEGIN
            v_at := (cursor ->> 'started_at')::timestamptz;
            v_id := (cursor ->> 'run_id')::uuid;
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'cursor has no valid started_at and run_id: %', left(cursor::text, 200)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'started_at is a timestamp with time zone, run_id a uuid, as list_runs returns them';
        END;
        v_where := v_where || CASE direction WHEN 'older' THEN ' AND (r.started_at, r.run_id) < ($4, $5)'
                                              ELSE ' AND (r.started_at, r.run_id) > ($4, $5)' END;
    END IF;
    -- the status is one of four words (checked above): a literal, so that the
    -- planner sees whether the partial index of open statuses applies
    IF list_runs.status IS NOT NULL THEN
        v_where := v_where || format(' AND r.status = %L', list_runs.status);
    END IF;
    IF started_after IS NOT NULL THEN
        v_where := v_where || ' AND r.started_at >= $6';
    END IF;
    IF started_before IS NOT NULL THEN
        v_where := v_where || ' AND r.started_at < $7';
    END IF;
    v_dir := CASE direction WHEN 'older' THEN 'DESC' ELSE 'ASC' END;
    v_order := format('ORDER BY r.started_at %s, r.run_id %s LIMIT $3', v_dir, v_dir);
    IF list_runs.flow_slug IS NOT NULL THEN
        SELECT array_agg(f.flow_slug ORDER BY f.flow_slug) INTO v_slugs
        FROM pgflow.flows AS f
        WHERE f.flow_slug = list_runs.flow_slug OR f.flow_name = list_runs.flow_slug;
        IF v_slugs IS NULL THEN
            RETURN;
        END IF;
        -- one range of runs_flow_slug_started_at_idx per version, merged
        v_source := format('SELECT r.* FROM unnest($1) AS s (slug) CROSS JOIN LATERAL (
                                SELECT %s FROM pgflow.runs AS r WHERE r.flow_slug = s.slug %s %s %s) AS r
                            %s',
                           v_cols, v_where,
                           CASE WHEN top_level THEN 'AND r.parent_run_id IS NULL' ELSE '' END,
                           v_order, v_order);
    ELSIF list_runs.status IN ('started', 'failed', 'cancelled') THEN
        -- one range of runs_open_status_idx
        v_source := format('SELECT %s FROM pgflow.runs AS r WHERE r.status <> %L %s %s %s',
                           v_cols, 'completed', v_where,
                           CASE WHEN top_level THEN 'AND r.parent_run_id IS NULL' ELSE '' END, v_order);
    ELSIF top_level THEN
        -- one range of runs_top_started_idx
        v_source := format('SELECT %s FROM pgflow.runs AS r WHERE r.parent_run_id IS NULL %s %s',
                           v_cols, v_where, v_order);
    ELSE
        -- a range of runs_top_started_idx and one of runs_child_started_idx, merged
        v_source := format('(SELECT %s FROM pgflow.runs AS r WHERE r.parent_run_id IS NULL %s %s)
                            UNION ALL
                            (SELECT %s FROM pgflow.runs AS r WHERE r.parent_run_id IS NOT NULL %s %s)',
                           v_cols, v_where, v_order, v_cols, v_where, v_order);
        v_source := format('SELECT r.* FROM (%s) AS r %s', v_source, v_order);
    END IF;
    RETURN QUERY EXECUTE format($q$
    SELECT jsonb_build_object(
        'run_id', r.run_id, 'flow_slug', r.flow_slug,
        'version', (SELECT f.version FROM pgflow.flows AS f WHERE f.flow_slug = r.flow_slug),
        'parent_run_id', r.parent_run_id,
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
    FROM (%s) AS r
    ORDER BY r.started_at DESC, r.run_id DESC$q$, v_source)
    USING v_slugs, list_runs.status, max_rows, v_at, v_id, started_after, started_before;
END;
$$;

COMMENT ON FUNCTION pgflow.list_runs(text, text, integer, jsonb, text, timestamptz, timestamptz, boolean) IS
    'runs newest first (optionally of one flow / status / time range / top level only, keyset-paged after a cursor row) as small JSON documents';

-- The indexes of list_runs' pages.  Each run is in exactly one of the first
-- two (top-level runs, sub-flow children: parent_run_id never changes), so a
-- start writes one of them; together they list every run newest first.
-- The third holds the runs not completed, by status: completed ones, the
-- bulk of the history, stay out of it, so a page of failed runs never reads
-- past them.  Its cost: status is an indexed column now, so the one update
-- that changes a run's status (when it finishes, or retry_run) is not HOT;
-- the updates that count remaining_steps down still are.
CREATE INDEX runs_top_started_idx ON pgflow.runs (started_at, run_id)
    WHERE parent_run_id IS NULL;
CREATE INDEX runs_child_started_idx ON pgflow.runs (started_at, run_id)
    WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_open_status_idx ON pgflow.runs (status, started_at, run_id)
    WHERE status <> 'completed';
-- list_flows' counts of a flow's runs by status (those not completed; its
-- total comes from runs_flow_slug_started_at_idx).  A start writes one entry
-- in it; a run that completes leaves it.
CREATE INDEX runs_flow_open_idx ON pgflow.runs (flow_slug, status, started_at)
    WHERE status <> 'completed';
