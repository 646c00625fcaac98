-- _start_tasks: starts the given tasks of a flow (by message id) that are in
-- one of the given statuses: started, attempt counted, worker recorded, and
-- leased for the step's heartbeat (when it has one: the worker renews the
-- lease with extend_leases) or its timeout, whichever is shorter, + 2 s;
-- returns what their handlers need (see start_tasks).
-- count_read: also count the claim in read_ct (claim_tasks, which leases and
-- starts in one call; after read_with_poll, which counts it, start_tasks does not).
-- The UPDATE is driven from the id list alone (an index probe per id, then
-- the rows by ctid) and looks the step's timeout up per row, so no plan the
-- planner may pick on missing statistics scans the queue.  Generic plans only
-- (plan_cache_mode): a custom plan knows the statuses, which imply the
-- predicate of the claimable-tasks index, and may read the rows through it
-- instead: every queued and started task of the flow.  No seq scan
-- (enable_seqscan): a generic plan made while step_tasks is small (a new
-- installation, or after a TRUNCATE) would read it by seq scan, and keep
-- doing so, per call, once it has grown.
-- Locks: the task rows.
CREATE FUNCTION pgflow._start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid, statuses text[],
                                    count_read boolean)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
    WITH started AS (
        UPDATE pgflow.step_tasks AS t
        SET status = 'started',
            attempts_count = t.attempts_count + 1,
            read_ct = t.read_ct + _start_tasks.count_read::integer,
            started_at = now(),
            vt = now() + make_interval(secs => (
                -- least() skips NULL: no heartbeat leaves the timeout
                SELECT least(coalesce(s.opt_heartbeat, f.opt_heartbeat),
                             coalesce(s.opt_timeout, f.opt_timeout))
                FROM pgflow.steps AS s
                JOIN pgflow.flows AS f ON f.flow_slug = s.flow_slug
                WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug)::double precision + 2),
            last_worker_id = _start_tasks.worker_id
        -- by ctid, looked up through the message_id index: a plain
        -- `message_id = ANY (...)` next to the status test may be planned
        -- through the claimable-tasks index, reading every claimable task
        -- one probe of the message_id key per id (OFFSET 0: flattened into a
        -- join, a generic plan without statistics may read the whole table)
        WHERE t.ctid = ANY (ARRAY(
                  SELECT t0.ctid
                  FROM unnest(_start_tasks.msg_ids) AS m(id)
                  CROSS JOIN LATERAL (
                      SELECT t1.ctid FROM pgflow.step_tasks AS t1
                      WHERE t1.message_id = m.id
                      OFFSET 0) AS t0))
          AND t.flow_slug = _start_tasks.flow_slug
          AND t.status = ANY (_start_tasks.statuses)
        RETURNING t.flow_slug, t.run_id, t.step_slug, t.task_index, t.message_id,
                  t.attempts_count
    ), typed AS MATERIALIZED (
        SELECT st.*, s.step_type, s.deps_count
        FROM started AS st
        JOIN pgflow.steps AS s ON s.flow_slug = st.flow_slug AND s.step_slug = st.step_slug
    ), map_sources AS MATERIALIZED (
        -- each map source is read (and detoasted) once per call: `|| '[]'`
        -- makes an in-memory copy, so picking element i of it is cheap; on
        -- the stored (toasted) value each `-> i` would fetch the whole array
        SELECT ms.run_id, ms.step_slug, x.source || '[]'::jsonb AS source
        FROM (SELECT DISTINCT ty.run_id, ty.step_slug, ty.flow_slug, ty.deps_count
              FROM typed AS ty
              WHERE ty.step_type = 'map') AS ms
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN ms.deps_count = 0 THEN (
                    SELECT r.input FROM pgflow.runs AS r WHERE r.run_id = ms.run_id)
                ELSE (
                    SELECT ds.output
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = ms.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = ms.flow_slug AND d.step_slug = ms.step_slug)
            END AS source
        ) AS x
    )
    SELECT ty.flow_slug, ty.run_id, ty.step_slug,
           CASE
               WHEN ty.step_type = 'map' THEN (
                   SELECT ms.source -> ty.task_index FROM map_sources AS ms
                   WHERE ms.run_id = ty.run_id AND ms.step_slug = ty.step_slug)
               ELSE jsonb_build_object('run', (
                        SELECT r.input FROM pgflow.runs AS r WHERE r.run_id = ty.run_id))
                    || coalesce((
                        SELECT jsonb_object_agg(d.dep_slug, ds.output)
                        FROM pgflow.deps AS d
                        JOIN pgflow.step_states AS ds
                          ON ds.run_id = ty.run_id AND ds.step_slug = d.dep_slug
                        WHERE d.flow_slug = ty.flow_slug
                          AND d.step_slug = ty.step_slug
                          AND ds.status = 'completed'), '{}'::jsonb)
           END,
           ty.message_id, ty.task_index, ty.attempts_count
    FROM typed AS ty
    ORDER BY ty.message_id;
END;
$$;

COMMENT ON FUNCTION pgflow._start_tasks(text, bigint[], uuid, text[], boolean) IS
    'start tasks by message id (count the attempt, set the lease) and return their inputs';
