-- read_with_poll: leases up to qty claimable tasks of a flow for vt seconds:
-- queued tasks whose vt has passed, and started tasks whose lease expired
-- (their worker died or overran; the next start counts a new attempt).
-- Returns pgmq-shaped rows; message = {"run_id", "step_slug", "task_index"}.
-- With max_poll_seconds = 0 (what workers should use: they wait on NOTIFY
-- pgflow_tasks, not in SQL) it returns at once; otherwise it retries every
-- poll_interval_ms until something is claimable or the time is up.
-- A paused flow (pause_flow) has nothing claimable.  Higher-priority runs'
-- tasks first (start_flow's priority), then the oldest.
-- Generic plans only (plan_cache_mode): the planner estimates a custom plan
-- so much cheaper than the generic one that it re-planned the claim on
-- every call, which took 2.5 times as long as running it.  The leased rows
-- are updated by ctid, so the generic plan needs no estimate of how many
-- there are (guessing thousands, it read the whole table to join them).
-- Locks: the leased task rows (FOR UPDATE SKIP LOCKED: concurrent readers
-- never wait for each other nor get the same task).
-- Errors: 22004 NULL argument; 22023 invalid slug or out-of-range number.
CREATE FUNCTION pgflow.read_with_poll(
    flow_slug text,
    vt integer,
    qty integer,
    max_poll_seconds integer DEFAULT 0,
    poll_interval_ms integer DEFAULT 100
)
RETURNS SETOF pgflow.message_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now timestamptz;
    v_deadline timestamptz;
    v_levels boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', read_with_poll.flow_slug);
    PERFORM pgflow._check_option('vt', read_with_poll.vt, 1, false);
    PERFORM pgflow._check_option('qty', read_with_poll.qty, 1, false);
    PERFORM pgflow._check_option('max_poll_seconds', read_with_poll.max_poll_seconds, 0, false);
    PERFORM pgflow._check_option('poll_interval_ms', read_with_poll.poll_interval_ms, 1, false);
    v_deadline := clock_timestamp() + make_interval(secs => read_with_poll.max_poll_seconds);
    -- Losing this lease in a crash only makes the task claimable again: the
    -- commit need not wait for its WAL flush (see claim_tasks).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- only a flow that ever had a run with a priority other than 0 has levels
    SELECT f.prioritized INTO v_levels FROM pgflow.flows AS f
    WHERE f.flow_slug = read_with_poll.flow_slug;

    LOOP
        v_now := clock_timestamp();
        RETURN QUERY
        -- by priority level, highest first, as claim_tasks does (a flow
        -- without levels: priority 0 only)
        WITH RECURSIVE levels (priority) AS (
            SELECT CASE WHEN v_levels THEN
                       (SELECT t.priority FROM pgflow.step_tasks AS t
                        WHERE t.flow_slug = read_with_poll.flow_slug
                          AND t.status IN ('queued', 'started')
                        ORDER BY t.priority DESC
                        LIMIT 1)
                   ELSE 0 END
            UNION ALL
            SELECT (SELECT t.priority FROM pgflow.step_tasks AS t
                    WHERE t.flow_slug = read_with_poll.flow_slug
                      AND t.status IN ('queued', 'started') AND t.priority < l.priority
                    ORDER BY t.priority DESC
                    LIMIT 1)
            FROM levels AS l
            WHERE v_levels AND l.priority IS NOT NULL
        ), claimable AS (
            SELECT c.run_id, c.step_slug, c.task_index
            FROM levels AS l
            CROSS JOIN LATERAL (
                SELECT t.run_id, t.step_slug, t.task_index
                FROM pgflow.step_tasks AS t
                WHERE t.flow_slug = read_with_poll.flow_slug
                  AND t.status IN ('queued', 'started')
                  AND t.priority = l.priority
                  AND t.vt <= v_now
                  -- a paused flow (pause_flow) has nothing claimable: polled as usual
                  AND NOT EXISTS (SELECT 1 FROM pgflow.paused_flows AS p
                                  WHERE p.flow_slug = read_with_poll.flow_slug)
                ORDER BY t.vt
                LIMIT read_with_poll.qty
                FOR UPDATE SKIP LOCKED
            ) AS c
            LIMIT read_with_poll.qty
        )
        UPDATE pgflow.step_tasks AS t
        SET status = 'queued',
            vt = v_now + make_interval(secs => read_with_poll.vt),
            read_ct = t.read_ct + 1
        -- by ctid, each row found by a probe of the primary key (OFFSET 0: as
        -- a join, the generic plan hashed the whole table); the version this
        -- statement sees, which the UPDATE follows to the one it locked
        WHERE t.ctid = ANY (ARRAY(
                  SELECT t0.ctid
                  FROM claimable AS c
                  CROSS JOIN LATERAL (
                      SELECT t1.ctid FROM pgflow.step_tasks AS t1
                      WHERE t1.run_id = c.run_id AND t1.step_slug = c.step_slug
                        AND t1.task_index = c.task_index
                      OFFSET 0) AS t0))
        RETURNING t.message_id, t.read_ct, t.queued_at, t.vt,
                  jsonb_build_object('run_id', t.run_id, 'step_slug', t.step_slug,
                                     'task_index', t.task_index);
        IF FOUND OR clock_timestamp() >= v_deadline THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(read_with_poll.poll_interval_ms / 1000.0);
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow.read_with_poll(text, integer, integer, integer, integer) IS
    'lease up to qty claimable tasks of a flow for vt seconds (SKIP LOCKED); optional polling';
