-- Sub-flows: a step whose work is a run of another flow.
--
-- A sub-flow step (add_subflow_step, pgflow.step_subflows) has no handler.
-- When it is ready its tasks are created *started*, with vt = 'infinity':
-- the claim functions only take tasks whose vt has passed, so no worker ever
-- sees them.  For each task a child run of the sub-flow starts in the same
-- transaction (_start_children), its input the step's input (a map step's:
-- the task's element); runs.parent_* name the parent run, step, task and
-- attempt.  When a child run finishes, _child_finished reports to the
-- parent task through the paths workers' reports use, fenced by the attempt:
--   * completed: the task completes with the child's output (a map step's
--     output is the array of its children's outputs in element order);
--   * failed: a failed attempt: with attempts left (max_attempts) a new
--     child run starts at once (a new attempt; retry delays do not apply),
--     else the step's when_exhausted applies; a child that failed in the
--     transaction that started it (before any of its tasks ran) is not
--     retried: it would fail the same way;
--   * cancelled: the task fails at once ("was cancelled"; no retry), then
--     when_exhausted.
-- A child run's id is derived from (parent run, step, task, attempt)
-- (_subflow_child_id), so a re-executed transaction never starts two
-- children for one attempt: start_flow's idempotency on run_id returns the
-- first one.
-- Lock order: a child run's rows before its parent's (a finishing child
-- holds its run row when it locks its parent task); cancel_run takes the
-- children first.  Failing or skipping a parent step cancels its running
-- children after the parent's rows are locked: a child finishing at that
-- very moment may then deadlock with it; PostgreSQL aborts one of the two
-- (40P01) and a retry of it succeeds.
-- Depth: a child run is at most 8 sub-flows deep (runs.depth); deeper, the
-- parent task fails without a retry (cycles of sub-flows are refused when
-- they are defined, so only a chain of 9 distinct flows gets there; the limit keeps the
-- nested starts and completions of a chain within PostgreSQL's default
-- max_stack_depth).

-- _subflow_child_id: the run id of the child run of one attempt of a
-- sub-flow task: the md5 of (parent run, step, task, attempt) as a version-3
-- (name-based, MD5) UUID.
CREATE FUNCTION pgflow._subflow_child_id(run_id uuid, step_slug text, task_index integer,
                                         attempt integer)
RETURNS uuid
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- version nibble 0011 (bits 52..55 of byte 6), variant 10 (bits 70, 71)
    RETURN encode(
        set_bit(set_bit(set_bit(set_bit(set_bit(set_bit(
            decode(md5(format('pgflow-subflow:%s:%s:%s:%s', _subflow_child_id.run_id,
                              _subflow_child_id.step_slug, _subflow_child_id.task_index,
                              _subflow_child_id.attempt)), 'hex'),
            52, 1), 53, 1), 54, 0), 55, 0), 70, 0), 71, 1),
        'hex')::uuid;
END;
$$;

COMMENT ON FUNCTION pgflow._subflow_child_id(uuid, text, integer, integer) IS
    'the run id of the child run of one attempt of a sub-flow task (a version-3 UUID)';

-- _subflow_cycle: the cycle a step of flow flow_slug running subflow would
-- close, as the flow names along it (order, payment, order), or NULL.  Flows
-- are nodes by name: a step of any version of a flow that runs any version
-- of another is an edge, so cycles through versions count too.
CREATE FUNCTION pgflow._subflow_cycle(flow_slug text, subflow text)
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parent text;
    v_child text;
    v_path text[];
BEGIN
    SELECT f.flow_name INTO v_parent FROM pgflow.flows AS f WHERE f.flow_slug = _subflow_cycle.flow_slug;
    SELECT f.flow_name INTO v_child FROM pgflow.flows AS f WHERE f.flow_slug = _subflow_cycle.subflow;
    IF v_parent = v_child THEN
        RETURN ARRAY[v_parent, v_child];
    END IF;
    WITH RECURSIVE edges(from_name, to_name) AS (
        SELECT DISTINCT pf.flow_name, cf.flow_name
        FROM pgflow.step_subflows AS sf
        JOIN pgflow.flows AS pf ON pf.flow_slug = sf.flow_slug
        JOIN pgflow.flows AS cf ON cf.flow_slug = sf.subflow
    ), walk(name, path) AS (
        SELECT v_child, ARRAY[v_parent, v_child]
        UNION ALL
        SELECT e.to_name, w.path || e.to_name
        FROM walk AS w
        JOIN edges AS e ON e.from_name = w.name
        WHERE NOT e.to_name = ANY (w.path[2:]) AND w.name <> v_parent
    )
    SELECT w.path INTO v_path FROM walk AS w WHERE w.name = v_parent
    ORDER BY cardinality(w.path) LIMIT 1;
    RETURN v_path;
END;
$$;

COMMENT ON FUNCTION pgflow._subflow_cycle(text, text) IS
    'the cycle of flow names a sub-flow step would close, or NULL';

-- add_subflow_step: adds a step whose work is a run of the flow subflow (a
-- flow name: its current version when the child starts; or one definition,
-- ingest@2).  With map => true the step maps over its input array (the
-- output of its one dependency, else the run input) and starts one child
-- run per element; its output is the array of the children's outputs in
-- element order ([] completes it at once).  Otherwise one child run gets
-- the step's input ({"run": ..., "<dep>": output, ...}) and the step's
-- output is the child run's output ({leaf_step: output}).  max_attempts is
-- how many child runs one task may use up; conditions, when_unmet and
-- when_exhausted are those of add_step.  Timeouts, delays, heartbeats and
-- jitter do not apply (the child's steps have their own).
-- The sub-flow must exist; a step that would close a cycle of sub-flows
-- (a flow running itself, A -> B -> A, through any version) is refused with
-- the cycle in the message.  Idempotent as add_step; a different sub-flow
-- for an existing step is refused.
-- Locks: the sub-flow definitions' advisory key (1885824634, 0), the
-- sub-flow's flows row (KEY SHARE), then as add_step.
-- Errors: 22004 NULL argument; 22023 invalid slug or option; 42704 unknown
-- flow, sub-flow or dependency; 42P17 structure differs from the existing
-- step; 42P17 the step would close a cycle of sub-flows; 55000 the flow
-- already has runs.
CREATE FUNCTION pgflow.add_subflow_step(
    flow_slug text,
    step_slug text,
    subflow text,
    deps_slugs text[] DEFAULT '{}',
    map boolean DEFAULT false,
    max_attempts integer DEFAULT NULL,
    required_input_pattern jsonb DEFAULT NULL,
    forbidden_input_pattern jsonb DEFAULT NULL,
    when_unmet text DEFAULT 'skip',
    when_exhausted text DEFAULT 'fail'
)
RETURNS pgflow.steps
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_step pgflow.steps;
    v_existing text;
    v_cycle text[];
    v_had_step boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', add_subflow_step.flow_slug);
    PERFORM pgflow._check_slug('step slug', add_subflow_step.step_slug);
    IF add_subflow_step.subflow IS NULL OR add_subflow_step.map IS NULL THEN
        RAISE EXCEPTION 'subflow and map must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'name the flow the step runs, e.g. subflow => ''ingest''';
    END IF;
    -- definitions of sub-flow steps serialise, so two of them cannot close
    -- a cycle that neither sees
    PERFORM pg_advisory_xact_lock(1885824634, 0);
    PERFORM 1 FROM pgflow.flows AS f WHERE f.flow_slug = add_subflow_step.subflow FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step "%" of flow "%": sub-flow "%" does not exist',
                add_subflow_step.step_slug, add_subflow_step.flow_slug, left(add_subflow_step.subflow, 200)
            USING ERRCODE = 'undefined_object',
                  HINT = 'create the sub-flow first (a flow name or a definition slug such as ingest@2)';
    END IF;
    IF EXISTS (SELECT 1 FROM pgflow.flows AS f WHERE f.flow_slug = add_subflow_step.flow_slug) THEN
        v_cycle := pgflow._subflow_cycle(add_subflow_step.flow_slug, add_subflow_step.subflow);
        IF v_cycle IS NOT NULL THEN
            RAISE EXCEPTION 'step "%" of flow "%" would close a cycle of sub-flows: %',
                    add_subflow_step.step_slug, add_subflow_step.flow_slug,
                    array_to_string(v_cycle, ' -> ')
                USING ERRCODE = 'invalid_object_definition',
                      HINT = 'a flow cannot run itself, directly or through other flows';
        END IF;
    END IF;
    v_had_step := EXISTS (SELECT 1 FROM pgflow.steps AS s
                          WHERE s.flow_slug = add_subflow_step.flow_slug
                            AND s.step_slug = add_subflow_step.step_slug);

    v_step := pgflow.add_step(
        flow_slug => add_subflow_step.flow_slug,
        step_slug => add_subflow_step.step_slug,
        deps_slugs => add_subflow_step.deps_slugs,
        max_attempts => add_subflow_step.max_attempts,
        step_type => CASE WHEN add_subflow_step.map THEN 'map' ELSE 'single' END,
        required_input_pattern => add_subflow_step.required_input_pattern,
        forbidden_input_pattern => add_subflow_step.forbidden_input_pattern,
        when_unmet => add_subflow_step.when_unmet,
        when_exhausted => add_subflow_step.when_exhausted);

    SELECT sf.subflow INTO v_existing
    FROM pgflow.step_subflows AS sf
    WHERE sf.flow_slug = add_subflow_step.flow_slug AND sf.step_slug = add_subflow_step.step_slug;
    IF v_existing IS NULL AND v_had_step THEN
        RAISE EXCEPTION 'step "%" of flow "%" already exists with a different definition: it is a task step, not a sub-flow step',
                add_subflow_step.step_slug, add_subflow_step.flow_slug
            USING ERRCODE = 'invalid_object_definition',
                  HINT = pgflow._next_version_hint(add_subflow_step.flow_slug,
                                                   'a definition cannot change structure once created');
    ELSIF v_existing IS NULL THEN
        INSERT INTO pgflow.step_subflows (flow_slug, step_slug, subflow)
        VALUES (add_subflow_step.flow_slug, add_subflow_step.step_slug, add_subflow_step.subflow);
    ELSIF v_existing <> add_subflow_step.subflow THEN
        RAISE EXCEPTION 'step "%" of flow "%" already exists with a different definition: it runs sub-flow %, not %',
                add_subflow_step.step_slug, add_subflow_step.flow_slug, v_existing, add_subflow_step.subflow
            USING ERRCODE = 'invalid_object_definition',
                  HINT = pgflow._next_version_hint(add_subflow_step.flow_slug,
                                                   'a definition cannot change structure once created');
    END IF;
    RETURN v_step;
END;
$$;

COMMENT ON FUNCTION pgflow.add_subflow_step(text, text, text, text[], boolean, integer, jsonb, jsonb, text, text) IS
    'add a step whose work is a run of another flow (map => true: one child run per element)';

-- _queue_subflow_tasks: creates the n tasks of a ready sub-flow step
-- (_start_ready_steps): started in their first attempt, never claimable
-- (vt = infinity); _start_children then starts their child runs.
CREATE FUNCTION pgflow._queue_subflow_tasks(run_id uuid, flow_slug text, step_slug text, n integer)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, status, attempts_count,
                                   vt, started_at)
    SELECT _queue_subflow_tasks.run_id, _queue_subflow_tasks.step_slug, i,
           _queue_subflow_tasks.flow_slug, 'started', 1, 'infinity', now()
    FROM generate_series(0, _queue_subflow_tasks.n - 1) AS i;
END;
$$;

COMMENT ON FUNCTION pgflow._queue_subflow_tasks(uuid, text, text, integer) IS
    'create the started, unclaimable tasks of a ready sub-flow step';

-- _start_children: starts a child run for every started task of the given
-- sub-flow steps of a run (only task task_index when given) in its current
-- attempt, unless that attempt's child exists (its id is derived from the
-- attempt).  A task whose child would be more than 8 sub-flows deep fails
-- without a retry (when_exhausted applies).  A child that finishes at once
-- reports to its task before the next one starts; a task the run cancelled
-- meanwhile (it failed) gets no child.
-- Locks: the new child runs' rows; then as _child_finished for those that
-- finish at once.
CREATE FUNCTION pgflow._start_children(run_id uuid, step_slugs text[], task_index integer)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_task record;
    v_step text;
    v_input jsonb;
    v_source jsonb;
    v_slug text;
    v_steps integer;
BEGIN
    SELECT * INTO v_run FROM pgflow.runs AS r WHERE r.run_id = _start_children.run_id;
    FOR v_task IN
        SELECT t.step_slug, t.task_index, t.attempts_count, sf.subflow, s.step_type, s.deps_count
        FROM pgflow.step_tasks AS t
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.step_subflows AS sf ON sf.flow_slug = t.flow_slug AND sf.step_slug = t.step_slug
        WHERE t.run_id = _start_children.run_id
          AND t.step_slug = ANY (_start_children.step_slugs)
          AND (_start_children.task_index IS NULL OR t.task_index = _start_children.task_index)
          AND t.status = 'started'
        ORDER BY t.step_slug, t.task_index
    LOOP
        -- an earlier child of this loop may have finished at once and failed the run
        PERFORM 1 FROM pgflow.step_tasks AS t
        WHERE t.run_id = _start_children.run_id AND t.step_slug = v_task.step_slug
          AND t.task_index = v_task.task_index AND t.status = 'started'
          AND t.attempts_count = v_task.attempts_count;
        CONTINUE WHEN NOT FOUND;
        IF v_run.depth >= 8 THEN
            PERFORM pgflow._exhaust_task(_start_children.run_id, v_task.step_slug, v_task.task_index,
                format('sub-flow "%s" not started: run %s is already 8 sub-flows deep (the limit)',
                       v_task.subflow, _start_children.run_id));
            CONTINUE;
        END IF;
        IF v_step IS DISTINCT FROM v_task.step_slug THEN
            -- the step's input (or a map's array), read once per step
            v_step := v_task.step_slug;
            IF v_task.step_type = 'map' THEN
                IF v_task.deps_count = 0 THEN
                    v_source := v_run.input;
                ELSE
                    SELECT ds.output INTO v_source
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = _start_children.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = v_run.flow_slug AND d.step_slug = v_step;
                END IF;
                -- an in-memory copy: picking element i of it is cheap
                v_source := v_source || '[]'::jsonb;
            ELSE
                v_source := jsonb_build_object('run', v_run.input) || coalesce((
                    SELECT jsonb_object_agg(d.dep_slug, ds.output)
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = _start_children.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = v_run.flow_slug AND d.step_slug = v_step
                      AND ds.status = 'completed'), '{}'::jsonb);
            END IF;
            v_slug := pgflow._resolve_flow(v_task.subflow, NULL);
            SELECT count(*) INTO v_steps FROM pgflow.steps AS s WHERE s.flow_slug = v_slug;
        END IF;
        v_input := CASE WHEN v_task.step_type = 'map' THEN v_source -> v_task.task_index
                        ELSE v_source END;
        PERFORM pgflow._start_run(v_slug, v_steps, v_task.subflow, v_input,
                                  pgflow._subflow_child_id(_start_children.run_id, v_task.step_slug,
                                                           v_task.task_index, v_task.attempts_count),
                                  _start_children.run_id, v_task.step_slug, v_task.task_index,
                                  v_task.attempts_count, v_run.depth + 1,
                                  -- a child runs at its parent's priority, in its trace
                                  v_run.priority, v_run.trace_context);
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow._start_children(uuid, text[], integer) IS
    'start the child runs of started sub-flow tasks of a run (one per task and attempt)';

-- _child_finished: a run finished (completed, failed, cancelled): when it
-- is a child run whose parent task is still started in the child's
-- attempt, the task completes with the child's output, or its attempt
-- fails (a new child with attempts left, else when_exhausted), or, for a
-- cancelled child, it fails at once.  Anything else (not a child, a parent
-- task already finished, cancelled or in a later attempt) changes nothing.
-- Locks: the parent task row, then as complete_task / _exhaust_task.
CREATE FUNCTION pgflow._child_finished(run_id uuid)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_child pgflow.runs;
    v_task record;
    v_message text;
BEGIN
    SELECT * INTO v_child FROM pgflow.runs AS r WHERE r.run_id = _child_finished.run_id;
    IF v_child.parent_run_id IS NULL OR v_child.status = 'started' THEN
        RETURN;
    END IF;
    SELECT t.attempts_count - t.retried_attempts AS attempt_in_budget,
           coalesce(s.opt_max_attempts, f.opt_max_attempts) AS max_attempts
    INTO v_task
    FROM pgflow.step_tasks AS t
    JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
    WHERE t.run_id = v_child.parent_run_id AND t.step_slug = v_child.parent_step_slug
      AND t.task_index = v_child.parent_task_index
      AND t.status = 'started' AND t.attempts_count = v_child.parent_attempt
    FOR UPDATE OF t;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF v_child.status = 'completed' THEN
        PERFORM pgflow._complete_tasks(ARRAY[v_child.parent_run_id], ARRAY[v_child.parent_step_slug],
                                       ARRAY[v_child.parent_task_index], ARRAY[v_child.output],
                                       ARRAY[v_child.parent_attempt]);
        RETURN;
    END IF;

    v_message := CASE v_child.status
        WHEN 'failed' THEN format('sub-flow run %s (%s) failed: %s', v_child.run_id,
                                  v_child.flow_slug, coalesce(v_child.error_message, 'unknown error'))
        ELSE format('sub-flow run %s (%s) was cancelled', v_child.run_id, v_child.flow_slug)
    END;
    -- a child that failed in the transaction that started it (a map over a
    -- non-array, a condition with when_unmet = fail, the depth limit) would
    -- fail the same way again: no retry then
    IF v_child.status = 'failed' AND v_task.attempt_in_budget < v_task.max_attempts
       AND v_child.started_at < now() THEN
        UPDATE pgflow.step_tasks AS t
        SET attempts_count = t.attempts_count + 1,
            error_message = v_message,
            started_at = now()
        WHERE t.run_id = v_child.parent_run_id AND t.step_slug = v_child.parent_step_slug
          AND t.task_index = v_child.parent_task_index;
        PERFORM pgflow._start_children(v_child.parent_run_id, ARRAY[v_child.parent_step_slug],
                                       v_child.parent_task_index);
    ELSE
        PERFORM pgflow._exhaust_task(v_child.parent_run_id, v_child.parent_step_slug,
                                     v_child.parent_task_index, v_message);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._child_finished(uuid) IS
    'a finished child run completes or fails its parent task (fenced by attempt); others: nothing';

-- _cancel_children: cancels the running child runs of a run (and theirs):
-- with all_children every one, else those whose parent task is no longer
-- started (cancelled with a failed or skipped step).  The parent is not
-- told: it is the one cancelling.
-- Locks: as cancel_run, for each child in run_id order.
CREATE FUNCTION pgflow._cancel_children(run_id uuid, all_children boolean)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_child uuid;
BEGIN
    FOR v_child IN
        SELECT c.run_id
        FROM pgflow.runs AS c
        JOIN pgflow.step_tasks AS t
          ON t.run_id = c.parent_run_id AND t.step_slug = c.parent_step_slug
         AND t.task_index = c.parent_task_index
        WHERE c.parent_run_id = _cancel_children.run_id
          AND c.status = 'started'
          AND (_cancel_children.all_children OR t.status <> 'started')
        ORDER BY c.run_id
    LOOP
        PERFORM pgflow._cancel_run(v_child, false);
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow._cancel_children(uuid, boolean) IS
    'cancel the running child runs of a run (all, or those whose parent task is no longer started)';

-- _restart_subflow_tasks: the sub-flow tasks retry_run re-queued are
-- started again in a new attempt, each with a new child run.
-- Locks: those task rows (already held by retry_run), then as _start_children.
CREATE FUNCTION pgflow._restart_subflow_tasks(run_id uuid)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_steps text[];
BEGIN
    WITH restarted AS (
        UPDATE pgflow.step_tasks AS t
        SET status = 'started', attempts_count = t.attempts_count + 1, started_at = now(),
            vt = 'infinity'
        FROM pgflow.step_subflows AS sf
        WHERE t.run_id = _restart_subflow_tasks.run_id AND t.status = 'queued'
          AND sf.flow_slug = t.flow_slug AND sf.step_slug = t.step_slug
        RETURNING t.step_slug
    )
    SELECT array_agg(DISTINCT r.step_slug) INTO v_steps FROM restarted AS r;
    IF v_steps IS NOT NULL THEN
        PERFORM pgflow._start_children(_restart_subflow_tasks.run_id, v_steps, NULL);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._restart_subflow_tasks(uuid) IS
    'start the sub-flow tasks retry_run re-queued again, each with a new child run';

-- _refuse_subflow_reports: a task of a sub-flow step is reported by its
-- child run (_child_finished), never by hand: complete_task(s) and
-- fail_task(s) (named by caller) call this first and it raises when one of
-- the named tasks belongs to a sub-flow step (of any status: no worker ever
-- claims one, so no late report of a worker is refused).  One statement: a
-- primary-key probe of runs per task, against the (small) step_subflows.
-- Locks: none.
-- Errors: 55000 a task of a sub-flow step.
CREATE FUNCTION pgflow._refuse_subflow_reports(caller text, run_ids uuid[], step_slugs text[])
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hit record;
BEGIN
    SELECT c.run_id, c.step_slug, sf.subflow
    INTO v_hit
    FROM unnest(_refuse_subflow_reports.run_ids, _refuse_subflow_reports.step_slugs)
         AS c(run_id, step_slug)
    -- (a subquery, not a join with runs: a join could be planned, on tables
    -- without statistics, as a scan of every run)
    JOIN pgflow.step_subflows AS sf
      ON sf.step_slug = c.step_slug
     AND sf.flow_slug = (SELECT r.flow_slug FROM pgflow.runs AS r WHERE r.run_id = c.run_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: step "%" of run % is a sub-flow step (it runs flow "%"): its tasks are not reported by hand',
                _refuse_subflow_reports.caller, v_hit.step_slug, v_hit.run_id, v_hit.subflow
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'its child run reports it; cancel_run the child or the parent instead';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._refuse_subflow_reports(text, uuid[], text[]) IS
    'raise 55000 when a hand report (complete_task(s), fail_task(s)) names a task of a sub-flow step';
