-- Worker support: a registry with heartbeats, the structure check a worker
-- runs before it claims anything, and the flow input for handler contexts.
-- Registration is optional for the protocol: start_tasks accepts any worker
-- id, so a ten-line worker in any language needs none of this.

CREATE TABLE pgflow.workers (
    worker_id         uuid        NOT NULL,
    flow_slugs        text[]      NOT NULL,
    host              text,
    pid               integer,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz,
    CONSTRAINT workers_pkey PRIMARY KEY (worker_id)
);

COMMENT ON TABLE pgflow.workers IS
    'registered workers; live ones: stopped_at IS NULL AND last_heartbeat_at > now() - interval ''30 seconds''';

SELECT pg_catalog.pg_extension_config_dump('pgflow.workers', '');

-- register_worker: records a worker (or re-registers it after a restart of
-- the database connection).  Locks: the workers row.
-- Errors: 22004 NULL worker_id or flow_slugs.
CREATE FUNCTION pgflow.register_worker(worker_id uuid, flow_slugs text[], host text DEFAULT NULL,
                                       pid integer DEFAULT NULL)
RETURNS pgflow.workers
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_worker pgflow.workers;
BEGIN
    IF register_worker.worker_id IS NULL OR register_worker.flow_slugs IS NULL THEN
        RAISE EXCEPTION 'worker_id and flow_slugs must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass a random uuid and the flows the worker serves';
    END IF;
    INSERT INTO pgflow.workers AS w (worker_id, flow_slugs, host, pid)
    VALUES (register_worker.worker_id, register_worker.flow_slugs, register_worker.host,
            register_worker.pid)
    ON CONFLICT ON CONSTRAINT workers_pkey DO UPDATE
        SET flow_slugs = excluded.flow_slugs, host = excluded.host, pid = excluded.pid,
            last_heartbeat_at = now(), stopped_at = NULL
    RETURNING * INTO v_worker;
    RETURN v_worker;
END;
$$;

COMMENT ON FUNCTION pgflow.register_worker(uuid, text[], text, integer) IS
    'record a worker in pgflow.workers (optional for the protocol)';

-- worker_heartbeat: a registered worker is alive; false if it is unknown or
-- stopped (it should register again).  Locks: the workers row.
CREATE FUNCTION pgflow.worker_heartbeat(worker_id uuid)
RETURNS boolean
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH beat AS (
        UPDATE pgflow.workers AS w SET last_heartbeat_at = now()
        WHERE w.worker_id = worker_heartbeat.worker_id AND w.stopped_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM beat);
$$;

COMMENT ON FUNCTION pgflow.worker_heartbeat(uuid) IS
    'record that a registered worker is alive; false if unknown or stopped';

-- stop_worker: a worker stopped cleanly.  Locks: the workers row.
CREATE FUNCTION pgflow.stop_worker(worker_id uuid)
RETURNS boolean
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH stopped AS (
        UPDATE pgflow.workers AS w SET stopped_at = now()
        WHERE w.worker_id = stop_worker.worker_id AND w.stopped_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM stopped);
$$;

COMMENT ON FUNCTION pgflow.stop_worker(uuid) IS 'mark a registered worker stopped';

-- flow_shape: the structure of a flow as the database has it (what a worker
-- compares with its spec before claiming): steps in order with type,
-- dependencies, conditions and modes, plus the effective tunables ("wait":
-- {"event", "key"} for a wait step, else null; a wait step's timeout is its
-- own, null for none; "subflow": the flow a sub-flow step runs, as
-- add_subflow_step got it, else null).  NULL for an unknown flow.  Locks
-- nothing.
CREATE FUNCTION pgflow.flow_shape(flow_slug text)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'flow_slug', f.flow_slug,
        'flow_name', f.flow_name,
        'version', f.version,
        'max_attempts', f.opt_max_attempts,
        'base_delay', f.opt_base_delay,
        'timeout', f.opt_timeout,
        'heartbeat', f.opt_heartbeat,
        'max_delay', f.opt_max_delay,
        'jitter', f.opt_jitter,
        'steps', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'step_slug', s.step_slug,
                'step_type', s.step_type,
                'deps', coalesce((
                    SELECT jsonb_agg(d.dep_slug ORDER BY d.dep_slug COLLATE "C")
                    FROM pgflow.deps AS d
                    WHERE d.flow_slug = s.flow_slug AND d.step_slug = s.step_slug), '[]'::jsonb),
                'required_input_pattern', s.required_input_pattern,
                'forbidden_input_pattern', s.forbidden_input_pattern,
                'when_unmet', s.when_unmet,
                'when_exhausted', s.when_exhausted,
                'max_attempts', coalesce(s.opt_max_attempts, f.opt_max_attempts),
                'base_delay', coalesce(s.opt_base_delay, f.opt_base_delay),
                'timeout', CASE WHEN s.step_type = 'wait' THEN s.opt_timeout
                                ELSE coalesce(s.opt_timeout, f.opt_timeout) END,
                'wait', (SELECT jsonb_build_object('event', w.event_name,
                                                   'key', array_to_string(w.key_path, '.'))
                         FROM pgflow.step_waits AS w
                         WHERE w.flow_slug = s.flow_slug AND w.step_slug = s.step_slug),
                'subflow', (SELECT sf.subflow FROM pgflow.step_subflows AS sf
                            WHERE sf.flow_slug = s.flow_slug AND sf.step_slug = s.step_slug),
                'start_delay', coalesce(s.opt_start_delay, 0),
                'heartbeat', coalesce(s.opt_heartbeat, f.opt_heartbeat),
                'max_delay', coalesce(s.opt_max_delay, f.opt_max_delay),
                'jitter', coalesce(s.opt_jitter, f.opt_jitter)) ORDER BY s.step_index)
            FROM pgflow.steps AS s
            WHERE s.flow_slug = f.flow_slug), '[]'::jsonb))
    FROM pgflow.flows AS f
    WHERE f.flow_slug = flow_shape.flow_slug;
$$;

COMMENT ON FUNCTION pgflow.flow_shape(text) IS
    'the structure of a flow (steps, deps, conditions, modes, tunables) as JSON; NULL if unknown';

-- run_input: the input of a run (for handler contexts of map tasks, whose
-- task input is only their element).  NULL for an unknown run.
CREATE FUNCTION pgflow.run_input(run_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.input FROM pgflow.runs AS r WHERE r.run_id = run_input.run_id;
$$;

COMMENT ON FUNCTION pgflow.run_input(uuid) IS 'the input of a run; NULL if unknown';
