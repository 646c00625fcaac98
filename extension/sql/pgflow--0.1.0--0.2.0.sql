-- pgflow 0.1.0 -> 0.2.0: ALTER EXTENSION pgflow UPDATE TO '0.2.0'.
--
-- While 0.2.0 is in development, extension/src/ is its source and this file
-- must follow it: mirror every change of extension/src/ here (CREATE OR
-- REPLACE FUNCTION, ALTER TABLE, new objects with their COMMENT, REVOKE and
-- pg_extension_config_dump, ...).  tests/py/upgrade/ compares the catalog of
-- a database upgraded with this script to a fresh install and fails with a
-- diff when they differ.  `make release` freezes this file (SHA256SUMS) when
-- 0.2.0 is released.  pg_extension_config_dump() calls must be top-level
-- SELECT statements (the plain install of `pgflow upgrade` leaves them out).
\echo Use "ALTER EXTENSION pgflow UPDATE TO '0.2.0'" to load this file. \quit

-- claim_tasks counts each claim in step_tasks.read_ct, as read_with_poll
-- does: _start_tasks gets a count_read argument (a new signature: drop the
-- old function; its callers are replaced below).
DROP FUNCTION pgflow._start_tasks(text, bigint[], uuid, text[]);

-- _start_tasks: starts the given tasks of a flow (by message id) that are in
-- one of the given statuses: started, attempt counted, lease = now() + step timeout + 2 s,
-- worker recorded; returns what their handlers need (see start_tasks).
-- count_read: also count the claim in read_ct (claim_tasks, which leases and
-- starts in one call; after read_with_poll, which counts it, start_tasks does not).
-- Locks: the task rows.
CREATE FUNCTION pgflow._start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid, statuses text[],
                                    count_read boolean)
RETURNS SETOF pgflow.step_task_record
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH started AS (
        UPDATE pgflow.step_tasks AS t
        SET status = 'started',
            attempts_count = t.attempts_count + 1,
            read_ct = t.read_ct + _start_tasks.count_read::integer,
            started_at = now(),
            vt = now() + make_interval(secs => coalesce(s.opt_timeout, f.opt_timeout)::double precision + 2),
            last_worker_id = _start_tasks.worker_id
        FROM (SELECT DISTINCT m.id FROM unnest(_start_tasks.msg_ids) AS m(id)) AS m
        JOIN pgflow.step_tasks AS t0 ON t0.message_id = m.id
        JOIN pgflow.steps AS s ON s.flow_slug = t0.flow_slug AND s.step_slug = t0.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t0.flow_slug
        WHERE t.message_id = m.id
          AND t0.flow_slug = _start_tasks.flow_slug
          AND t.status = ANY (_start_tasks.statuses)
        RETURNING t.flow_slug, t.run_id, t.step_slug, t.task_index, t.message_id,
                  t.attempts_count, s.step_type, s.deps_count
    ), map_sources AS MATERIALIZED (
        SELECT DISTINCT st.run_id, st.step_slug, st.flow_slug, st.deps_count
        FROM started AS st
        WHERE st.step_type = 'map'
    ), map_inputs AS (
        -- each map source is read (and detoasted) once per call and expanded,
        -- instead of once per task: `source -> i` detoasts the whole array
        SELECT ms.run_id, ms.step_slug, (e.idx - 1)::integer AS task_index, e.elem
        FROM map_sources AS ms
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
        CROSS JOIN LATERAL jsonb_array_elements(x.source) WITH ORDINALITY AS e(elem, idx)
    )
    SELECT st.flow_slug, st.run_id, st.step_slug,
           CASE
               WHEN st.step_type = 'map' THEN mi.elem
               ELSE jsonb_build_object('run', r.input) || coalesce((
                   SELECT jsonb_object_agg(d.dep_slug, ds.output)
                   FROM pgflow.deps AS d
                   JOIN pgflow.step_states AS ds
                     ON ds.run_id = st.run_id AND ds.step_slug = d.dep_slug
                   WHERE d.flow_slug = st.flow_slug
                     AND d.step_slug = st.step_slug
                     AND ds.status = 'completed'), '{}'::jsonb)
           END,
           st.message_id, st.task_index, st.attempts_count
    FROM started AS st
    JOIN pgflow.runs AS r ON r.run_id = st.run_id
    LEFT JOIN map_inputs AS mi
      ON mi.run_id = st.run_id AND mi.step_slug = st.step_slug AND mi.task_index = st.task_index
    ORDER BY st.message_id;
$$;

COMMENT ON FUNCTION pgflow._start_tasks(text, bigint[], uuid, text[], boolean) IS
    'start tasks by message id (count the attempt, set the lease) and return their inputs';

REVOKE ALL ON FUNCTION pgflow._start_tasks(text, bigint[], uuid, text[], boolean) FROM PUBLIC;

-- start_tasks: unchanged but for the call of _start_tasks (count_read => false).
CREATE OR REPLACE FUNCTION pgflow.start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid)
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
    FOR v_id IN
        SELECT t.message_id
        FROM unnest(start_tasks.msg_ids) AS m(id)
        JOIN pgflow.step_tasks AS t ON t.message_id = m.id
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.flow_slug = start_tasks.flow_slug
          AND t.status = 'queued'
          AND t.attempts_count >= coalesce(s.opt_max_attempts, f.opt_max_attempts)
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

-- claim_tasks: counts the claim in read_ct (count_read => true).
CREATE OR REPLACE FUNCTION pgflow.claim_tasks(flow_slug text, qty integer, worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids bigint[];
    v_exhausted bigint[];
    v_id bigint;
BEGIN
    PERFORM pgflow._check_slug('flow slug', claim_tasks.flow_slug);
    PERFORM pgflow._check_option('qty', claim_tasks.qty, 1, false);
    -- A claim need not wait for its WAL flush: lost in a crash, it leaves the
    -- task claimable again (at-least-once already allows the re-run), and the
    -- task's completion, committed synchronously later, flushes it anyway.
    -- This makes the rest of the caller's transaction asynchronous too: call
    -- claim_tasks in a transaction of its own.
    PERFORM set_config('synchronous_commit', 'off', true);

    SELECT array_agg(c.message_id) FILTER (WHERE NOT c.exhausted),
           array_agg(c.message_id) FILTER (WHERE c.exhausted)
    INTO v_ids, v_exhausted
    FROM (
        SELECT t.message_id,
               t.attempts_count >= coalesce(s.opt_max_attempts, f.opt_max_attempts) AS exhausted
        FROM pgflow.step_tasks AS t
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.flow_slug = claim_tasks.flow_slug
          AND t.status IN ('queued', 'started')
          AND t.vt <= clock_timestamp()
        ORDER BY t.vt
        LIMIT claim_tasks.qty
        FOR UPDATE OF t SKIP LOCKED
    ) AS c;

    FOREACH v_id IN ARRAY coalesce(v_exhausted, '{}') LOOP
        PERFORM pgflow._expire_lease(v_id);
    END LOOP;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    -- an exhausted task may have failed the run and cancelled the others
    RETURN QUERY
    SELECT * FROM pgflow._start_tasks(claim_tasks.flow_slug, v_ids, claim_tasks.worker_id,
                                      ARRAY['queued', 'started'], true);
END;
$$;
