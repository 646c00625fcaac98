-- _start_run: the body of start_flow once the definition is resolved
-- (flow_slug: the definition, steps: its number of steps, requested: the
-- reference the caller gave, for messages).  A child run of a sub-flow step
-- (_start_children) passes its parent task and attempt and its depth; the
-- link is in the runs row from its INSERT on, so a child that finishes at
-- once (no steps, every step skipped) reports to its parent like any other.
-- Locks: as start_flow.
CREATE FUNCTION pgflow._start_run(flow_slug text, steps integer, requested text, input jsonb,
                                  run_id uuid, parent_run_id uuid, parent_step_slug text,
                                  parent_task_index integer, parent_attempt integer,
                                  depth integer, priority integer, trace_context text)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_steps integer := _start_run.steps;
    v_pending boolean;
    v_started text[];
    v_wake boolean;
    v_slug text := _start_run.flow_slug;
BEGIN
    INSERT INTO pgflow.runs AS r (run_id, flow_slug, input, remaining_steps, parent_run_id,
                                  parent_step_slug, parent_task_index, parent_attempt, depth,
                                  priority, trace_context)
    VALUES (coalesce(_start_run.run_id, pgflow._uuid_v7()), v_slug,
            _start_run.input, v_steps, _start_run.parent_run_id, _start_run.parent_step_slug,
            _start_run.parent_task_index, _start_run.parent_attempt, _start_run.depth,
            _start_run.priority, _start_run.trace_context)
    ON CONFLICT ON CONSTRAINT runs_pkey DO NOTHING
    RETURNING * INTO v_run;

    IF v_run.run_id IS NULL THEN
        SELECT * INTO STRICT v_run FROM pgflow.runs AS r WHERE r.run_id = _start_run.run_id;
        IF split_part(v_run.flow_slug, '@', 1) <> split_part(v_slug, '@', 1) THEN
            RAISE EXCEPTION 'run % already exists for flow "%", not "%"',
                    _start_run.run_id, v_run.flow_slug, _start_run.requested
                USING ERRCODE = 'unique_violation',
                      HINT = 'pass a new run_id, or NULL to have one generated';
        END IF;
        RETURN v_run;
    END IF;

    -- the first run with a priority makes claims of the flow look through
    -- priority levels (the row lock does not conflict with the KEY SHARE
    -- locks of concurrent starts)
    IF _start_run.priority <> 0 THEN
        UPDATE pgflow.flows AS f SET prioritized = true
        WHERE f.flow_slug = v_slug AND NOT f.prioritized;
    END IF;

    -- Root steps that start inline (_inline_steps: single, no conditions)
    -- start right here, in the same INSERT; maps, conditional roots and the
    -- like go through _start_ready_steps.
    WITH states AS (
        INSERT INTO pgflow.step_states AS ss (run_id, step_slug, flow_slug, remaining_deps, status,
                                              started_at, initial_tasks, remaining_tasks)
        SELECT v_run.run_id, s.step_slug, s.flow_slug, s.deps_count,
               CASE WHEN k.simple THEN 'started' ELSE 'created' END,
               CASE WHEN k.simple THEN now() END,
               CASE WHEN k.simple THEN 1 END,
               CASE WHEN k.simple THEN 1 END
        FROM pgflow._inline_steps AS s,
             LATERAL (SELECT s.deps_count = 0 AND s.inline AS simple) AS k
        WHERE s.flow_slug = v_slug
        RETURNING ss.step_slug, ss.status, ss.remaining_deps
    ), queued AS (
        INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority)
        SELECT v_run.run_id, st.step_slug, 0, v_slug,
               now() + make_interval(secs => coalesce(s.opt_start_delay, 0)), v_run.priority
        FROM states AS st
        JOIN pgflow.steps AS s ON s.flow_slug = v_slug AND s.step_slug = st.step_slug
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
       AND (SELECT f.opt_step_events FROM pgflow.flows AS f WHERE f.flow_slug = v_slug) THEN
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


COMMENT ON FUNCTION pgflow._start_run(text, integer, text, jsonb, uuid, uuid, text, integer, integer, integer, integer, text) IS
    'create a run of a resolved definition (a child run: with its parent task) and start its root steps';

-- _check_start: the checks of start_flow's and start_flows' common
-- arguments.  Errors: 22004 NULL flow_slug or priority; 22023 invalid slug,
-- version or trace_context.
CREATE FUNCTION pgflow._check_start(flow_slug text, version integer, priority integer,
                                    trace_context text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._check_slug('flow slug', _check_start.flow_slug);
    PERFORM pgflow._check_option('version', _check_start.version, 1, true);
    IF _check_start.priority IS NULL THEN
        RAISE EXCEPTION 'priority must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass an integer (higher first), or leave it out for the default 0';
    END IF;
    PERFORM pgflow._check_trace_context(_check_start.trace_context);
END;
$$;

COMMENT ON FUNCTION pgflow._check_start(text, integer, integer, text) IS
    'refuse a NULL or invalid flow slug, version, priority or trace context of a start';

-- _start_definition: the definition a start of flow_slug (and version)
-- starts, with its number of steps.  Errors: 42704 unknown flow or version.
CREATE FUNCTION pgflow._start_definition(flow_slug text, version integer,
                                         OUT slug text, OUT steps integer)
RETURNS record
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    slug := pgflow._resolve_flow(_start_definition.flow_slug, _start_definition.version);
    IF slug IS NULL AND _start_definition.version IS NOT NULL
       AND EXISTS (SELECT 1 FROM pgflow.flows AS f
                   WHERE f.flow_name = split_part(_start_definition.flow_slug, '@', 1)) THEN
        RAISE EXCEPTION 'flow "%" has no version %', _start_definition.flow_slug,
                _start_definition.version
            USING ERRCODE = 'undefined_object',
                  HINT = 'pgflow.list_flows() lists the versions; apply the version''s migration first';
    END IF;
    slug := coalesce(slug, _start_definition.flow_slug);

    SELECT count(s.step_slug) INTO steps
    FROM pgflow.flows AS f
    LEFT JOIN pgflow.steps AS s ON s.flow_slug = f.flow_slug
    WHERE f.flow_slug = slug
    GROUP BY f.flow_slug;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', _start_definition.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'apply the flow''s migration (pgflow-build writes it) before starting runs';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._start_definition(text, integer) IS
    'the definition (and its number of steps) a start of a flow name or slug starts';

-- start_flow: starts a run of a flow with the given input: creates the run
-- (remaining_steps = number of steps), one step_states row per step, and
-- starts the root steps (their tasks become claimable and workers are woken).
-- With run_id given, the call is idempotent: an existing run of the same flow
-- (any version of it) is returned unchanged.
-- flow_slug names a flow (its current version starts: the pinned one, else
-- the highest), or one definition (order@3); version picks a version of a
-- flow name.  The run keeps the definition it started with.
-- priority (default 0, higher first): claims take higher-priority runs'
-- tasks first, then the oldest (see 225_priorities.sql); trace_context: a
-- W3C traceparent whose trace the run's task spans join (NULL: none).  An
-- existing run returned for its run_id keeps its own priority and context.
-- Locks: the new runs row (and the flows row KEY SHARE through the foreign key).
-- Errors: 22004 NULL flow_slug, input or priority; 22023 invalid slug,
-- version or trace_context; 42704 unknown flow or version; 23505 run_id
-- already used by a run of another flow.
CREATE FUNCTION pgflow.start_flow(flow_slug text, input jsonb, run_id uuid DEFAULT NULL,
                                  version integer DEFAULT NULL, priority integer DEFAULT 0,
                                  trace_context text DEFAULT NULL)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_steps integer;
    v_slug text;
BEGIN
    PERFORM pgflow._check_start(start_flow.flow_slug, start_flow.version, start_flow.priority,
                                start_flow.trace_context);
    IF start_flow.input IS NULL THEN
        RAISE EXCEPTION 'input must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass a JSON value, e.g. ''{}''::jsonb';
    END IF;

    SELECT d.slug, d.steps INTO v_slug, v_steps
    FROM pgflow._start_definition(start_flow.flow_slug, start_flow.version) AS d;

    RETURN pgflow._start_run(v_slug, v_steps, start_flow.flow_slug, start_flow.input,
                             start_flow.run_id, NULL, NULL, NULL, NULL, 0, start_flow.priority,
                             start_flow.trace_context);
END;
$$;

COMMENT ON FUNCTION pgflow.start_flow(text, jsonb, uuid, integer, integer, text) IS
    'start a run of a flow''s current (or given) version (idempotent with run_id), with a priority and trace context; queues its root steps';

-- start_flows: starts one run of a flow per element of inputs, in one
-- transaction and set-based (one INSERT per table for the whole batch): the
-- same runs start_flow would start one call at a time, for imports and
-- fan-outs from an application.  run_ids (NULL, or as many as inputs; an
-- element may be NULL) makes each start idempotent like start_flow's run_id:
-- an existing run of the same flow is returned unchanged, and an id given
-- twice starts one run.  Returns one row per element of inputs, in their
-- order.  The root steps that need more than a task (maps, conditions,
-- sub-flows, concurrency limits) start run by run, as start_flow starts them.
-- version, priority and trace_context: as start_flow's, for every run.
-- Locks: the new runs' rows (and the flows row KEY SHARE), as start_flow.
-- Errors: as start_flow; 22004 NULL inputs or a NULL element of inputs;
-- 22023 run_ids not as long as inputs, or a multi-dimensional array.
CREATE FUNCTION pgflow.start_flows(flow_slug text, inputs jsonb[], run_ids uuid[] DEFAULT NULL,
                                   version integer DEFAULT NULL, priority integer DEFAULT 0,
                                   trace_context text DEFAULT NULL)
RETURNS SETOF pgflow.runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_steps integer;
    v_slug text;
    v_ids uuid[];
    v_new uuid[];
    v_other pgflow.runs;
    v_pending uuid[];
    v_started_runs uuid[];
    v_started_steps text[];
    v_wake boolean;
    v_run uuid;
    v_at integer;
BEGIN
    PERFORM pgflow._check_start(start_flows.flow_slug, start_flows.version, start_flows.priority,
                                start_flows.trace_context);
    IF start_flows.inputs IS NULL THEN
        RAISE EXCEPTION 'inputs must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass an array of JSON values, one per run, e.g. ARRAY[''{}'']::jsonb[]';
    END IF;
    IF array_ndims(start_flows.inputs) > 1 OR array_ndims(start_flows.run_ids) > 1 THEN
        RAISE EXCEPTION 'inputs and run_ids must be one-dimensional arrays'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass one element per run';
    END IF;
    v_at := array_position(start_flows.inputs, NULL);
    IF v_at IS NOT NULL THEN
        RAISE EXCEPTION 'inputs[%] is NULL', v_at
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'every run needs a JSON value as its input, e.g. ''{}''::jsonb';
    END IF;
    IF start_flows.run_ids IS NOT NULL
       AND cardinality(start_flows.run_ids) <> cardinality(start_flows.inputs) THEN
        RAISE EXCEPTION 'run_ids has % elements, inputs has %',
                cardinality(start_flows.run_ids), cardinality(start_flows.inputs)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass one run id per input (NULL elements get a new id), or NULL for all';
    END IF;

    SELECT d.slug, d.steps INTO v_slug, v_steps
    FROM pgflow._start_definition(start_flows.flow_slug, start_flows.version) AS d;
    IF cardinality(start_flows.inputs) = 0 THEN
        RETURN;
    END IF;

    -- the runs, in the order of inputs; v_new: those this call created
    WITH req AS MATERIALIZED (
        SELECT coalesce(u.run_id, pgflow._uuid_v7()) AS run_id, u.input, u.ord
        FROM unnest(start_flows.inputs, start_flows.run_ids) WITH ORDINALITY AS u(input, run_id, ord)
    ), created AS (
        INSERT INTO pgflow.runs AS r (run_id, flow_slug, input, remaining_steps, priority,
                                      trace_context)
        SELECT req.run_id, v_slug, req.input, v_steps, start_flows.priority,
               start_flows.trace_context
        FROM req
        ORDER BY req.ord
        ON CONFLICT ON CONSTRAINT runs_pkey DO NOTHING
        RETURNING r.run_id
    )
    SELECT (SELECT array_agg(req.run_id ORDER BY req.ord) FROM req),
           (SELECT coalesce(array_agg(c.run_id), '{}') FROM created AS c)
    INTO v_ids, v_new;

    IF cardinality(v_new) < cardinality(v_ids) THEN
        SELECT r.* INTO v_other
        FROM (SELECT unnest(v_ids) EXCEPT SELECT unnest(v_new)) AS old(run_id)
        JOIN pgflow.runs AS r ON r.run_id = old.run_id
        WHERE split_part(r.flow_slug, '@', 1) <> split_part(v_slug, '@', 1)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'run % already exists for flow "%", not "%"',
                    v_other.run_id, v_other.flow_slug, start_flows.flow_slug
                USING ERRCODE = 'unique_violation',
                      HINT = 'pass new run_ids, or NULL elements to have them generated';
        END IF;
    END IF;
    -- a batch of existing runs only returns them
    IF cardinality(v_new) > 0 THEN
        IF start_flows.priority <> 0 THEN
            UPDATE pgflow.flows AS f SET prioritized = true
            WHERE f.flow_slug = v_slug AND NOT f.prioritized;
        END IF;

        -- every run's step states, and the tasks of its simple root steps, as
        -- _start_run creates them for one run
        WITH kinds AS MATERIALIZED (
            SELECT s.step_slug, s.deps_count, s.opt_start_delay, s.deps_count = 0 AND s.inline AS simple
            FROM pgflow._inline_steps AS s
            WHERE s.flow_slug = v_slug
        ), states AS (
            INSERT INTO pgflow.step_states AS ss (run_id, step_slug, flow_slug, remaining_deps, status,
                                                  started_at, initial_tasks, remaining_tasks)
            SELECT n.run_id, k.step_slug, v_slug, k.deps_count,
                   CASE WHEN k.simple THEN 'started' ELSE 'created' END,
                   CASE WHEN k.simple THEN now() END,
                   CASE WHEN k.simple THEN 1 END,
                   CASE WHEN k.simple THEN 1 END
            FROM unnest(v_new) WITH ORDINALITY AS n(run_id, ord)
            CROSS JOIN kinds AS k
            ORDER BY n.ord, k.step_slug
            RETURNING ss.run_id, ss.step_slug, ss.status, ss.remaining_deps
        ), queued AS (
            INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority)
            SELECT st.run_id, st.step_slug, 0, v_slug,
                   now() + make_interval(secs => coalesce(k.opt_start_delay, 0)), start_flows.priority
            FROM states AS st
            JOIN kinds AS k ON k.step_slug = st.step_slug
            WHERE st.status = 'started'
            RETURNING step_tasks.run_id, step_tasks.step_slug, vt <= now() AS ready
        )
        SELECT (SELECT array_agg(DISTINCT st.run_id) FROM states AS st
                WHERE st.status = 'created' AND st.remaining_deps = 0),
               (SELECT array_agg(q.run_id ORDER BY q.run_id, q.step_slug) FROM queued AS q),
               (SELECT array_agg(q.step_slug ORDER BY q.run_id, q.step_slug) FROM queued AS q),
               (SELECT coalesce(bool_or(q.ready), false) FROM queued AS q)
        INTO v_pending, v_started_runs, v_started_steps, v_wake;

        -- events only while someone subscribes (as _emit decides; once for the batch)
        IF pgflow._events_wanted() THEN
            PERFORM pgflow._emit('run:started', v_slug, n.run_id, NULL, 'started')
            FROM unnest(v_new) WITH ORDINALITY AS n(run_id, ord) ORDER BY n.ord;
            IF (SELECT f.opt_step_events FROM pgflow.flows AS f WHERE f.flow_slug = v_slug) THEN
                PERFORM pgflow._emit_step(v_slug, e.run_id, e.step_slug, 'started')
                FROM unnest(v_started_runs, v_started_steps) AS e(run_id, step_slug);
            END IF;
        END IF;
        IF v_wake THEN
            PERFORM pgflow._wake_workers(v_slug);
        END IF;
        IF v_steps = 0 THEN
            FOREACH v_run IN ARRAY v_new LOOP
                PERFORM pgflow._complete_run(v_run);
            END LOOP;
        ELSIF v_pending IS NOT NULL THEN
            FOREACH v_run IN ARRAY v_pending LOOP
                PERFORM pgflow._start_ready_steps(v_run);
            END LOOP;
        END IF;
    END IF;

    RETURN QUERY
        SELECT r.* FROM unnest(v_ids) WITH ORDINALITY AS i(run_id, ord)
        JOIN pgflow.runs AS r ON r.run_id = i.run_id
        ORDER BY i.ord;
END;
$$;

COMMENT ON FUNCTION pgflow.start_flows(text, jsonb[], uuid[], integer, integer, text) IS
    'start one run of a flow per input in one set-based transaction (idempotent per run id); the runs in input order';
