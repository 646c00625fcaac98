-- Runtime tables: runs, the state of each step in a run, and the tasks.
-- pgflow.step_tasks *is* the queue: a task row's status, attempts_count and
-- lease (vt) are the whole truth about its claim; nothing else holds one.
-- Every runtime row is keyed by run_id first.

-- _uuid_v7: a time-ordered UUID (RFC 9562 version 7: 48 bits of Unix time in
-- milliseconds, then random bits) for run ids.  runs, step_states and
-- step_tasks are all keyed by run_id first, so new runs land together at one
-- place of their primary-key indexes instead of on random pages: fewer pages
-- touched per run, fewer full-page images after a checkpoint, and tables
-- holding a lot of history stay about as fast as empty ones.  (Its first
-- 48 bits tell when a run was created; the 74 random bits left keep ids
-- unguessable enough for keys, not for secrets.)
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

CREATE TABLE pgflow.runs (
    run_id          uuid        NOT NULL DEFAULT pgflow._uuid_v7(),
    flow_slug       text        NOT NULL,
    status          text        NOT NULL DEFAULT 'started',
    input           jsonb       NOT NULL,
    output          jsonb,
    remaining_steps integer     NOT NULL,
    error_message   text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    failed_at       timestamptz,
    cancelled_at    timestamptz,
    parent_run_id   uuid,
    parent_step_slug text,
    parent_task_index integer,
    parent_attempt  integer,
    depth           integer     NOT NULL DEFAULT 0,
    CONSTRAINT runs_pkey PRIMARY KEY (run_id),
    CONSTRAINT runs_flow_slug_fkey FOREIGN KEY (flow_slug) REFERENCES pgflow.flows (flow_slug),
    CONSTRAINT runs_status_check CHECK (status IN ('started', 'completed', 'failed', 'cancelled')),
    CONSTRAINT runs_remaining_steps_check CHECK (remaining_steps >= 0),
    CONSTRAINT runs_parent_check
        CHECK (CASE WHEN parent_run_id IS NULL
                    THEN parent_step_slug IS NULL AND parent_task_index IS NULL
                         AND parent_attempt IS NULL AND depth = 0
                    ELSE parent_step_slug IS NOT NULL AND parent_task_index IS NOT NULL
                         AND parent_attempt >= 1 AND depth >= 1 END)
)
-- room on each page for the updated versions of a run: its updates change no
-- indexed column, so they can be HOT (no index writes)
WITH (fillfactor = 80);

COMMENT ON TABLE pgflow.runs IS 'one row per run of a flow; output is {leaf_step: output}';

CREATE INDEX runs_flow_slug_started_at_idx ON pgflow.runs (flow_slug, started_at);
COMMENT ON COLUMN pgflow.runs.parent_run_id IS
    'for a child run (a sub-flow step''s task): the run, step, task and attempt that started it';
COMMENT ON COLUMN pgflow.runs.depth IS
    'how deep in sub-flows the run is: 0 for a run start_flow started, parent''s + 1 for a child';

CREATE TABLE pgflow.step_states (
    run_id          uuid        NOT NULL,
    step_slug       text        NOT NULL,
    flow_slug       text        NOT NULL,
    status          text        NOT NULL DEFAULT 'created',
    remaining_deps  integer     NOT NULL,
    initial_tasks   integer,
    remaining_tasks integer,
    output          jsonb,
    error_message   text,
    skip_reason     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    failed_at       timestamptz,
    skipped_at      timestamptz,
    CONSTRAINT step_states_pkey PRIMARY KEY (run_id, step_slug),
    CONSTRAINT step_states_run_id_fkey FOREIGN KEY (run_id)
        REFERENCES pgflow.runs (run_id) ON DELETE CASCADE,
    CONSTRAINT step_states_status_check
        CHECK (status IN ('created', 'started', 'completed', 'failed', 'skipped', 'cancelled')),
    CONSTRAINT step_states_remaining_deps_check CHECK (remaining_deps >= 0),
    CONSTRAINT step_states_remaining_tasks_check CHECK (remaining_tasks >= 0),
    CONSTRAINT step_states_skip_reason_check
        CHECK (skip_reason IN ('condition_unmet', 'dependency_skipped', 'handler_failed', 'wait_timed_out'))
)
-- as runs: step state updates change no indexed column and can be HOT
WITH (fillfactor = 80);

COMMENT ON TABLE pgflow.step_states IS 'the state of each step of each run';

CREATE TABLE pgflow.step_tasks (
    run_id         uuid        NOT NULL,
    step_slug      text        NOT NULL,
    task_index     integer     NOT NULL DEFAULT 0,
    flow_slug      text        NOT NULL,
    message_id     bigint      GENERATED ALWAYS AS IDENTITY,
    status         text        NOT NULL DEFAULT 'queued',
    attempts_count integer     NOT NULL DEFAULT 0,
    read_ct        integer     NOT NULL DEFAULT 0,
    vt             timestamptz NOT NULL DEFAULT now(),
    output         jsonb,
    error_message  text,
    last_worker_id uuid,
    queued_at      timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    completed_at   timestamptz,
    failed_at      timestamptz,
    retried_attempts integer   NOT NULL DEFAULT 0,
    CONSTRAINT step_tasks_pkey PRIMARY KEY (run_id, step_slug, task_index),
    CONSTRAINT step_tasks_message_id_key UNIQUE (message_id),
    CONSTRAINT step_tasks_step_fkey FOREIGN KEY (run_id, step_slug)
        REFERENCES pgflow.step_states (run_id, step_slug) ON DELETE CASCADE,
    CONSTRAINT step_tasks_status_check
        CHECK (status IN ('queued', 'started', 'completed', 'failed', 'cancelled')),
    CONSTRAINT step_tasks_task_index_check CHECK (task_index >= 0),
    CONSTRAINT step_tasks_attempts_count_check CHECK (attempts_count >= 0),
    CONSTRAINT step_tasks_retried_attempts_check
        CHECK (retried_attempts >= 0 AND retried_attempts <= attempts_count)
);

COMMENT ON TABLE pgflow.step_tasks IS
    'the task queue: one row per task; status + attempts_count + vt (lease) are the whole claim';
COMMENT ON COLUMN pgflow.step_tasks.vt IS
    'queued: claimable from this instant; started: lease end, claimable again after it';
COMMENT ON COLUMN pgflow.step_tasks.attempts_count IS
    'attempts started over the task''s whole life (never reset): the number of the current attempt, which reports name';
COMMENT ON COLUMN pgflow.step_tasks.retried_attempts IS
    'attempts made before the latest retry_run: max_attempts counts the attempts after it';

-- The claimable-work index (step_tasks_ready_idx) is created with the
-- priority column it leads with, in 225_priorities.sql.

-- a child run belongs to its parent's task: it goes when the parent run goes
-- (prune_runs, delete_flow), never before
ALTER TABLE pgflow.runs ADD CONSTRAINT runs_parent_fkey
    FOREIGN KEY (parent_run_id, parent_step_slug, parent_task_index)
    REFERENCES pgflow.step_tasks (run_id, step_slug, task_index) ON DELETE CASCADE;
CREATE INDEX runs_parent_idx ON pgflow.runs (parent_run_id, parent_step_slug, parent_task_index)
    WHERE parent_run_id IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('pgflow.runs', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.step_states', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.step_tasks', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.step_tasks_message_id_seq', '');

-- What read_with_poll returns for each leased task (pgmq's message shape).
CREATE TYPE pgflow.message_record AS (
    msg_id      bigint,
    read_ct     integer,
    enqueued_at timestamptz,
    vt          timestamptz,
    message     jsonb
);

-- What start_tasks returns: everything a handler needs (attempt: 1 for the
-- first run of the task).
CREATE TYPE pgflow.step_task_record AS (
    flow_slug  text,
    run_id     uuid,
    step_slug  text,
    input      jsonb,
    msg_id     bigint,
    task_index integer,
    attempt    integer
);
