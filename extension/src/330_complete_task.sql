-- complete_task: records the output of a started task.  When it was the
-- step's last task the step completes (a map step's output is the array of its
-- task outputs in task_index order), dependents' counters drop, steps that
-- became ready start, and at the last step the run completes.
-- attempt is the number the claim returned: a report of any other attempt
-- (superseded after its lease expired, or from before a cancel and retry)
-- changes nothing; NULL completes whatever attempt runs (the protocol before
-- fencing: a zombie worker's late report could then win).
-- Late and duplicate calls are normal under at-least-once delivery: a task
-- that is not started (already completed, failed, cancelled, unknown) is left
-- alone and the call returns false.  A NULL output is stored as JSON null.
-- A task of a sub-flow step is refused: its child run reports it.
-- Locks: the task row, its step_states row; when the step completes, the runs
-- row and the dependents' step_states rows (as _tasks_completed).
-- Errors: 22004 NULL run_id, step_slug or task_index; 55000 a task of a
-- sub-flow step.
CREATE FUNCTION pgflow.complete_task(run_id uuid, step_slug text, task_index integer, output jsonb,
                                     attempt integer DEFAULT NULL)
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
    -- (sub-flow steps are few: most reports skip the call)
    IF EXISTS (SELECT 1 FROM pgflow.step_subflows AS sf
               WHERE sf.step_slug = complete_task.step_slug) THEN
        PERFORM pgflow._refuse_subflow_reports('complete_task', ARRAY[complete_task.run_id],
                                               ARRAY[complete_task.step_slug]);
    END IF;

    -- one task: its row by the primary key (what complete_tasks does for a
    -- batch, without the arrays, the sort and the grouping)
    UPDATE pgflow.step_tasks AS t
    SET status = 'completed',
        output = coalesce(complete_task.output, 'null'::jsonb),
        completed_at = now()
    WHERE t.run_id = complete_task.run_id
      AND t.step_slug = complete_task.step_slug
      AND t.task_index = complete_task.task_index
      AND t.status = 'started'
      -- fencing: a superseded attempt's late report changes nothing
      AND (complete_task.attempt IS NULL OR t.attempts_count = complete_task.attempt);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pgflow._tasks_completed(ARRAY[complete_task.run_id], ARRAY[complete_task.step_slug],
                                    ARRAY[1]);
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgflow.complete_task(uuid, text, integer, jsonb, integer) IS
    'record a started task''s output and advance the run; false if the call changed nothing';

-- fail_task: records a failed attempt of a started task.  With attempts left
-- (max_attempts counts the attempts since the latest retry_run) the task is
-- queued again after its backoff: base_delay * 2^(n - 1) seconds for the
-- n-th attempt, capped at max_delay (and 2^31 - 1 s), drawn at random below
-- that when jitter is on; retry_delay (seconds >= 0, capped the same way)
-- replaces the backoff.  Out of attempts, or with retry => false, the step's
-- when_exhausted applies at once.  attempt fences the report as in
-- complete_task.  A call for a task that is not started in that attempt
-- changes nothing and returns false.  A task of a sub-flow step is refused:
-- its child run reports it.
-- Locks: as _fail_tasks.
-- Errors: 22004 NULL run_id, step_slug, task_index or retry; 22023 negative
-- or non-finite retry_delay; 55000 a task of a sub-flow step.
CREATE FUNCTION pgflow.fail_task(run_id uuid, step_slug text, task_index integer, error_message text,
                                 attempt integer DEFAULT NULL, retry boolean DEFAULT true,
                                 retry_delay double precision DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF fail_task.run_id IS NULL OR fail_task.step_slug IS NULL OR fail_task.task_index IS NULL THEN
        RAISE EXCEPTION 'run_id, step_slug and task_index must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the values start_tasks returned for the task';
    END IF;
    IF fail_task.retry IS NULL THEN
        RAISE EXCEPTION 'retry must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass true (retry while attempts are left) or false (fail now)';
    END IF;
    PERFORM pgflow._refuse_subflow_reports('fail_task', ARRAY[fail_task.run_id],
                                           ARRAY[fail_task.step_slug]);
    RETURN pgflow._fail_tasks(ARRAY[fail_task.run_id], ARRAY[fail_task.step_slug],
                              ARRAY[fail_task.task_index], ARRAY[fail_task.error_message],
                              ARRAY[fail_task.attempt], ARRAY[fail_task.retry],
                              ARRAY[fail_task.retry_delay]) > 0;
END;
$$;

COMMENT ON FUNCTION pgflow.fail_task(uuid, text, integer, text, integer, boolean, double precision) IS
    'record a failed attempt: retry with backoff (or retry_delay), or apply when_exhausted; false if no-op';
