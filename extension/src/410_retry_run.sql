-- Retrying runs, and the history retries leave behind.
--
-- retry_run resets failed and cancelled work in place (same run_id, same task
-- rows, a fresh attempt budget), so the earlier attempts would be overwritten.
-- Before it resets anything it copies what it replaces: one run_retries row
-- per retry (the run's status and error as they were) and one task_attempts
-- row per task it re-queues (status, attempts, last error, worker, times).

CREATE TABLE pgflow.run_retries (
    run_id        uuid        NOT NULL,
    retry_number  integer     NOT NULL,
    flow_slug     text        NOT NULL,
    status        text        NOT NULL,
    error_message text,
    finished_at   timestamptz NOT NULL,
    retried_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT run_retries_pkey PRIMARY KEY (run_id, retry_number),
    CONSTRAINT run_retries_run_id_fkey FOREIGN KEY (run_id)
        REFERENCES pgflow.runs (run_id) ON DELETE CASCADE,
    CONSTRAINT run_retries_status_check CHECK (status IN ('failed', 'cancelled')),
    CONSTRAINT run_retries_retry_number_check CHECK (retry_number >= 1)
);

COMMENT ON TABLE pgflow.run_retries IS
    'one row per retry_run call: the run''s status, error and finish time before the retry';

CREATE TABLE pgflow.task_attempts (
    run_id         uuid        NOT NULL,
    retry_number   integer     NOT NULL,
    step_slug      text        NOT NULL,
    task_index     integer     NOT NULL,
    flow_slug      text        NOT NULL,
    status         text        NOT NULL,
    attempts_count integer     NOT NULL,
    error_message  text,
    last_worker_id uuid,
    queued_at      timestamptz NOT NULL,
    started_at     timestamptz,
    failed_at      timestamptz,
    CONSTRAINT task_attempts_pkey PRIMARY KEY (run_id, retry_number, step_slug, task_index),
    CONSTRAINT task_attempts_retry_fkey FOREIGN KEY (run_id, retry_number)
        REFERENCES pgflow.run_retries (run_id, retry_number) ON DELETE CASCADE,
    CONSTRAINT task_attempts_status_check CHECK (status IN ('failed', 'cancelled'))
);

COMMENT ON TABLE pgflow.task_attempts IS
    'a task as it was before retry_run re-queued it: its attempts, last error and worker';

SELECT pg_catalog.pg_extension_config_dump('pgflow.run_retries', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.task_attempts', '');

-- retry_run: resumes a failed or cancelled run where it stopped.
--   * completed steps keep their outputs and are not run again; skipped
--     steps stay skipped;
--   * each failed or cancelled step that had tasks is started again with only
--     its failed and cancelled tasks re-queued (claimable at once, with
--     max_attempts attempts again; attempts_count goes on, so the next
--     claim's attempt number is new and a late report from before the retry
--     is refused); the completed tasks of a map step keep their outputs;
--   * a step that failed before it had tasks (a condition with
--     when_unmet = fail, a map over a non-array) goes back to created and is
--     evaluated again like any ready step;
--   * steps still created start as their dependencies complete;
--   * a re-queued task of a sub-flow step is started at once by a new child
--     run (a new attempt); its completed tasks keep their children's outputs.
-- Counters need no repair: failed and cancelled steps were never counted as
-- finished in runs.remaining_steps nor in their dependents' remaining_deps;
-- a re-queued step's remaining_tasks is the number of tasks re-queued.
-- The run is started again (run:retried on pgflow_events), workers are woken,
-- and the earlier attempts stay in run_retries and task_attempts.
-- Owner-only (an operator action): not granted by grant_client/grant_worker.
-- Locks: the runs row, then the run's step_states and task rows (nothing
-- else locks rows of a finished run: late completions find no started task).
-- Errors: 22004 NULL run_id; 42704 unknown run; 55000 run not failed or
-- cancelled.
CREATE FUNCTION pgflow.retry_run(run_id uuid)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_retry integer;
    v_requeued text[];
BEGIN
    IF retry_run.run_id IS NULL THEN
        RAISE EXCEPTION 'run_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the run_id of a failed or cancelled run';
    END IF;

    SELECT * INTO v_run FROM pgflow.runs AS r WHERE r.run_id = retry_run.run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', retry_run.run_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'check the run_id (pgflow.runs lists the runs; pruned runs are gone)';
    END IF;
    IF v_run.status = 'started' THEN
        RAISE EXCEPTION 'run % is still running', v_run.run_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'only failed or cancelled runs can be retried; cancel it first with pgflow.cancel_run()';
    ELSIF v_run.status = 'completed' THEN
        RAISE EXCEPTION 'run % is completed', v_run.run_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'only failed or cancelled runs can be retried; start a new run with pgflow.start_flow()';
    END IF;

    -- keep the history before overwriting it
    SELECT coalesce(max(rr.retry_number), 0) + 1 INTO v_retry
    FROM pgflow.run_retries AS rr WHERE rr.run_id = retry_run.run_id;
    INSERT INTO pgflow.run_retries (run_id, retry_number, flow_slug, status, error_message, finished_at)
    VALUES (v_run.run_id, v_retry, v_run.flow_slug, v_run.status, v_run.error_message,
            coalesce(v_run.failed_at, v_run.cancelled_at, now()));
    INSERT INTO pgflow.task_attempts (run_id, retry_number, step_slug, task_index, flow_slug, status,
                                      attempts_count, error_message, last_worker_id, queued_at,
                                      started_at, failed_at)
    SELECT t.run_id, v_retry, t.step_slug, t.task_index, t.flow_slug, t.status,
           t.attempts_count, t.error_message, t.last_worker_id, t.queued_at,
           t.started_at, t.failed_at
    FROM pgflow.step_tasks AS t
    JOIN pgflow.step_states AS ss ON ss.run_id = t.run_id AND ss.step_slug = t.step_slug
    WHERE t.run_id = retry_run.run_id
      AND ss.status IN ('failed', 'cancelled')
      AND t.status IN ('failed', 'cancelled');

    -- re-queue the unfinished tasks of failed and cancelled steps
    UPDATE pgflow.step_tasks AS t
    SET status = 'queued',
        -- the attempt count goes on (an attempt number names one claim for
        -- the task's whole life: reports of attempts from before the retry
        -- are refused); the retry gets a fresh budget of max_attempts
        retried_attempts = t.attempts_count,
        read_ct = 0,
        -- a task under a concurrency limit waits for a slot again (parked)
        vt = CASE WHEN t.gate IS NULL THEN now() ELSE 'infinity' END,
        output = NULL,
        error_message = NULL,
        last_worker_id = NULL,
        queued_at = now(),
        started_at = NULL,
        completed_at = NULL,
        failed_at = NULL
    FROM pgflow.step_states AS ss
    WHERE t.run_id = retry_run.run_id
      AND ss.run_id = t.run_id AND ss.step_slug = t.step_slug
      AND ss.status IN ('failed', 'cancelled')
      AND t.status IN ('failed', 'cancelled');

    -- their steps run again, waiting for exactly the re-queued tasks
    WITH requeued AS (
        UPDATE pgflow.step_states AS ss
        SET status = 'started',
            started_at = now(),
            failed_at = NULL,
            error_message = NULL,
            remaining_tasks = q.n
        FROM (
            SELECT t.step_slug, count(*)::integer AS n
            FROM pgflow.step_tasks AS t
            WHERE t.run_id = retry_run.run_id AND t.status = 'queued'
            GROUP BY t.step_slug
        ) AS q
        WHERE ss.run_id = retry_run.run_id
          AND ss.step_slug = q.step_slug
          AND ss.status IN ('failed', 'cancelled')
        RETURNING ss.step_slug
    )
    SELECT coalesce(array_agg(q.step_slug ORDER BY q.step_slug), '{}') INTO v_requeued
    FROM requeued AS q;

    -- steps that failed before they had tasks are evaluated again
    UPDATE pgflow.step_states AS ss
    SET status = 'created',
        started_at = NULL,
        failed_at = NULL,
        error_message = NULL,
        initial_tasks = NULL,
        remaining_tasks = NULL
    WHERE ss.run_id = retry_run.run_id AND ss.status IN ('failed', 'cancelled');

    UPDATE pgflow.runs AS r
    SET status = 'started',
        error_message = NULL,
        output = NULL,
        failed_at = NULL,
        cancelled_at = NULL
    WHERE r.run_id = retry_run.run_id;

    PERFORM pgflow._emit_step(v_run.flow_slug, v_run.run_id, s, 'started')
    FROM unnest(v_requeued) AS s;
    PERFORM pgflow._emit('run:retried', v_run.flow_slug, v_run.run_id, NULL, 'started');
    IF cardinality(v_requeued) > 0 THEN
        PERFORM pgflow._wake_workers(v_run.flow_slug);
    END IF;

    -- re-queued sub-flow tasks: new child runs instead of workers
    PERFORM pgflow._restart_subflow_tasks(v_run.run_id);
    -- re-queued gated tasks take the free slots of their gates
    PERFORM pgflow._gate_refill(v_run.flow_slug, g.gate)
    FROM (SELECT DISTINCT t.gate FROM pgflow.step_tasks AS t
          WHERE t.run_id = v_run.run_id AND t.gate IS NOT NULL
            AND t.status = 'queued' AND t.vt = 'infinity'
          ORDER BY t.gate) AS g;

    IF v_run.remaining_steps = 0 THEN
        -- cannot happen for a run that failed or was cancelled mid-way; kept
        -- so a run with nothing left to do never stays started
        PERFORM pgflow._complete_run(v_run.run_id);
    ELSE
        PERFORM pgflow._start_ready_steps(v_run.run_id);
    END IF;

    SELECT * INTO STRICT v_run FROM pgflow.runs AS r WHERE r.run_id = retry_run.run_id;
    RETURN v_run;
END;
$$;

COMMENT ON FUNCTION pgflow.retry_run(uuid) IS
    'resume a failed or cancelled run: re-queue its failed and cancelled work, keep completed outputs';
