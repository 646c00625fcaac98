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
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
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
                SELECT coalesce(s.opt_timeout, f.opt_timeout)
                FROM pgflow.steps AS s
                JOIN pgflow.flows AS f ON f.flow_slug = s.flow_slug
                WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug)::double precision + 2),
            last_worker_id = _start_tasks.worker_id
        -- by ctid, looked up through the message_id index: a plain
        -- `message_id = ANY (...)` next to the status test may be planned
        -- through the claimable-tasks index, reading every claimable task
        WHERE t.ctid = ANY (ARRAY(
                  SELECT t0.ctid
                  FROM unnest(_start_tasks.msg_ids) AS m(id)
                  JOIN pgflow.step_tasks AS t0 ON t0.message_id = m.id))
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

-- _steps_finished does the bookkeeping of many runs in one pass (completes a
-- run in the same UPDATE that counts its last step; wakes workers once per
-- flow): a new signature, so drop the old function; its callers
-- (_step_completed, _skip_steps, _complete_tasks) are replaced below.
DROP FUNCTION pgflow._steps_finished(uuid, text, text[]);

CREATE FUNCTION pgflow._steps_finished(run_ids uuid[], step_slugs text[])
RETURNS uuid[]
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run uuid;
    v_n integer;
    v_remaining integer;
    v_status text;
    v_flow_slug text;
    v_live uuid[] := '{}';
    v_pending uuid[];
    v_wake text[];
    v_event_runs uuid[];
    v_event_steps text[];
    v_event_flows text[];
BEGIN
    IF cardinality(_steps_finished.run_ids) = 0 THEN
        RETURN '{}';
    END IF;
    -- Run by run, in run_id order (the lock order): the row is locked and
    -- read first, then updated by a statement of its own, whose snapshot is
    -- taken after every sibling completion the lock waited for had
    -- committed, so a run's output sees every leaf (in the locking statement
    -- it would still read the old rows).  Single-row statements keep the
    -- plans on the primary key whatever the statistics say.
    FOR v_run, v_n IN
        SELECT f.run_id, count(DISTINCT f.step_slug)::integer
        FROM unnest(_steps_finished.run_ids, _steps_finished.step_slugs) AS f(run_id, step_slug)
        GROUP BY f.run_id
        ORDER BY f.run_id
    LOOP
        SELECT r.remaining_steps, r.status, r.flow_slug INTO v_remaining, v_status, v_flow_slug
        FROM pgflow.runs AS r
        WHERE r.run_id = v_run
        FOR UPDATE;
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        IF v_remaining <> v_n THEN
            UPDATE pgflow.runs AS r
            SET remaining_steps = r.remaining_steps - v_n
            WHERE r.run_id = v_run;
            v_live := v_live || v_run;
        ELSE
            UPDATE pgflow.runs AS r
            SET remaining_steps = 0, status = 'completed', completed_at = now(),
                output = pgflow._run_output(r.run_id)
            WHERE r.run_id = v_run;
            PERFORM pgflow._emit('run:completed', v_flow_slug, v_run, NULL, 'completed');
        END IF;
    END LOOP;

    IF cardinality(v_live) = 0 THEN
        RETURN '{}';
    END IF;

    WITH fin AS (
        SELECT DISTINCT f.run_id, f.step_slug, ss.flow_slug
        FROM unnest(_steps_finished.run_ids, _steps_finished.step_slugs) AS f(run_id, step_slug)
        JOIN pgflow.step_states AS ss ON ss.run_id = f.run_id AND ss.step_slug = f.step_slug
        WHERE f.run_id = ANY (v_live)
    ), waiting AS (
        SELECT fin.run_id, d.step_slug, count(*)::integer AS n,
               bool_and(s.step_type = 'single' AND s.required_input_pattern IS NULL
                        AND s.forbidden_input_pattern IS NULL) AS simple,
               max(coalesce(s.opt_start_delay, 0)) AS start_delay
        FROM fin
        JOIN pgflow.deps AS d ON d.flow_slug = fin.flow_slug AND d.dep_slug = fin.step_slug
        JOIN pgflow.steps AS s ON s.flow_slug = d.flow_slug AND s.step_slug = d.step_slug
        GROUP BY fin.run_id, d.step_slug
    ), updated AS (
        -- no lock is taken first: a step that waits is only ever changed by a
        -- transaction holding its run's row, as this one does
        UPDATE pgflow.step_states AS ss
        SET remaining_deps = ss.remaining_deps - w.n,
            status = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN 'started' ELSE ss.status END,
            started_at = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN now() ELSE ss.started_at END,
            initial_tasks = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN 1 ELSE ss.initial_tasks END,
            remaining_tasks = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN 1 ELSE ss.remaining_tasks END
        FROM waiting AS w
        WHERE ss.run_id = w.run_id AND ss.step_slug = w.step_slug
          AND ss.status = 'created'
        RETURNING ss.run_id, ss.step_slug, ss.flow_slug, ss.status, ss.remaining_deps, w.start_delay
    ), queued AS (
        INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt)
        SELECT u.run_id, u.step_slug, 0, u.flow_slug, now() + make_interval(secs => u.start_delay)
        FROM updated AS u
        WHERE u.status = 'started'
        RETURNING run_id, step_slug, flow_slug, vt <= now() AS ready
    )
    SELECT (SELECT array_agg(DISTINCT u.run_id ORDER BY u.run_id) FROM updated AS u
            WHERE u.status = 'created' AND u.remaining_deps = 0),
           (SELECT array_agg(DISTINCT q.flow_slug) FROM queued AS q WHERE q.ready),
           e.runs, e.steps, e.flows
    INTO v_pending, v_wake, v_event_runs, v_event_steps, v_event_flows
    FROM (
        -- the started steps of flows that send step events
        SELECT array_agg(q.run_id ORDER BY q.run_id, q.step_slug) AS runs,
               array_agg(q.step_slug ORDER BY q.run_id, q.step_slug) AS steps,
               array_agg(q.flow_slug ORDER BY q.run_id, q.step_slug) AS flows
        FROM queued AS q
        JOIN pgflow.flows AS f ON f.flow_slug = q.flow_slug AND f.opt_step_events
    ) AS e;

    IF v_wake IS NOT NULL THEN
        PERFORM pgflow._wake_workers(w) FROM unnest(v_wake) AS w;
    END IF;
    IF v_event_runs IS NOT NULL THEN
        PERFORM pgflow._emit_step(e.flow_slug, e.run_id, e.step_slug, 'started')
        FROM unnest(v_event_runs, v_event_steps, v_event_flows) AS e(run_id, step_slug, flow_slug);
    END IF;
    RETURN coalesce(v_pending, '{}');
END;
$$;

COMMENT ON FUNCTION pgflow._steps_finished(uuid[], text[]) IS
    'after steps completed or were skipped: update their runs and dependents; start simple ones';

REVOKE ALL ON FUNCTION pgflow._steps_finished(uuid[], text[]) FROM PUBLIC;

-- the callers of _steps_finished, as in src/ (220_engine_internals.sql,
-- 340_batch_protocol.sql): _complete_tasks completes a batch's steps, emits
-- their events and runs the bookkeeping of all their runs in one call.
-- _step_completed had one caller left, _complete_step, which now does its
-- two lines itself.
DROP FUNCTION pgflow._step_completed(uuid, text, text);

CREATE OR REPLACE FUNCTION pgflow._skip_steps(run_id uuid, step_slug text, reason text, cascade boolean)
RETURNS text[]
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
    v_targets text[];
    v_skipped text[];
BEGIN
    SELECT ss.flow_slug INTO v_flow_slug
    FROM pgflow.step_states AS ss
    WHERE ss.run_id = _skip_steps.run_id AND ss.step_slug = _skip_steps.step_slug;

    IF cascade THEN
        WITH RECURSIVE downstream(step_slug) AS (
            SELECT _skip_steps.step_slug
            UNION
            SELECT d.step_slug
            FROM pgflow.deps AS d
            JOIN downstream AS ds ON d.dep_slug = ds.step_slug
            WHERE d.flow_slug = v_flow_slug
        )
        SELECT array_agg(ds.step_slug) INTO v_targets FROM downstream AS ds;
    ELSE
        v_targets := ARRAY[_skip_steps.step_slug];
    END IF;

    WITH skipped AS (
        UPDATE pgflow.step_states AS ss
        SET status = 'skipped',
            skip_reason = CASE WHEN ss.step_slug = _skip_steps.step_slug
                               THEN _skip_steps.reason ELSE 'dependency_skipped' END,
            skipped_at = now()
        WHERE ss.run_id = _skip_steps.run_id
          AND ss.step_slug = ANY (v_targets)
          AND ss.status IN ('created', 'started')
        RETURNING ss.step_slug
    )
    SELECT coalesce(array_agg(s.step_slug), '{}') INTO v_skipped FROM skipped AS s;

    UPDATE pgflow.step_tasks AS t
    SET status = 'cancelled'
    WHERE t.run_id = _skip_steps.run_id
      AND t.step_slug = ANY (v_skipped)
      AND t.status IN ('queued', 'started');

    PERFORM pgflow._emit_step(v_flow_slug, _skip_steps.run_id, s, 'skipped')
    FROM unnest(v_skipped) AS s;
    PERFORM pgflow._steps_finished(array_fill(_skip_steps.run_id, ARRAY[cardinality(v_skipped)]),
                                   v_skipped);
    RETURN v_skipped;
END;
$$;

COMMENT ON FUNCTION pgflow._skip_steps(uuid, text, text, boolean) IS
    'skip a step (and with cascade everything downstream of it) and update counters';

CREATE OR REPLACE FUNCTION pgflow._complete_tasks(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                       outputs jsonb[])
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_runs uuid[];
    v_steps text[];
    v_counts integer[];
    v_total integer;
    v_done_runs uuid[];
    v_done_steps text[];
    v_done_flows text[];
    v_run uuid;
BEGIN
    WITH input AS (
        SELECT DISTINCT ON (i.run_id, i.step_slug, i.task_index)
               i.run_id, i.step_slug, i.task_index, i.output
        FROM unnest(_complete_tasks.run_ids, _complete_tasks.step_slugs,
                    _complete_tasks.task_indexes, _complete_tasks.outputs)
             AS i(run_id, step_slug, task_index, output)
        ORDER BY i.run_id, i.step_slug, i.task_index
    ), done AS (
        -- no lock is taken first: the UPDATE takes each row as it meets it,
        -- and a task completed, failed or cancelled meanwhile fails
        -- `status = 'started'` on its latest version and is left alone
        UPDATE pgflow.step_tasks AS t
        SET status = 'completed',
            output = coalesce(i.output, 'null'::jsonb),
            completed_at = now()
        FROM input AS i
        WHERE t.run_id = i.run_id AND t.step_slug = i.step_slug AND t.task_index = i.task_index
          AND t.status = 'started'
        RETURNING t.run_id, t.step_slug
    )
    SELECT array_agg(g.run_id ORDER BY g.run_id, g.step_slug),
           array_agg(g.step_slug ORDER BY g.run_id, g.step_slug),
           array_agg(g.n ORDER BY g.run_id, g.step_slug),
           sum(g.n)
    INTO v_runs, v_steps, v_counts, v_total
    FROM (SELECT d.run_id, d.step_slug, count(*)::integer AS n
          FROM done AS d GROUP BY d.run_id, d.step_slug) AS g;
    IF v_runs IS NULL THEN
        RETURN 0;
    END IF;

    -- Lock the rows of map steps first, in key order, in a statement of their
    -- own: the UPDATE below then runs on a snapshot taken after any sibling
    -- completion it waited for has committed, so a map's aggregate sees the
    -- sibling's task output (in the same statement it would still read NULL).
    -- A single step has one task, whose row lock is held: no other
    -- transaction completes it.
    PERFORM 1
    FROM unnest(v_runs, v_steps) AS c(run_id, step_slug)
    JOIN pgflow.step_states AS ss ON ss.run_id = c.run_id AND ss.step_slug = c.step_slug
    JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE s.step_type = 'map'
    ORDER BY ss.run_id, ss.step_slug
    FOR UPDATE OF ss;

    -- one UPDATE per step: the decrement, and for a step whose last task this
    -- was, its completion with its output (a map's: every task output in
    -- task_index order)
    WITH c AS (
        SELECT * FROM unnest(v_runs, v_steps, v_counts) AS c(run_id, step_slug, n)
    ), dec AS (
        UPDATE pgflow.step_states AS ss
        SET remaining_tasks = ss.remaining_tasks - c.n,
            status = CASE WHEN ss.remaining_tasks = c.n THEN 'completed' ELSE ss.status END,
            completed_at = CASE WHEN ss.remaining_tasks = c.n THEN now() ELSE ss.completed_at END,
            output = CASE
                WHEN ss.remaining_tasks <> c.n THEN ss.output
                WHEN s.step_type = 'map' THEN (
                    SELECT jsonb_agg(t.output ORDER BY t.task_index)
                    FROM pgflow.step_tasks AS t
                    WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug)
                ELSE (
                    SELECT t.output FROM pgflow.step_tasks AS t
                    WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug
                      AND t.task_index = 0)
            END
        FROM c, pgflow.steps AS s
        WHERE ss.run_id = c.run_id AND ss.step_slug = c.step_slug
          AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
        RETURNING ss.run_id, ss.step_slug, ss.flow_slug, ss.remaining_tasks
    )
    SELECT array_agg(d.run_id ORDER BY d.run_id, d.step_slug),
           array_agg(d.step_slug ORDER BY d.run_id, d.step_slug),
           array_agg(d.flow_slug ORDER BY d.run_id, d.step_slug)
    INTO v_done_runs, v_done_steps, v_done_flows
    FROM dec AS d
    WHERE d.remaining_tasks = 0;
    IF v_done_runs IS NULL THEN
        RETURN v_total;
    END IF;

    -- (the join spares the call for flows without step events)
    PERFORM pgflow._emit_step(d.flow_slug, d.run_id, d.step_slug, 'completed')
    FROM unnest(v_done_runs, v_done_steps, v_done_flows) AS d(run_id, step_slug, flow_slug)
    JOIN pgflow.flows AS f ON f.flow_slug = d.flow_slug AND f.opt_step_events;

    -- the runs and the dependents of every step that completed, in one pass
    FOREACH v_run IN ARRAY pgflow._steps_finished(v_done_runs, v_done_steps) LOOP
        PERFORM pgflow._start_ready_steps(v_run);
    END LOOP;
    RETURN v_total;
END;
$$;

COMMENT ON FUNCTION pgflow._complete_tasks(uuid[], text[], integer[], jsonb[]) IS
    'complete started tasks in one transaction and advance their runs; returns how many counted';

-- run ids are time-ordered (version 7) UUIDs: new runs land together in the
-- primary-key indexes of runs, step_states and step_tasks (all led by
-- run_id) instead of on random pages.  Existing ids stay as they are.
CREATE FUNCTION pgflow._uuid_v7()
RETURNS uuid
LANGUAGE plpgsql
VOLATILE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the millisecond timestamp over the first 6 bytes of a version-4 UUID,
    -- then the version nibble 0100 -> 0111 (bits 52 and 53 of byte 6)
    RETURN encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid;
END;
$$;

COMMENT ON FUNCTION pgflow._uuid_v7() IS
    'a new time-ordered (version 7) UUID: the default run_id';

REVOKE ALL ON FUNCTION pgflow._uuid_v7() FROM PUBLIC;

ALTER TABLE pgflow.runs ALTER COLUMN run_id SET DEFAULT pgflow._uuid_v7();

-- start_flow: a run_id not given is pgflow._uuid_v7().
CREATE OR REPLACE FUNCTION pgflow.start_flow(flow_slug text, input jsonb, run_id uuid DEFAULT NULL)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_steps integer;
    v_pending boolean;
    v_started text[];
    v_wake boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', start_flow.flow_slug);
    IF start_flow.input IS NULL THEN
        RAISE EXCEPTION 'input must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass a JSON value, e.g. ''{}''::jsonb';
    END IF;

    SELECT count(s.step_slug) INTO v_steps
    FROM pgflow.flows AS f
    LEFT JOIN pgflow.steps AS s ON s.flow_slug = f.flow_slug
    WHERE f.flow_slug = start_flow.flow_slug
    GROUP BY f.flow_slug;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', start_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'apply the flow''s migration (pgflow-build writes it) before starting runs';
    END IF;

    INSERT INTO pgflow.runs AS r (run_id, flow_slug, input, remaining_steps)
    VALUES (coalesce(start_flow.run_id, pgflow._uuid_v7()), start_flow.flow_slug,
            start_flow.input, v_steps)
    ON CONFLICT ON CONSTRAINT runs_pkey DO NOTHING
    RETURNING * INTO v_run;

    IF v_run.run_id IS NULL THEN
        SELECT * INTO STRICT v_run FROM pgflow.runs AS r WHERE r.run_id = start_flow.run_id;
        IF v_run.flow_slug <> start_flow.flow_slug THEN
            RAISE EXCEPTION 'run % already exists for flow "%", not "%"',
                    start_flow.run_id, v_run.flow_slug, start_flow.flow_slug
                USING ERRCODE = 'unique_violation',
                      HINT = 'pass a new run_id, or NULL to have one generated';
        END IF;
        RETURN v_run;
    END IF;

    -- Root steps that are "simple" (single, no conditions) start right here,
    -- in the same INSERT; maps and conditional roots go through
    -- _start_ready_steps.
    WITH states AS (
        INSERT INTO pgflow.step_states AS ss (run_id, step_slug, flow_slug, remaining_deps, status,
                                              started_at, initial_tasks, remaining_tasks)
        SELECT v_run.run_id, s.step_slug, s.flow_slug, s.deps_count,
               CASE WHEN simple THEN 'started' ELSE 'created' END,
               CASE WHEN simple THEN now() END,
               CASE WHEN simple THEN 1 END,
               CASE WHEN simple THEN 1 END
        FROM pgflow.steps AS s,
             LATERAL (SELECT s.deps_count = 0 AND s.step_type = 'single'
                             AND s.required_input_pattern IS NULL
                             AND s.forbidden_input_pattern IS NULL AS simple) AS k
        WHERE s.flow_slug = start_flow.flow_slug
        RETURNING ss.step_slug, ss.status, ss.remaining_deps
    ), queued AS (
        INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt)
        SELECT v_run.run_id, st.step_slug, 0, start_flow.flow_slug,
               now() + make_interval(secs => coalesce(s.opt_start_delay, 0))
        FROM states AS st
        JOIN pgflow.steps AS s ON s.flow_slug = start_flow.flow_slug AND s.step_slug = st.step_slug
        WHERE st.status = 'started'
        RETURNING step_slug, vt <= now() AS ready
    )
    SELECT (SELECT coalesce(bool_or(st.status = 'created' AND st.remaining_deps = 0), false)
            FROM states AS st),
           (SELECT array_agg(q.step_slug ORDER BY q.step_slug) FROM queued AS q),
           (SELECT coalesce(bool_or(q.ready), false) FROM queued AS q)
    INTO v_pending, v_started, v_wake;

    PERFORM pgflow._emit('run:started', v_run.flow_slug, v_run.run_id, NULL, 'started');
    IF v_started IS NOT NULL
       AND (SELECT f.opt_step_events FROM pgflow.flows AS f WHERE f.flow_slug = start_flow.flow_slug) THEN
        PERFORM pgflow._emit_step(v_run.flow_slug, v_run.run_id, st, 'started')
        FROM unnest(v_started) AS st;
    END IF;
    IF v_wake THEN
        PERFORM pgflow._wake_workers(v_run.flow_slug);
    END IF;
    IF v_steps = 0 THEN
        PERFORM pgflow._complete_run(v_run.run_id);
    ELSIF v_pending THEN
        PERFORM pgflow._start_ready_steps(v_run.run_id);
    END IF;

    SELECT * INTO STRICT v_run FROM pgflow.runs AS r WHERE r.run_id = v_run.run_id;
    RETURN v_run;
END;
$$;

COMMENT ON FUNCTION pgflow.start_flow(text, jsonb, uuid) IS
    'start a run of a flow (idempotent when run_id is given); queues its root steps';

-- _waiting_key and _run_output become PL/pgSQL: a SQL function with a SET
-- clause is never inlined and is planned anew on every call.
CREATE OR REPLACE FUNCTION pgflow._waiting_key(flow_slug text)
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ('x' || left(md5(_waiting_key.flow_slug), 8))::bit(32)::integer;
END;
$$;

COMMENT ON FUNCTION pgflow._waiting_key(text) IS
    'advisory lock objid under which idle workers of a flow wait (classid 1885824631)';

CREATE OR REPLACE FUNCTION pgflow._run_output(run_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
        SELECT coalesce(jsonb_object_agg(ss.step_slug, ss.output), '{}'::jsonb)
        FROM pgflow.step_states AS ss
        WHERE ss.run_id = _run_output.run_id
          AND ss.status = 'completed'
          AND NOT EXISTS (
              SELECT 1 FROM pgflow.deps AS d
              WHERE d.flow_slug = ss.flow_slug AND d.dep_slug = ss.step_slug));
END;
$$;

COMMENT ON FUNCTION pgflow._run_output(uuid) IS
    'the output of a run: {leaf_step: output} over its completed leaf steps';

-- _complete_step: sends its step event and runs _steps_finished itself.
CREATE OR REPLACE FUNCTION pgflow._complete_step(run_id uuid, step_slug text, output jsonb)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
BEGIN
    UPDATE pgflow.step_states AS ss
    SET status = 'completed',
        output = _complete_step.output,
        remaining_tasks = 0,
        completed_at = now()
    WHERE ss.run_id = _complete_step.run_id AND ss.step_slug = _complete_step.step_slug
    RETURNING ss.flow_slug INTO v_flow_slug;
    PERFORM pgflow._emit_step(v_flow_slug, _complete_step.run_id, _complete_step.step_slug,
                              'completed');
    RETURN cardinality(pgflow._steps_finished(ARRAY[_complete_step.run_id],
                                              ARRAY[_complete_step.step_slug])) > 0;
END;
$$;

COMMENT ON FUNCTION pgflow._complete_step(uuid, text, jsonb) IS
    'mark a step completed with its output and update counters; true if steps wait for a start';
