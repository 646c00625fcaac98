-- Engine internals: the state transitions shared by the protocol functions.
--
-- Lock order (deadlock freedom): a task row, then its step_states row, then
-- the runs row, then dependent step_states rows.  Every transaction that
-- touches the step_states of *other* steps holds the runs row first, so
-- completions of sibling steps in one run serialise on the run, and never
-- lock each other's rows in opposite orders.

-- _complete_run: marks a started run completed with output {leaf_step: output}
-- over its completed leaf steps (skipped leaves are absent).
-- Locks: the runs row (already held by the caller).
CREATE FUNCTION pgflow._complete_run(run_id uuid)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
BEGIN
    UPDATE pgflow.runs AS r
    SET status = 'completed',
        completed_at = now(),
        output = pgflow._run_output(r.run_id)
    WHERE r.run_id = _complete_run.run_id AND r.status = 'started'
    RETURNING r.flow_slug INTO v_flow_slug;
    IF FOUND THEN
        PERFORM pgflow._emit('run:completed', v_flow_slug, _complete_run.run_id, NULL, 'completed');
        -- a child run reports to its parent task (nothing for other runs)
        PERFORM pgflow._child_finished(_complete_run.run_id);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._complete_run(uuid) IS
    'mark a run completed with {leaf_step: output} over its completed leaves';

-- _steps_finished: bookkeeping after steps completed or were skipped (their
-- own rows already say so), for any number of runs at once: element i of
-- run_ids and step_slugs is one such step.  In as few row writes as
-- possible: one UPDATE per run (remaining_steps; a run with nothing left is
-- completed by that same UPDATE, with its output) and one UPDATE per
-- dependent that still waits (remaining_deps).  A dependent that waits on
-- nothing any more and starts inline (_inline_steps: a single step without
-- conditions) is started by that same UPDATE and its task queued; the
-- others are left for _start_ready_steps.  Workers are woken once per flow.
-- Returns the runs (in run_id order) that have such a dependent left.
-- Locks: the runs rows (run_id order), then dependent step_states rows
-- (which only a holder of their run's row changes).
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
    v_parent uuid;
    v_children uuid[] := '{}';
    v_priority integer;
    v_priorities integer[] := '{}';
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
        SELECT r.remaining_steps, r.status, r.flow_slug, r.parent_run_id, r.priority
        INTO v_remaining, v_status, v_flow_slug, v_parent, v_priority
        FROM pgflow.runs AS r
        WHERE r.run_id = v_run
        FOR UPDATE;
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        IF v_remaining <> v_n THEN
            UPDATE pgflow.runs AS r
            SET remaining_steps = r.remaining_steps - v_n
            WHERE r.run_id = v_run;
            v_live := v_live || v_run;
            v_priorities := v_priorities || v_priority;
        ELSE
            UPDATE pgflow.runs AS r
            SET remaining_steps = 0, status = 'completed', completed_at = now(),
                output = pgflow._run_output(r.run_id)
            WHERE r.run_id = v_run;
            PERFORM pgflow._emit('run:completed', v_flow_slug, v_run, NULL, 'completed');
            IF v_parent IS NOT NULL THEN
                v_children := v_children || v_run;
            END IF;
        END IF;
    END LOOP;

    IF cardinality(v_live) = 0 THEN
        -- completed child runs report to their parent tasks once this
        -- batch's bookkeeping is done
        PERFORM pgflow._child_finished(c) FROM unnest(v_children) AS c;
        RETURN '{}';
    END IF;

    WITH fin AS (
        SELECT DISTINCT f.run_id, f.step_slug, ss.flow_slug
        FROM unnest(_steps_finished.run_ids, _steps_finished.step_slugs) AS f(run_id, step_slug)
        JOIN pgflow.step_states AS ss ON ss.run_id = f.run_id AND ss.step_slug = f.step_slug
        WHERE f.run_id = ANY (v_live)
    ), waiting AS (
        SELECT fin.run_id, d.step_slug, count(*)::integer AS n,
               bool_and(s.inline) AS simple,
               max(coalesce(s.opt_start_delay, 0)) AS start_delay
        FROM fin
        JOIN pgflow.deps AS d ON d.flow_slug = fin.flow_slug AND d.dep_slug = fin.step_slug
        JOIN pgflow._inline_steps AS s ON s.flow_slug = d.flow_slug AND s.step_slug = d.step_slug
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
        INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority)
        SELECT u.run_id, u.step_slug, 0, u.flow_slug, now() + make_interval(secs => u.start_delay),
               -- the run's priority, read with its row above (mostly all 0)
               CASE WHEN v_priorities <@ '{0}' THEN 0
                    ELSE (SELECT l.priority FROM unnest(v_live, v_priorities) AS l(run_id, priority)
                          WHERE l.run_id = u.run_id) END
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
    PERFORM pgflow._child_finished(c) FROM unnest(v_children) AS c;
    RETURN coalesce(v_pending, '{}');
END;
$$;

COMMENT ON FUNCTION pgflow._steps_finished(uuid[], text[]) IS
    'after steps completed or were skipped: update their runs and dependents; start simple ones';

-- _run_output: {leaf_step: output} over the completed leaf steps of a run
-- (skipped leaves are absent).
CREATE FUNCTION pgflow._run_output(run_id uuid)
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

-- _complete_step: marks a step completed with its output, sends its event
-- (if the flow opted in) and does the run's bookkeeping (_steps_finished).
-- Returns true when a dependent is left for _start_ready_steps, which the
-- caller then runs.
-- Locks: the step_states row, then as _steps_finished.
CREATE FUNCTION pgflow._complete_step(run_id uuid, step_slug text, output jsonb)
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

-- _skip_steps: skips a step (reason given) and, with cascade, every step
-- downstream of it that has not started (reason dependency_skipped).  Tasks of
-- the skipped steps that are still queued or running are cancelled (their late
-- completions change nothing).  Returns the slugs it skipped.  The caller then
-- starts steps that became ready.
-- Locks: the step_states rows, their task rows, then as _steps_finished.
CREATE FUNCTION pgflow._skip_steps(run_id uuid, step_slug text, reason text, cascade boolean)
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
    -- the running child runs of sub-flow tasks just cancelled are cancelled too
    PERFORM pgflow._cancel_children(_skip_steps.run_id, false);

    PERFORM pgflow._emit_step(v_flow_slug, _skip_steps.run_id, s, 'skipped')
    FROM unnest(v_skipped) AS s;
    PERFORM pgflow._steps_finished(array_fill(_skip_steps.run_id, ARRAY[cardinality(v_skipped)]),
                                   v_skipped);
    RETURN v_skipped;
END;
$$;

COMMENT ON FUNCTION pgflow._skip_steps(uuid, text, text, boolean) IS
    'skip a step (and with cascade everything downstream of it) and update counters';

-- _fail_run: fails a started run because of one step: the step becomes
-- failed, the run failed (failed_at, error_message), every queued or running
-- task of the run cancelled and every other started step cancelled, so nothing
-- of the run keeps running and late completions change nothing.
-- Locks: the step_states row, the runs row, the run's open task rows.
CREATE FUNCTION pgflow._fail_run(run_id uuid, step_slug text, error_message text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
BEGIN
    UPDATE pgflow.step_states AS ss
    SET status = 'failed', failed_at = now(), error_message = _fail_run.error_message
    WHERE ss.run_id = _fail_run.run_id
      AND ss.step_slug = _fail_run.step_slug
      AND ss.status IN ('created', 'started');

    UPDATE pgflow.runs AS r
    SET status = 'failed',
        failed_at = now(),
        error_message = format('step "%s" failed: %s', _fail_run.step_slug, _fail_run.error_message)
    WHERE r.run_id = _fail_run.run_id AND r.status = 'started'
    RETURNING r.flow_slug INTO v_flow_slug;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    UPDATE pgflow.step_tasks AS t
    SET status = 'cancelled'
    WHERE t.run_id = _fail_run.run_id AND t.status IN ('queued', 'started');

    UPDATE pgflow.step_states AS ss
    SET status = 'cancelled'
    WHERE ss.run_id = _fail_run.run_id AND ss.status = 'started';

    PERFORM pgflow._emit_step(v_flow_slug, _fail_run.run_id, _fail_run.step_slug, 'failed');
    PERFORM pgflow._emit('run:failed', v_flow_slug, _fail_run.run_id, NULL, 'failed');
    -- its running child runs are cancelled; a child run reports to its parent
    PERFORM pgflow._cancel_children(_fail_run.run_id, false);
    PERFORM pgflow._child_finished(_fail_run.run_id);
END;
$$;

COMMENT ON FUNCTION pgflow._fail_run(uuid, text, text) IS
    'fail a run because of one step and cancel everything of it still open';

-- _start_ready_steps: starts every step of a run that waits on nothing,
-- repeating until none is left, so cascades (skips, empty maps) of any depth
-- resolve in the calling transaction.  For each ready step, in step order:
--   * a map step whose source step was skipped is skipped (dependency_skipped);
--   * conditions are evaluated against {"run": input, "<dep>": output, ...};
--     unmet -> when_unmet (skip, skip-cascade, fail);
--   * a map step over a non-array fails the run; over [] it completes with [];
--   * a wait step gets no task: _start_wait makes it wait for its event
--     (or completes it with a kept one);
--   * a sub-flow step's tasks are created started and never claimable; a
--     child run per task starts after the loop (_start_children);
--   * otherwise its tasks are queued (vt = now() + start_delay) and workers
--     are woken when they are claimable at once; the tasks of a step under a
--     concurrency limit (its own, else its flow's) are queued parked (vt =
--     infinity) with their gate, and the gates are refilled after the loop.
-- Locks: the ready step_states rows (after the runs row, held by the caller
-- or by the bookkeeping it triggers).
CREATE FUNCTION pgflow._start_ready_steps(run_id uuid)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_step record;
    v_input jsonb;
    v_source jsonb;
    v_source_status text;
    v_count integer;
    v_wake boolean := false;
    v_progress boolean;
    v_skipped text[] := '{}';
    v_step_events boolean;
    v_subflow_steps text[] := '{}';
    v_flow_limit integer;
    v_flow_key text[];
    v_gates text[] := '{}';
BEGIN
    SELECT * INTO v_run FROM pgflow.runs AS r WHERE r.run_id = _start_ready_steps.run_id;
    IF v_run.status IS DISTINCT FROM 'started' THEN
        RETURN;
    END IF;
    SELECT f.opt_step_events, f.opt_concurrency, f.opt_concurrency_key
    INTO v_step_events, v_flow_limit, v_flow_key
    FROM pgflow.flows AS f WHERE f.flow_slug = v_run.flow_slug;
    LOOP
        v_progress := false;

        FOR v_step IN
            SELECT ss.step_slug, s.step_type, s.deps_count, s.when_unmet,
                   s.required_input_pattern, s.forbidden_input_pattern,
                   coalesce(s.opt_start_delay, 0) AS start_delay,
                   s.opt_concurrency, s.opt_concurrency_key,
                   EXISTS (SELECT 1 FROM pgflow.step_subflows AS sf
                           WHERE sf.flow_slug = s.flow_slug AND sf.step_slug = s.step_slug) AS subflow
            FROM pgflow.step_states AS ss
            JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            WHERE ss.run_id = _start_ready_steps.run_id
              AND ss.status = 'created'
              AND ss.remaining_deps = 0
            ORDER BY s.step_index
            FOR UPDATE OF ss
        LOOP
            -- an earlier skip-cascade of this round may have skipped this step
            -- (a failed run returns at once, below)
            CONTINUE WHEN v_step.step_slug = ANY (v_skipped);
            v_progress := true;

            IF v_step.step_type = 'map' AND v_step.deps_count = 1 THEN
                SELECT ds.output, ds.status INTO v_source, v_source_status
                FROM pgflow.deps AS d
                JOIN pgflow.step_states AS ds
                  ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                WHERE d.flow_slug = v_run.flow_slug AND d.step_slug = v_step.step_slug;
                IF v_source_status = 'skipped' THEN
                    v_skipped := v_skipped || pgflow._skip_steps(_start_ready_steps.run_id,
                        v_step.step_slug, 'dependency_skipped', false);
                    CONTINUE;
                END IF;
            ELSIF v_step.step_type = 'map' THEN
                v_source := v_run.input;
            END IF;

            IF v_step.required_input_pattern IS NOT NULL
               OR v_step.forbidden_input_pattern IS NOT NULL THEN
                v_input := jsonb_build_object('run', v_run.input) || coalesce((
                    SELECT jsonb_object_agg(d.dep_slug, ds.output)
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = v_run.flow_slug
                      AND d.step_slug = v_step.step_slug
                      AND ds.status = 'completed'), '{}'::jsonb);
                IF NOT (coalesce(v_input @> v_step.required_input_pattern, true)
                        AND NOT coalesce(v_input @> v_step.forbidden_input_pattern, false)) THEN
                    IF v_step.when_unmet = 'fail' THEN
                        PERFORM pgflow._fail_run(_start_ready_steps.run_id, v_step.step_slug,
                            'condition not met (when_unmet = fail)');
                        RETURN;
                    END IF;
                    v_skipped := v_skipped || pgflow._skip_steps(_start_ready_steps.run_id,
                        v_step.step_slug, 'condition_unmet', v_step.when_unmet = 'skip-cascade');
                    CONTINUE;
                END IF;
            END IF;

            IF v_step.step_type = 'wait' THEN
                -- no task: it waits for its event (or consumes a kept one)
                v_input := jsonb_build_object('run', v_run.input) || coalesce((
                    SELECT jsonb_object_agg(d.dep_slug, ds.output)
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = v_run.flow_slug
                      AND d.step_slug = v_step.step_slug
                      AND ds.status = 'completed'), '{}'::jsonb);
                IF pgflow._start_wait(_start_ready_steps.run_id, v_run.flow_slug, v_step.step_slug,
                                      v_input) = 'failed' THEN
                    RETURN;
                END IF;
                CONTINUE;
            END IF;

            IF v_step.step_type = 'map' THEN
                IF jsonb_typeof(v_source) IS DISTINCT FROM 'array' THEN
                    PERFORM pgflow._fail_run(_start_ready_steps.run_id, v_step.step_slug,
                        format('map step "%s" needs an array as input, got %s',
                               v_step.step_slug, coalesce(jsonb_typeof(v_source), 'nothing')));
                    RETURN;
                END IF;
                v_count := jsonb_array_length(v_source);
            ELSE
                v_count := 1;
            END IF;

            UPDATE pgflow.step_states AS ss
            SET status = 'started',
                started_at = now(),
                initial_tasks = v_count,
                remaining_tasks = v_count
            WHERE ss.run_id = _start_ready_steps.run_id AND ss.step_slug = v_step.step_slug;
            IF v_step_events THEN
                PERFORM pgflow._emit_step(v_run.flow_slug, _start_ready_steps.run_id,
                                          v_step.step_slug, 'started');
            END IF;

            IF v_count = 0 THEN
                PERFORM pgflow._complete_step(_start_ready_steps.run_id, v_step.step_slug, '[]'::jsonb);
                CONTINUE;
            END IF;

            IF v_step.subflow THEN
                -- tasks no worker claims; their child runs start after this loop
                PERFORM pgflow._queue_subflow_tasks(_start_ready_steps.run_id, v_run.flow_slug,
                                                    v_step.step_slug, v_count);
                v_subflow_steps := v_subflow_steps || v_step.step_slug;
                CONTINUE;
            END IF;

            IF v_step.opt_concurrency IS NULL AND v_flow_limit IS NULL THEN
                INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority)
                SELECT _start_ready_steps.run_id, v_step.step_slug, i, v_run.flow_slug,
                       now() + make_interval(secs => v_step.start_delay), v_run.priority
                FROM generate_series(0, v_count - 1) AS i;
                v_wake := v_wake OR v_step.start_delay = 0;
                CONTINUE;
            END IF;

            -- gated: parked under its gate until _gate_refill gives it a slot
            v_input := jsonb_build_object('run', v_run.input) || coalesce((
                SELECT jsonb_object_agg(d.dep_slug, ds.output)
                FROM pgflow.deps AS d
                JOIN pgflow.step_states AS ds
                  ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                WHERE d.flow_slug = v_run.flow_slug
                  AND d.step_slug = v_step.step_slug
                  AND ds.status = 'completed'), '{}'::jsonb);
            WITH parked AS (
                INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority,
                                               gate)
                SELECT _start_ready_steps.run_id, v_step.step_slug, i, v_run.flow_slug, 'infinity',
                       v_run.priority,
                       CASE WHEN v_step.opt_concurrency IS NOT NULL
                            THEN pgflow._gate_of(v_step.step_slug, v_step.opt_concurrency_key, v_input,
                                                 CASE WHEN v_step.step_type = 'map' THEN v_source -> i END)
                            ELSE pgflow._gate_of('*', v_flow_key, v_input, NULL) END
                FROM generate_series(0, v_count - 1) AS i
                RETURNING gate
            )
            SELECT v_gates || array_agg(DISTINCT p.gate) INTO v_gates FROM parked AS p;
        END LOOP;

        EXIT WHEN NOT v_progress;
    END LOOP;

    IF v_wake THEN
        PERFORM pgflow._wake_workers(v_run.flow_slug);
    END IF;
    -- the gates of the parked tasks, in one order (lock order of their locks)
    PERFORM pgflow._gate_refill(v_run.flow_slug, g)
    FROM (SELECT DISTINCT g FROM unnest(v_gates) AS g ORDER BY g) AS x;
    -- child runs start once the steps of this run are settled: one that
    -- finishes at once advances this run through the usual paths
    IF cardinality(v_subflow_steps) > 0 THEN
        PERFORM pgflow._start_children(_start_ready_steps.run_id, v_subflow_steps, NULL);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._start_ready_steps(uuid) IS
    'start every step of a run that waits on nothing (conditions, maps, skips), to a fixed point';

-- _exhaust_task: a task ran out of attempts: the task fails and the step's
-- when_exhausted applies: fail (the run fails), skip (the step is skipped with
-- handler_failed, dependents continue) or skip-cascade.
-- Locks: the task row (held by the caller), then as _fail_run / _skip_steps.
CREATE FUNCTION pgflow._exhaust_task(run_id uuid, step_slug text, task_index integer,
                                     error_message text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode text;
BEGIN
    -- a task that something else of this transaction already cancelled (its
    -- run failed because of another task) stays cancelled
    UPDATE pgflow.step_tasks AS t
    SET status = 'failed', failed_at = now(), error_message = _exhaust_task.error_message
    WHERE t.run_id = _exhaust_task.run_id
      AND t.step_slug = _exhaust_task.step_slug
      AND t.task_index = _exhaust_task.task_index
      AND t.status IN ('queued', 'started');
    IF NOT FOUND THEN
        RETURN;
    END IF;

    SELECT s.when_exhausted INTO v_mode
    FROM pgflow.step_states AS ss
    JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE ss.run_id = _exhaust_task.run_id AND ss.step_slug = _exhaust_task.step_slug;

    IF v_mode = 'fail' THEN
        PERFORM pgflow._fail_run(_exhaust_task.run_id, _exhaust_task.step_slug,
                                 _exhaust_task.error_message);
    ELSE
        UPDATE pgflow.step_states AS ss
        SET error_message = _exhaust_task.error_message
        WHERE ss.run_id = _exhaust_task.run_id AND ss.step_slug = _exhaust_task.step_slug;
        PERFORM pgflow._skip_steps(_exhaust_task.run_id, _exhaust_task.step_slug,
                                   'handler_failed', v_mode = 'skip-cascade');
        PERFORM pgflow._start_ready_steps(_exhaust_task.run_id);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._exhaust_task(uuid, text, integer, text) IS
    'fail a task out of attempts and apply its step''s when_exhausted mode';
