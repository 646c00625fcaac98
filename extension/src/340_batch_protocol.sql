-- Batch forms of the worker protocol.  A commit per task is the cost that
-- dominates a busy worker (each one waits for a WAL flush), so:
--   claim_tasks    = read_with_poll + start_tasks in one statement set;
--   complete_tasks = complete_task for many tasks in one transaction.
-- Both keep the single-call semantics exactly; complete_task is
-- complete_tasks of one task.

-- _expire_lease: fails a leased task whose attempts are used up (its lease
-- expired on the last attempt): when_exhausted applies.
-- Locks: the task row (held by the caller), then as _exhaust_task.
CREATE FUNCTION pgflow._expire_lease(message_id bigint)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_task record;
BEGIN
    SELECT t.run_id, t.step_slug, t.task_index, t.attempts_count, t.last_worker_id,
           coalesce(s.opt_timeout, f.opt_timeout) AS timeout
    INTO v_task
    FROM pgflow.step_tasks AS t
    JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
    WHERE t.message_id = _expire_lease.message_id;
    PERFORM pgflow._exhaust_task(v_task.run_id, v_task.step_slug, v_task.task_index,
        format('lease expired on the last attempt (%s): worker %s stopped or the handler ran past the %s s timeout',
               v_task.attempts_count, coalesce(v_task.last_worker_id::text, 'unknown'),
               v_task.timeout));
END;
$$;

COMMENT ON FUNCTION pgflow._expire_lease(bigint) IS
    'fail a task whose lease expired on its last attempt (when_exhausted applies)';

-- claim_tasks: leases and starts up to qty claimable tasks of a flow in one
-- call (what read_with_poll followed by start_tasks does in two): queued
-- tasks whose vt has passed and started tasks whose lease expired, oldest
-- first; each is started with its attempt counted, its claim counted in
-- read_ct (as read_with_poll counts it) and a lease of the step timeout + 2 s
-- (heartbeat + 2 s with a heartbeat).  Tasks out of attempts are failed
-- instead of returned.  A paused flow (pause_flow) has nothing claimable.
-- Higher-priority runs' tasks first (start_flow's priority), then the oldest.
-- Generic plans only (plan_cache_mode): the claim of a flow without
-- priority levels was otherwise re-planned on every call, which took four
-- times as long as running it.
-- Locks: the claimed task rows (FOR UPDATE SKIP LOCKED: concurrent claimers
-- never wait for each other nor get the same task).
-- Errors: 22004 NULL argument; 22023 invalid slug or qty < 1.
CREATE FUNCTION pgflow.claim_tasks(flow_slug text, qty integer, worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_ids bigint[];
    v_exhausted bigint[];
    v_id bigint;
    -- a value, not clock_timestamp() in the WHERE clause: a volatile call is
    -- a filter, a variable bounds the index range, so tasks that are not yet
    -- claimable (delayed retries, parked behind a concurrency limit at vt =
    -- infinity) are never read when fewer than qty tasks are claimable
    v_now timestamptz := clock_timestamp();
    v_levels boolean;
    v_paused boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', claim_tasks.flow_slug);
    PERFORM pgflow._check_option('qty', claim_tasks.qty, 1, false);
    -- A claim need not wait for its WAL flush: lost in a crash, it leaves the
    -- task claimable again (at-least-once already allows the re-run), and the
    -- task's completion, committed synchronously later, flushes it anyway.
    -- This makes the rest of the caller's transaction asynchronous too: call
    -- claim_tasks in a transaction of its own.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- a paused flow (pause_flow) has nothing claimable; only a flow that
    -- ever had a run with a priority other than 0 has priority levels
    SELECT f.prioritized,
           EXISTS (SELECT 1 FROM pgflow.paused_flows AS p WHERE p.flow_slug = f.flow_slug)
    INTO v_levels, v_paused
    FROM pgflow.flows AS f
    WHERE f.flow_slug = claim_tasks.flow_slug;
    IF v_paused IS DISTINCT FROM false THEN
        RETURN;
    END IF;

    IF NOT v_levels THEN
        -- every task of the flow has priority 0: one ordered range
        SELECT array_agg(c.message_id) FILTER (WHERE NOT c.exhausted),
               array_agg(c.message_id) FILTER (WHERE c.exhausted)
        INTO v_ids, v_exhausted
        FROM (
            SELECT t.message_id,
                   t.attempts_count - t.retried_attempts
                       >= coalesce(s.opt_max_attempts, f.opt_max_attempts) AS exhausted
            FROM pgflow.step_tasks AS t
            JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
            JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
            WHERE t.flow_slug = claim_tasks.flow_slug
              AND t.status IN ('queued', 'started')
              AND t.priority = 0
              AND t.vt <= v_now
            ORDER BY t.vt
            LIMIT claim_tasks.qty
            FOR UPDATE OF t SKIP LOCKED
        ) AS c;
    ELSE
        -- the priority levels of the flow's open tasks, highest first, one index
        -- probe each (a loose index scan), found only as far as the claim needs
        -- them; per level its claimable tasks, oldest first
        WITH RECURSIVE levels (priority) AS (
            (SELECT t.priority FROM pgflow.step_tasks AS t
             WHERE t.flow_slug = claim_tasks.flow_slug AND t.status IN ('queued', 'started')
             ORDER BY t.priority DESC
             LIMIT 1)
            UNION ALL
            SELECT (SELECT t.priority FROM pgflow.step_tasks AS t
                    WHERE t.flow_slug = claim_tasks.flow_slug AND t.status IN ('queued', 'started')
                      AND t.priority < l.priority
                    ORDER BY t.priority DESC
                    LIMIT 1)
            FROM levels AS l
            WHERE l.priority IS NOT NULL
        )
        SELECT array_agg(c.message_id) FILTER (WHERE NOT c.exhausted),
               array_agg(c.message_id) FILTER (WHERE c.exhausted)
        INTO v_ids, v_exhausted
        FROM (
            SELECT c.message_id, c.exhausted
            FROM levels AS l
            CROSS JOIN LATERAL (
                SELECT t.message_id,
                       t.attempts_count - t.retried_attempts
                           >= coalesce(s.opt_max_attempts, f.opt_max_attempts) AS exhausted
                FROM pgflow.step_tasks AS t
                JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
                JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
                WHERE t.flow_slug = claim_tasks.flow_slug
                  AND t.status IN ('queued', 'started')
                  AND t.priority = l.priority
                  AND t.vt <= v_now
                ORDER BY t.vt
                LIMIT claim_tasks.qty
                FOR UPDATE OF t SKIP LOCKED
            ) AS c
            LIMIT claim_tasks.qty
        ) AS c;
    END IF;

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

COMMENT ON FUNCTION pgflow.claim_tasks(text, integer, uuid) IS
    'lease and start up to qty claimable tasks of a flow in one call (read_with_poll + start_tasks)';

-- _complete_tasks: the body of complete_tasks.  Completes the given tasks
-- that are started in the given attempt (a NULL attempt: in whatever
-- attempt; others are left alone), then advances their steps and runs
-- (_tasks_completed).  Returns how many tasks it completed.
-- Locks: the task rows (in key order as the input, sorted, drives the
-- UPDATE), then the rows of map steps in key order; then as
-- _steps_finished (the runs rows, then dependent step_states rows).  Two
-- calls reporting the same tasks in another order may deadlock; PostgreSQL
-- aborts one (40P01) and the reference worker sends its batch again.
-- Generic plans only (plan_cache_mode): a custom plan that knows a batch of
-- 100 may, on tables without statistics, read the task rows through the
-- claimable-tasks index (every queued and started task) instead of the
-- primary key.  No seq scan (enable_seqscan): a generic plan made while
-- step_tasks is small would read it whole, per call, once it has grown.
CREATE FUNCTION pgflow._complete_tasks(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                       outputs jsonb[], attempts integer[])
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_runs uuid[];
    v_steps text[];
    v_counts integer[];
    v_total integer;
BEGIN
    WITH input AS (
        -- (a NULL attempts array pads every row with a NULL attempt)
        SELECT DISTINCT ON (i.run_id, i.step_slug, i.task_index)
               i.run_id, i.step_slug, i.task_index, i.output, i.attempt,
               'started'::text AS status
        FROM unnest(_complete_tasks.run_ids, _complete_tasks.step_slugs,
                    _complete_tasks.task_indexes, _complete_tasks.outputs,
                    _complete_tasks.attempts)
             AS i(run_id, step_slug, task_index, output, attempt)
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
          -- the status to complete from comes with the input: a constant
          -- would imply the predicate of the partial claimable-tasks index,
          -- and a generic plan without statistics then read every queued
          -- and started task of the table per call instead of the keys
          AND t.status = i.status
          -- fencing: a superseded attempt's late report changes nothing
          AND (i.attempt IS NULL OR t.attempts_count = i.attempt)
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
    PERFORM pgflow._tasks_completed(v_runs, v_steps, v_counts);
    RETURN v_total;
END;
$$;

COMMENT ON FUNCTION pgflow._complete_tasks(uuid[], text[], integer[], jsonb[], integer[]) IS
    'complete started tasks in one transaction and advance their runs; returns how many counted';


-- _tasks_completed: what follows the completion of tasks (counts[i] of step
-- step_slugs[i] of run run_ids[i], sorted by run and step, no pair twice):
-- decrements the steps' remaining_tasks once per step, completes the steps
-- that reach zero (a map step's output: its task outputs in task_index
-- order), then starts what became ready.  complete_task (one task) and
-- _complete_tasks (a batch) call it after their UPDATE of the task rows.
-- Locks: the rows of map steps in key order, then the step_states rows;
-- then as _steps_finished (the runs rows, then dependent step_states rows).
CREATE FUNCTION pgflow._tasks_completed(run_ids uuid[], step_slugs text[], counts integer[])
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_done_runs uuid[];
    v_done_steps text[];
    v_done_flows text[];
    v_run uuid;
BEGIN
    -- Lock the rows of map steps first, in key order, in a statement of their
    -- own: the UPDATE below then runs on a snapshot taken after any sibling
    -- completion it waited for has committed, so a map's aggregate sees the
    -- sibling's task output (in the same statement it would still read NULL).
    -- A single step has one task, whose row lock is held: no other
    -- transaction completes it.
    PERFORM 1
    FROM unnest(_tasks_completed.run_ids, _tasks_completed.step_slugs) AS c(run_id, step_slug)
    JOIN pgflow.step_states AS ss ON ss.run_id = c.run_id AND ss.step_slug = c.step_slug
    JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE s.step_type = 'map'
    ORDER BY ss.run_id, ss.step_slug
    FOR UPDATE OF ss;

    -- one UPDATE per step: the decrement, and for a step whose last task this
    -- was, its completion with its output (a map's: every task output in
    -- task_index order)
    WITH c AS (
        SELECT *
        FROM unnest(_tasks_completed.run_ids, _tasks_completed.step_slugs,
                    _tasks_completed.counts) AS c(run_id, step_slug, n)
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
        RETURN;
    END IF;

    -- (the join spares the call for flows without step events)
    PERFORM pgflow._emit_step(d.flow_slug, d.run_id, d.step_slug, 'completed')
    FROM unnest(v_done_runs, v_done_steps, v_done_flows) AS d(run_id, step_slug, flow_slug)
    JOIN pgflow.flows AS f ON f.flow_slug = d.flow_slug AND f.opt_step_events;

    -- the runs and the dependents of every step that completed, in one pass
    FOREACH v_run IN ARRAY pgflow._steps_finished(v_done_runs, v_done_steps) LOOP
        PERFORM pgflow._start_ready_steps(v_run);
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow._tasks_completed(uuid[], text[], integer[]) IS
    'after tasks completed: count them down per step, complete the steps at zero and start what became ready';

-- complete_tasks: complete_task for many tasks in one transaction: element i
-- of each array describes one task, attempts[i] the attempt its claim
-- returned (NULL, or no attempts array: whatever attempt runs).  Tasks that
-- are not started in that attempt are left alone (late, duplicate and
-- superseded reports are normal).  Returns how many tasks it completed.  A
-- task of a sub-flow step is refused (its child run reports it): then none
-- of the batch is completed.
-- Locks: as _complete_tasks.
-- Errors: 22004 NULL array; 22023 arrays of different lengths; 55000 a task
-- of a sub-flow step.
CREATE FUNCTION pgflow.complete_tasks(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                      outputs jsonb[], attempts integer[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF run_ids IS NULL OR step_slugs IS NULL OR task_indexes IS NULL OR outputs IS NULL THEN
        RAISE EXCEPTION 'run_ids, step_slugs, task_indexes and outputs must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass one array element per task (empty arrays for none)';
    END IF;
    IF cardinality(run_ids) <> cardinality(step_slugs)
       OR cardinality(run_ids) <> cardinality(task_indexes)
       OR cardinality(run_ids) <> cardinality(outputs)
       OR cardinality(run_ids) <> coalesce(cardinality(attempts), cardinality(run_ids)) THEN
        RAISE EXCEPTION 'run_ids, step_slugs, task_indexes, outputs and attempts must have the same length (got %, %, %, %, %)',
                cardinality(run_ids), cardinality(step_slugs), cardinality(task_indexes),
                cardinality(outputs), coalesce(cardinality(attempts)::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'element i of each array describes task i';
    END IF;
    PERFORM pgflow._refuse_subflow_reports('complete_tasks', run_ids, step_slugs);
    RETURN pgflow._complete_tasks(run_ids, step_slugs, task_indexes, outputs, attempts);
END;
$$;

COMMENT ON FUNCTION pgflow.complete_tasks(uuid[], text[], integer[], jsonb[], integer[]) IS
    'complete many started tasks (of the attempts named) in one transaction; returns how many counted';
