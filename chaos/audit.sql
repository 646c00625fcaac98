-- The chaos harness's own schema: an audit trail of every state transition
-- of pgflow's runtime rows (written by triggers in the same transaction as
-- the transition, so a crash keeps or loses both together), plus what the
-- harness knows: the scripted behaviour and expected outcome of each run,
-- the kills and the server restarts.  The checks (checks.sql) read only
-- these tables and pgflow's.

CREATE SCHEMA chaos;

CREATE TABLE chaos.task_events (
    id             bigserial   PRIMARY KEY,
    run_id         uuid        NOT NULL,
    step_slug      text        NOT NULL,
    task_index     integer     NOT NULL,
    old_status     text,
    new_status     text        NOT NULL,
    attempts_count integer     NOT NULL,
    worker_id      uuid,
    error_message  text,
    at             timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX task_events_task_idx ON chaos.task_events (run_id, step_slug, task_index, id);
CREATE INDEX task_events_worker_idx ON chaos.task_events (worker_id, at);

CREATE TABLE chaos.step_events (
    id         bigserial   PRIMARY KEY,
    run_id     uuid        NOT NULL,
    step_slug  text        NOT NULL,
    old_status text,
    new_status text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE chaos.run_events (
    id         bigserial   PRIMARY KEY,
    run_id     uuid        NOT NULL,
    old_status text,
    new_status text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION chaos.log_task() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO chaos.task_events (run_id, step_slug, task_index, old_status, new_status,
                                   attempts_count, worker_id, error_message)
    VALUES (NEW.run_id, NEW.step_slug, NEW.task_index,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
            NEW.attempts_count, NEW.last_worker_id, NEW.error_message);
    RETURN NULL;
END;
$$;

CREATE FUNCTION chaos.log_step() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO chaos.step_events (run_id, step_slug, old_status, new_status)
    VALUES (NEW.run_id, NEW.step_slug, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            NEW.status);
    RETURN NULL;
END;
$$;

CREATE FUNCTION chaos.log_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO chaos.run_events (run_id, old_status, new_status)
    VALUES (NEW.run_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status);
    RETURN NULL;
END;
$$;

CREATE TRIGGER chaos_task_insert AFTER INSERT ON pgflow.step_tasks
    FOR EACH ROW EXECUTE FUNCTION chaos.log_task();
-- a claim of an expired lease is started -> started with one more attempt
CREATE TRIGGER chaos_task_update AFTER UPDATE ON pgflow.step_tasks
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.attempts_count IS DISTINCT FROM NEW.attempts_count)
    EXECUTE FUNCTION chaos.log_task();
CREATE TRIGGER chaos_step_insert AFTER INSERT ON pgflow.step_states
    FOR EACH ROW EXECUTE FUNCTION chaos.log_step();
CREATE TRIGGER chaos_step_update AFTER UPDATE ON pgflow.step_states
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION chaos.log_step();
CREATE TRIGGER chaos_run_insert AFTER INSERT ON pgflow.runs
    FOR EACH ROW EXECUTE FUNCTION chaos.log_run();
CREATE TRIGGER chaos_run_update AFTER UPDATE ON pgflow.runs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION chaos.log_run();

-- What the harness scripted: one row per run (written in the transaction
-- that starts the run) and one per task it can foresee.
CREATE TABLE chaos.expected (
    run_id      uuid  PRIMARY KEY,
    flow_slug   text  NOT NULL,
    status      text  NOT NULL,
    output      jsonb,
    fatal_steps text[] NOT NULL
);

CREATE TABLE chaos.scripts (
    run_id     uuid    NOT NULL,
    step_slug  text    NOT NULL,
    task_index integer NOT NULL,
    behaviour  jsonb   NOT NULL,
    PRIMARY KEY (run_id, step_slug, task_index)
);

-- Filled at the end from the harness's memory.
CREATE TABLE chaos.kills (
    kill_no    integer     PRIMARY KEY,
    slot       integer     NOT NULL,
    pid        integer     NOT NULL,
    spawned_at timestamptz NOT NULL,
    killed_at  timestamptz NOT NULL
);

CREATE TABLE chaos.restarts (
    restart_no integer     PRIMARY KEY,
    mode       text        NOT NULL,
    began_at   timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL
);

-- Run ids whose start the harness saw commit (a missing one is a lost run).
CREATE TABLE chaos.started (run_id uuid PRIMARY KEY);

-- Every handler execution that returned (from the handlers' side logs).
CREATE TABLE chaos.executions (
    run_id     uuid    NOT NULL,
    step_slug  text    NOT NULL,
    task_index integer NOT NULL,
    attempt    integer NOT NULL,
    pid        integer NOT NULL
);

-- jsonb without the "a" (attempt) keys handlers add to their outputs.
CREATE FUNCTION chaos.strip_attempts(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'object' THEN coalesce((
            SELECT jsonb_object_agg(e.key, chaos.strip_attempts(e.value))
            FROM jsonb_each(value) AS e WHERE e.key <> 'a'), '{}'::jsonb)
        WHEN 'array' THEN coalesce((
            SELECT jsonb_agg(chaos.strip_attempts(e.value) ORDER BY e.ord)
            FROM jsonb_array_elements(value) WITH ORDINALITY AS e(value, ord)), '[]'::jsonb)
        ELSE value
    END;
$$;
