-- Failed attempts in batches, and lease renewals (heartbeats).  Both are
-- fenced: a task is addressed by (run_id, step_slug, task_index) *and* the
-- attempt its claim returned, so a worker whose attempt was superseded (its
-- lease expired and another worker claimed the task, or the run was
-- cancelled and retried) changes nothing.

-- _retry_wait: seconds before the next attempt of a task that failed its n-th
-- attempt since the latest retry_run: retry_delay when given, else
-- base_delay * 2^(n - 1), drawn uniformly below that with jitter; capped at
-- max_delay and at 2^31 - 1 seconds (an interval PostgreSQL can add).
CREATE FUNCTION pgflow._retry_wait(attempt_in_budget integer, base_delay integer, max_delay integer,
                                   jitter boolean, retry_delay double precision)
RETURNS double precision
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cap double precision := least(coalesce(max_delay, 2147483647), 2147483647);
    v_wait double precision;
BEGIN
    IF retry_delay IS NOT NULL THEN
        RETURN least(retry_delay, v_cap);
    END IF;
    v_wait := least(base_delay * power(2::double precision, attempt_in_budget - 1), v_cap);
    IF jitter THEN
        v_wait := random() * v_wait;
    END IF;
    RETURN v_wait;
END;
$$;

COMMENT ON FUNCTION pgflow._retry_wait(integer, integer, integer, boolean, double precision) IS
    'seconds before a retry: retry_delay or the (jittered) exponential backoff, capped';

-- _fail_tasks: the body of fail_task / fail_tasks.  For each given task that
-- is started in the given attempt (NULL: in whatever attempt): with attempts
-- left and retry true it is queued again after pgflow._retry_wait; otherwise
-- it fails and its step's when_exhausted applies.  Returns how many failures
-- it recorded.
-- Locks: the task rows in key order (FOR UPDATE), then for exhausted ones as
-- _exhaust_task (the step, the run, dependents).
CREATE FUNCTION pgflow._fail_tasks(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                   error_messages text[], attempts integer[], retries boolean[],
                                   retry_delays double precision[])
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_in record;
    v_task record;
    v_count integer := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(_fail_tasks.retry_delays) AS d
               WHERE d < 0 OR d = 'infinity'::double precision OR d = 'NaN'::double precision) THEN
        RAISE EXCEPTION 'retry_delay must be a finite number of seconds >= 0'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass NULL for the step''s backoff, or the seconds to wait, e.g. 30';
    END IF;
    -- one primary-key probe per task, in key order (the lock order): a join
    -- of the input with step_tasks could be planned, on tables without
    -- statistics, as a loop over every task
    FOR v_in IN
        -- (NULL arrays pad every row with NULLs: no attempt, default retry)
        SELECT DISTINCT ON (i.run_id, i.step_slug, i.task_index) i.*
        FROM unnest(_fail_tasks.run_ids, _fail_tasks.step_slugs, _fail_tasks.task_indexes,
                    _fail_tasks.error_messages, _fail_tasks.attempts, _fail_tasks.retries,
                    _fail_tasks.retry_delays)
             AS i(run_id, step_slug, task_index, error_message, attempt, retry, retry_delay)
        ORDER BY i.run_id, i.step_slug, i.task_index
    LOOP
        SELECT t.run_id, t.step_slug, t.task_index,
               t.attempts_count - t.retried_attempts AS attempt_in_budget,
               coalesce(v_in.error_message, 'unknown error') AS error_message,
               coalesce(v_in.retry, true) AS retry, v_in.retry_delay AS retry_delay,
               coalesce(s.opt_max_attempts, f.opt_max_attempts) AS max_attempts,
               coalesce(s.opt_base_delay, f.opt_base_delay) AS base_delay,
               coalesce(s.opt_max_delay, f.opt_max_delay) AS max_delay,
               coalesce(s.opt_jitter, f.opt_jitter) AS jitter
        INTO v_task
        FROM pgflow.step_tasks AS t
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.run_id = v_in.run_id AND t.step_slug = v_in.step_slug
          AND t.task_index = v_in.task_index
          AND t.status = 'started'
          AND (v_in.attempt IS NULL OR t.attempts_count = v_in.attempt)
        FOR UPDATE OF t;
        CONTINUE WHEN NOT FOUND;
        v_count := v_count + 1;
        IF v_task.retry AND v_task.attempt_in_budget < v_task.max_attempts THEN
            UPDATE pgflow.step_tasks AS t
            SET status = 'queued',
                error_message = v_task.error_message,
                vt = now() + make_interval(secs => pgflow._retry_wait(
                    v_task.attempt_in_budget, v_task.base_delay, v_task.max_delay,
                    v_task.jitter, v_task.retry_delay))
            WHERE t.run_id = v_task.run_id
              AND t.step_slug = v_task.step_slug
              AND t.task_index = v_task.task_index;
        ELSE
            -- (a task an earlier exhaustion of this call cancelled stays cancelled)
            PERFORM pgflow._exhaust_task(v_task.run_id, v_task.step_slug, v_task.task_index,
                                         v_task.error_message);
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION pgflow._fail_tasks(uuid[], text[], integer[], text[], integer[], boolean[], double precision[]) IS
    'record failed attempts of started tasks: retry after their wait, or apply when_exhausted';

-- fail_tasks: fail_task for many tasks in one transaction: element i of each
-- array describes one task (attempts, retries and retry_delays may be NULL
-- as a whole or per element: no fencing, retry, the step's backoff).
-- Returns how many failures it recorded.  A task of a sub-flow step is
-- refused (its child run reports it): then none of the batch is recorded.
-- Locks: as _fail_tasks.
-- Errors: 22004 NULL run_ids, step_slugs, task_indexes or error_messages;
-- 22023 arrays of different lengths, a negative or non-finite retry delay;
-- 55000 a task of a sub-flow step.
CREATE FUNCTION pgflow.fail_tasks(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                  error_messages text[], attempts integer[] DEFAULT NULL,
                                  retries boolean[] DEFAULT NULL,
                                  retry_delays double precision[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n integer := cardinality(fail_tasks.run_ids);
BEGIN
    IF fail_tasks.run_ids IS NULL OR fail_tasks.step_slugs IS NULL
       OR fail_tasks.task_indexes IS NULL OR fail_tasks.error_messages IS NULL THEN
        RAISE EXCEPTION 'run_ids, step_slugs, task_indexes and error_messages must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass one array element per task (empty arrays for none)';
    END IF;
    IF v_n <> cardinality(fail_tasks.step_slugs)
       OR v_n <> cardinality(fail_tasks.task_indexes)
       OR v_n <> cardinality(fail_tasks.error_messages)
       OR v_n <> coalesce(cardinality(fail_tasks.attempts), v_n)
       OR v_n <> coalesce(cardinality(fail_tasks.retries), v_n)
       OR v_n <> coalesce(cardinality(fail_tasks.retry_delays), v_n) THEN
        RAISE EXCEPTION 'the arrays of fail_tasks must have the same length (run_ids has %)', v_n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'element i of each array describes task i; leave attempts, retries or retry_delays NULL for none';
    END IF;
    PERFORM pgflow._refuse_subflow_reports('fail_tasks', fail_tasks.run_ids, fail_tasks.step_slugs);
    RETURN pgflow._fail_tasks(fail_tasks.run_ids, fail_tasks.step_slugs, fail_tasks.task_indexes,
                              fail_tasks.error_messages, fail_tasks.attempts, fail_tasks.retries,
                              fail_tasks.retry_delays);
END;
$$;

COMMENT ON FUNCTION pgflow.fail_tasks(uuid[], text[], integer[], text[], integer[], boolean[], double precision[]) IS
    'record failed attempts of many tasks in one transaction; returns how many counted';

-- extend_leases: renews the leases of started tasks, each named with the
-- attempt its claim returned: the lease becomes now() + heartbeat + 2 s, but
-- never later than started_at + timeout + 2 s (timeout is the longest one
-- attempt may run).  A step without a heartbeat keeps its lease (it already
-- ends at that limit).  Returns the tasks whose lease the caller still holds,
-- with the lease's end; a task missing from the result is no longer the
-- caller's (its attempt was superseded, it was cancelled or finished, or it
-- ran past its timeout): the worker should stop reporting a failure for it.
-- The commit need not wait for its WAL flush: a renewal lost in a crash only
-- lets the task be claimed again, which at-least-once delivery allows.
-- Locks: the task rows (in key order, as complete_tasks).
-- Errors: 22004 NULL array; 22023 arrays of different lengths.
CREATE FUNCTION pgflow.extend_leases(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                     attempts integer[])
RETURNS TABLE (run_id uuid, step_slug text, task_index integer, lease_until timestamptz)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_n integer := cardinality(extend_leases.run_ids);
BEGIN
    IF extend_leases.run_ids IS NULL OR extend_leases.step_slugs IS NULL
       OR extend_leases.task_indexes IS NULL OR extend_leases.attempts IS NULL THEN
        RAISE EXCEPTION 'run_ids, step_slugs, task_indexes and attempts must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass one array element per task (empty arrays for none)';
    END IF;
    IF v_n <> cardinality(extend_leases.step_slugs)
       OR v_n <> cardinality(extend_leases.task_indexes)
       OR v_n <> cardinality(extend_leases.attempts) THEN
        RAISE EXCEPTION 'run_ids, step_slugs, task_indexes and attempts must have the same length (got %, %, %, %)',
                v_n, cardinality(extend_leases.step_slugs), cardinality(extend_leases.task_indexes),
                cardinality(extend_leases.attempts)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'element i of each array describes task i';
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);

    -- The rows are found by primary key, one probe per input row, and
    -- updated by ctid (as _start_tasks does): on tables without statistics a
    -- join of the input with step_tasks may be planned as a nested loop over
    -- all of them (quadratic in the batch).  A row updated concurrently (its
    -- attempt completed, failed or claimed again) has a new ctid and is left
    -- alone: the caller does not hold it any more.
    RETURN QUERY
    UPDATE pgflow.step_tasks AS t
    -- least() skips NULL: without a heartbeat the lease stays at the limit
    SET vt = least(now() + make_interval(secs => (
                       SELECT coalesce(s.opt_heartbeat, f.opt_heartbeat)
                       FROM pgflow.steps AS s JOIN pgflow.flows AS f ON f.flow_slug = s.flow_slug
                       WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug) + 2),
                   t.started_at + make_interval(secs => (
                       SELECT coalesce(s.opt_timeout, f.opt_timeout)
                       FROM pgflow.steps AS s JOIN pgflow.flows AS f ON f.flow_slug = s.flow_slug
                       WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug) + 2))
    WHERE t.ctid = ANY (ARRAY(
              SELECT t0.ctid
              FROM unnest(extend_leases.run_ids, extend_leases.step_slugs,
                          extend_leases.task_indexes, extend_leases.attempts)
                   AS i(run_id, step_slug, task_index, attempt)
              -- (OFFSET 0: flattened into a join, the probe could be planned
              -- as a scan of every open task through the claimable-tasks index;
              -- the status is checked on the row below)
              CROSS JOIN LATERAL (
                  SELECT t1.ctid FROM pgflow.step_tasks AS t1
                  WHERE t1.run_id = i.run_id AND t1.step_slug = i.step_slug
                    AND t1.task_index = i.task_index
                    AND t1.attempts_count = i.attempt
                  OFFSET 0) AS t0
              ORDER BY i.run_id, i.step_slug, i.task_index))
      AND t.status = 'started'
      AND t.started_at + make_interval(secs => (
              SELECT coalesce(s.opt_timeout, f.opt_timeout)
              FROM pgflow.steps AS s JOIN pgflow.flows AS f ON f.flow_slug = s.flow_slug
              WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug)) > now()
    RETURNING t.run_id, t.step_slug, t.task_index, t.vt;
END;
$$;

COMMENT ON FUNCTION pgflow.extend_leases(uuid[], text[], integer[], integer[]) IS
    'renew the leases of started tasks (fenced by attempt, capped at the timeout); the ones still held';
