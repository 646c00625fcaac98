-- complete_task: records the output of a started task.  When it was the
-- step's last task the step completes (a map step's output is the array of its
-- task outputs in task_index order), dependents' counters drop, steps that
-- became ready start, and at the last step the run completes.
-- Late and duplicate calls are normal under at-least-once delivery: a task
-- that is not started (already completed, failed, cancelled, unknown) is left
-- alone and the call returns false.  A NULL output is stored as JSON null.
-- Locks: the task row, its step_states row; when the step completes, the runs
-- row and the dependents' step_states rows.
-- Errors: 22004 NULL run_id, step_slug or task_index.
CREATE FUNCTION pgflow.complete_task(run_id uuid, step_slug text, task_index integer, output jsonb)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF complete_task.run_id IS NULL OR complete_task.step_slug IS NULL
       OR complete_task.task_index IS NULL THEN
        RAISE EXCEPTION 'run_id, step_slug and task_index must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the values start_tasks returned for the task';
    END IF;

    RETURN pgflow._complete_tasks(ARRAY[complete_task.run_id], ARRAY[complete_task.step_slug],
                                  ARRAY[complete_task.task_index], ARRAY[complete_task.output]) > 0;
END;
$$;

COMMENT ON FUNCTION pgflow.complete_task(uuid, text, integer, jsonb) IS
    'record a started task''s output and advance the run; false if the call changed nothing';

-- fail_task: records a failed attempt of a started task.  With attempts left
-- the task is queued again after base_delay * 2^(attempts_count - 1) seconds
-- (capped at 2^31 - 1 s); out of attempts the step's when_exhausted applies.
-- Like complete_task, a call for a task that is not started changes nothing
-- and returns false.
-- Locks: the task row; when exhausted also as _fail_run / _skip_steps.
-- Errors: 22004 NULL run_id, step_slug or task_index.
CREATE FUNCTION pgflow.fail_task(run_id uuid, step_slug text, task_index integer, error_message text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_task record;
    v_message text := coalesce(fail_task.error_message, 'unknown error');
BEGIN
    IF fail_task.run_id IS NULL OR fail_task.step_slug IS NULL OR fail_task.task_index IS NULL THEN
        RAISE EXCEPTION 'run_id, step_slug and task_index must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the values start_tasks returned for the task';
    END IF;

    SELECT t.attempts_count,
           coalesce(s.opt_max_attempts, f.opt_max_attempts) AS max_attempts,
           coalesce(s.opt_base_delay, f.opt_base_delay) AS base_delay
    INTO v_task
    FROM pgflow.step_tasks AS t
    JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
    WHERE t.run_id = fail_task.run_id
      AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index
      AND t.status = 'started'
    FOR UPDATE OF t;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    IF v_task.attempts_count < v_task.max_attempts THEN
        UPDATE pgflow.step_tasks AS t
        SET status = 'queued',
            error_message = v_message,
            vt = now() + make_interval(secs => least(
                v_task.base_delay * power(2, v_task.attempts_count - 1), 2147483647))
        WHERE t.run_id = fail_task.run_id
          AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index;
    ELSE
        PERFORM pgflow._exhaust_task(fail_task.run_id, fail_task.step_slug,
                                     fail_task.task_index, v_message);
    END IF;
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgflow.fail_task(uuid, text, integer, text) IS
    'record a failed attempt: retry with backoff or apply when_exhausted; false if no-op';
