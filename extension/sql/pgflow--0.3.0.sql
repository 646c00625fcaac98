-- pgflow 0.3.0: frozen by `make release` from extension/src/; never edit (checksum in SHA256SUMS).
\echo Use "CREATE EXTENSION pgflow" to load this file. \quit

-- ---- src/000_schema.sql
-- pgflow schema: created by CREATE EXTENSION (schema = pgflow in the control
-- file).  Nothing in it is usable by PUBLIC: see 900_privileges.sql and
-- pgflow.grant_worker() / pgflow.grant_client().

COMMENT ON SCHEMA pgflow IS 'pgflow: durable DAG workflows (definitions, runs, task queue)';

-- ---- src/010_definition_tables.sql
-- Definition tables: flows, their steps and the dependency edges between them.
-- A definition is immutable in structure once created; only tunables change.
--
-- Versions: a flow *name* (order) may have several versions, each its own
-- immutable definition with its own runs.  Version 1 is the plain slug
-- (order); version N >= 2 is the definition slug order@N, which claims, runs
-- and events use.  flow_name and version say which is which;
-- current_versions pins the version start_flow('order') starts (default:
-- the highest).

CREATE TABLE pgflow.flows (
    flow_slug        text        NOT NULL,
    opt_max_attempts integer     NOT NULL DEFAULT 3,
    opt_base_delay   integer     NOT NULL DEFAULT 1,
    opt_timeout      integer     NOT NULL DEFAULT 60,
    opt_step_events  boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    opt_heartbeat    integer,
    opt_max_delay    integer,
    opt_jitter       boolean     NOT NULL DEFAULT false,
    flow_name        text        NOT NULL,
    version          integer     NOT NULL DEFAULT 1,
    CONSTRAINT flows_pkey PRIMARY KEY (flow_slug),
    CONSTRAINT flows_flow_name_version_key UNIQUE (flow_name, version),
    CONSTRAINT flows_flow_slug_check
        CHECK (flow_name ~ '^[a-zA-Z][a-zA-Z0-9_]{0,127}$' AND flow_name <> 'run'
               AND version >= 1
               AND flow_slug = flow_name || CASE WHEN version = 1 THEN '' ELSE '@' || version END),
    CONSTRAINT flows_opt_max_attempts_check CHECK (opt_max_attempts >= 1),
    CONSTRAINT flows_opt_base_delay_check CHECK (opt_base_delay >= 1),
    CONSTRAINT flows_opt_timeout_check CHECK (opt_timeout >= 3),
    CONSTRAINT flows_opt_heartbeat_check CHECK (opt_heartbeat >= 1),
    CONSTRAINT flows_opt_max_delay_check CHECK (opt_max_delay >= 1)
);

COMMENT ON TABLE pgflow.flows IS
    'flow definitions (one per version) with their default tunables';
COMMENT ON COLUMN pgflow.flows.flow_name IS
    'the stable name of the flow (start_flow(''order'') starts its current version)';
COMMENT ON COLUMN pgflow.flows.version IS
    'the version of this definition: 1 is the plain slug, N >= 2 the slug <name>@N';
COMMENT ON COLUMN pgflow.flows.opt_step_events IS
    'when true, step status changes are announced on the pgflow_events channel';
COMMENT ON COLUMN pgflow.flows.opt_heartbeat IS
    'seconds a started task''s lease lasts before its worker must renew it (NULL: no heartbeat, the lease is the timeout)';
COMMENT ON COLUMN pgflow.flows.opt_max_delay IS
    'longest pause in seconds before a retry (NULL: no cap but 2^31 - 1)';
COMMENT ON COLUMN pgflow.flows.opt_jitter IS
    'when true, each retry waits a random time between 0 and its backoff (full jitter)';

CREATE TABLE pgflow.steps (
    flow_slug               text        NOT NULL,
    step_slug               text        NOT NULL,
    step_type               text        NOT NULL DEFAULT 'single',
    step_index              integer     NOT NULL,
    deps_count              integer     NOT NULL DEFAULT 0,
    opt_max_attempts        integer,
    opt_base_delay          integer,
    opt_timeout             integer,
    opt_start_delay         integer,
    required_input_pattern  jsonb,
    forbidden_input_pattern jsonb,
    when_unmet              text        NOT NULL DEFAULT 'skip',
    when_exhausted          text        NOT NULL DEFAULT 'fail',
    created_at              timestamptz NOT NULL DEFAULT now(),
    opt_heartbeat           integer,
    opt_max_delay           integer,
    opt_jitter              boolean,
    CONSTRAINT steps_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT steps_flow_slug_step_index_key UNIQUE (flow_slug, step_index),
    CONSTRAINT steps_flow_slug_fkey FOREIGN KEY (flow_slug)
        REFERENCES pgflow.flows (flow_slug) ON DELETE CASCADE,
    CONSTRAINT steps_step_slug_check
        CHECK (step_slug ~ '^[a-zA-Z][a-zA-Z0-9_]{0,127}$' AND step_slug <> 'run'),
    CONSTRAINT steps_step_type_check CHECK (step_type IN ('single', 'map', 'wait')),
    CONSTRAINT steps_step_index_check CHECK (step_index >= 0),
    CONSTRAINT steps_deps_count_check
        CHECK (deps_count >= 0 AND (step_type <> 'map' OR deps_count <= 1)),
    CONSTRAINT steps_opt_max_attempts_check CHECK (opt_max_attempts >= 1),
    CONSTRAINT steps_opt_base_delay_check CHECK (opt_base_delay >= 1),
    CONSTRAINT steps_opt_timeout_check CHECK (opt_timeout >= 3),
    CONSTRAINT steps_opt_start_delay_check CHECK (opt_start_delay >= 0),
    CONSTRAINT steps_required_input_pattern_check
        CHECK (jsonb_typeof(required_input_pattern) = 'object'),
    CONSTRAINT steps_forbidden_input_pattern_check
        CHECK (jsonb_typeof(forbidden_input_pattern) = 'object'),
    CONSTRAINT steps_when_unmet_check CHECK (when_unmet IN ('skip', 'skip-cascade', 'fail')),
    CONSTRAINT steps_when_exhausted_check
        CHECK (when_exhausted IN ('fail', 'skip', 'skip-cascade')),
    CONSTRAINT steps_opt_heartbeat_check CHECK (opt_heartbeat >= 1),
    CONSTRAINT steps_opt_max_delay_check CHECK (opt_max_delay >= 1)
);

COMMENT ON TABLE pgflow.steps IS
    'steps of each flow in definition (topological) order; NULL opt_* inherit the flow''s';

CREATE TABLE pgflow.deps (
    flow_slug  text        NOT NULL,
    dep_slug   text        NOT NULL,
    step_slug  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deps_pkey PRIMARY KEY (flow_slug, step_slug, dep_slug),
    CONSTRAINT deps_dep_fkey FOREIGN KEY (flow_slug, dep_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT deps_step_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT deps_dep_slug_check CHECK (dep_slug <> step_slug)
);

COMMENT ON TABLE pgflow.deps IS 'dependency edges: step_slug runs after dep_slug';

CREATE INDEX deps_flow_slug_dep_slug_idx ON pgflow.deps (flow_slug, dep_slug);

-- step_waits: what each wait step (step_type 'wait') waits for: an event name
-- and the path of the key in its input ({"run": ..., "<dep>": ...}), e.g.
-- {run,order_id} for run.order_id.
CREATE TABLE pgflow.step_waits (
    flow_slug  text        NOT NULL,
    step_slug  text        NOT NULL,
    event_name text        NOT NULL,
    key_path   text[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT step_waits_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT step_waits_step_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT step_waits_event_name_check
        CHECK (event_name ~ '^[a-zA-Z][a-zA-Z0-9_.:-]{0,127}$'),
    CONSTRAINT step_waits_key_path_check CHECK (cardinality(key_path) >= 1)
);

COMMENT ON TABLE pgflow.step_waits IS
    'what each wait step waits for: emit_event(event_name, <its input at key_path>)';

-- step_subflows: the steps whose work is a run of another flow (added by
-- add_subflow_step).  subflow names the child flow as start_flow takes it: a
-- flow name (its current version when the child starts) or one definition
-- (ingest@2); it references that definition's row, so delete_flow refuses a
-- flow some step runs as a sub-flow.
CREATE TABLE pgflow.step_subflows (
    flow_slug  text        NOT NULL,
    step_slug  text        NOT NULL,
    subflow    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT step_subflows_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT step_subflows_step_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT step_subflows_subflow_fkey FOREIGN KEY (subflow)
        REFERENCES pgflow.flows (flow_slug)
);

COMMENT ON TABLE pgflow.step_subflows IS
    'sub-flow steps: each of their tasks is a run of the flow subflow (a name: its current version)';

CREATE INDEX step_subflows_subflow_idx ON pgflow.step_subflows (subflow);

CREATE TABLE pgflow.current_versions (
    flow_name  text        NOT NULL,
    version    integer     NOT NULL,
    pinned_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT current_versions_pkey PRIMARY KEY (flow_name),
    CONSTRAINT current_versions_flow_fkey FOREIGN KEY (flow_name, version)
        REFERENCES pgflow.flows (flow_name, version) ON DELETE CASCADE
);

COMMENT ON TABLE pgflow.current_versions IS
    'the version start_flow starts for a flow name, when pinned by set_current_version (else the highest)';

SELECT pg_catalog.pg_extension_config_dump('pgflow.flows', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.current_versions', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.steps', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.deps', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.step_waits', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.step_subflows', '');

-- ---- src/015_paused_flows.sql
-- Pause and resume: a paused flow's tasks are not claimed (read_with_poll,
-- claim_tasks and start_tasks return nothing for it); start_flow still
-- queues runs, and tasks already started finish and report normally.
-- A row here is a flow's pause (definition data: dumped with pg_dump).
CREATE TABLE pgflow.paused_flows (
    flow_slug text        NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text        NOT NULL DEFAULT session_user,
    CONSTRAINT paused_flows_pkey PRIMARY KEY (flow_slug),
    CONSTRAINT paused_flows_flow_slug_fkey FOREIGN KEY (flow_slug)
        REFERENCES pgflow.flows (flow_slug) ON DELETE CASCADE
);

COMMENT ON TABLE pgflow.paused_flows IS
    'flows whose tasks are not claimed until resume_flow (pause_flow adds the row)';

SELECT pg_catalog.pg_extension_config_dump('pgflow.paused_flows', '');

-- pause_flow: stops claims of the flow's tasks until resume_flow.  Runs
-- still start (their tasks queue); tasks already started finish and report.
-- A claim that began before the pause committed may still return tasks
-- (the pause does not wait for claims in flight).  Pausing a paused flow
-- keeps its first paused_at.  Returns true when the flow was not paused.
-- Owner only; it runs as its caller (like retry_run), so an operator role
-- needs EXECUTE on it (and resume_flow), SELECT on pgflow.flows and INSERT,
-- DELETE on pgflow.paused_flows.
-- Locks: the flow's row FOR SHARE (a concurrent delete_flow waits).
-- Errors: 22004 NULL slug; 22023 invalid slug; 42704 unknown flow.
CREATE FUNCTION pgflow.pause_flow(flow_slug text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_new boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', pause_flow.flow_slug);
    PERFORM 1 FROM pgflow.flows AS f WHERE f.flow_slug = pause_flow.flow_slug FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', pause_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'pgflow.list_flows() lists the flows';
    END IF;
    INSERT INTO pgflow.paused_flows (flow_slug)
    VALUES (pause_flow.flow_slug)
    ON CONFLICT ON CONSTRAINT paused_flows_pkey DO NOTHING;
    GET DIAGNOSTICS v_new = ROW_COUNT;
    RETURN v_new;
END;
$$;

COMMENT ON FUNCTION pgflow.pause_flow(text) IS
    'stop claims of a flow''s tasks until resume_flow (starts still queue); true when it was not paused';

-- resume_flow: lets claims take the flow's tasks again.  Tasks leased by
-- read_with_poll but refused by start_tasks during the pause are claimable
-- again when their lease (vt) has passed.  Returns true when it was paused.
-- Locks: the pause row.
-- Errors: 22004 NULL slug; 22023 invalid slug; 42704 unknown flow.
CREATE FUNCTION pgflow.resume_flow(flow_slug text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', resume_flow.flow_slug);
    IF NOT EXISTS (SELECT 1 FROM pgflow.flows AS f WHERE f.flow_slug = resume_flow.flow_slug) THEN
        RAISE EXCEPTION 'flow "%" does not exist', resume_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'pgflow.list_flows() lists the flows';
    END IF;
    DELETE FROM pgflow.paused_flows AS p WHERE p.flow_slug = resume_flow.flow_slug;
    GET DIAGNOSTICS v_was = ROW_COUNT;
    IF v_was THEN
        -- idle workers wait for a NOTIFY: tell them the tasks are claimable
        PERFORM pgflow._wake_workers(resume_flow.flow_slug);
    END IF;
    RETURN v_was;
END;
$$;

COMMENT ON FUNCTION pgflow.resume_flow(text) IS
    'let claims take a paused flow''s tasks again; true when it was paused';

-- ---- src/020_validation.sql
-- Argument validation shared by the definition functions.  Each helper raises
-- a clear error (SQLSTATE 22004 for NULL, 22023 for a bad value) naming the
-- argument, the offending value and how to fix it.

-- _check_slug: raises unless slug is a valid flow or step slug.
-- Rule (same in the Python tool): 1-128 chars, a letter then letters, digits
-- or underscores; "run" is reserved.  A flow slug may name a version of a
-- flow: <name>@N with N >= 2 (version 1 is the plain name).  Locks nothing.
CREATE FUNCTION pgflow._check_slug(kind text, slug text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_problem text;
    v_name text := slug;
BEGIN
    IF slug IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', kind
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass a slug such as ''my_flow''';
    END IF;
    IF kind = 'flow slug' AND strpos(slug, '@') > 0 THEN
        IF slug ~ '^[^@]+@[1-9][0-9]{0,8}$' AND substring(slug FROM '@([0-9]+)$')::integer >= 2 THEN
            v_name := split_part(slug, '@', 1);
        ELSE
            v_problem := 'a version is written "@" and a whole number >= 2 (version 1 is the plain name)';
        END IF;
    END IF;
    v_problem := coalesce(v_problem, CASE
        WHEN v_name = '' THEN 'it is empty'
        WHEN length(v_name) > 128 THEN format('it is %s characters long (at most 128)', length(v_name))
        WHEN v_name = 'run' THEN '"run" is reserved (it names the flow input in step inputs)'
        WHEN v_name !~ '^[a-zA-Z]' THEN 'it must start with a letter'
        WHEN v_name !~ '^[a-zA-Z][a-zA-Z0-9_]*$' THEN format(
            'character "%s" is not allowed',
            substring(v_name FROM '[^a-zA-Z0-9_]'))
    END);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid % "%": %', kind, left(slug, 200), v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'slugs are 1-128 characters: a letter, then letters, digits or underscores';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_slug(text, text) IS
    'raises 22004/22023 unless the value is a valid flow or step slug';

-- _check_option: raises unless value is NULL (when allowed) or >= minimum.
CREATE FUNCTION pgflow._check_option(name text, value integer, minimum integer, nullable boolean)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        IF NOT nullable THEN
            RAISE EXCEPTION '% must not be NULL', name
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = format('pass a number >= %s or leave the argument out for the default', minimum);
        END IF;
    ELSIF value < minimum THEN
        RAISE EXCEPTION '% must be >= %, got %', name, minimum, value
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('pass %s => %s or more', name, minimum);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_option(text, integer, integer, boolean) IS
    'raises 22004/22023 unless an option value is NULL (if allowed) or >= its minimum';

-- _check_choice: raises unless value is one of choices.
CREATE FUNCTION pgflow._check_choice(name text, value text, choices text[])
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('pass one of: %s', array_to_string(choices, ', '));
    ELSIF NOT value = ANY (choices) THEN
        RAISE EXCEPTION 'invalid % "%"', name, left(value, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('pass one of: %s', array_to_string(choices, ', '));
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_choice(text, text, text[]) IS
    'raises 22004/22023 unless a mode argument is one of the allowed values';

-- _check_pattern: raises unless pattern is NULL or a JSON object.
CREATE FUNCTION pgflow._check_pattern(name text, step_slug text, pattern jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pattern IS NOT NULL AND jsonb_typeof(pattern) <> 'object' THEN
        RAISE EXCEPTION '% of step "%" must be a JSON object, got %',
                name, step_slug, jsonb_typeof(pattern)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'patterns are matched with @> against the step input, e.g. {"run": {"kind": "a"}}';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_pattern(text, text, jsonb) IS
    'raises 22023 unless a condition pattern is NULL or a JSON object';

-- ---- src/100_create_flow.sql
-- create_flow: creates a flow definition, or updates the tunables of an
-- existing one (a call states the whole definition: omitted tunables mean
-- their defaults).  Re-running the same call is a no-op that returns the row.
-- heartbeat (seconds, NULL: none) makes a started task's lease short and
-- renewable (extend_leases); max_delay caps the pause before a retry; jitter
-- draws each pause at random below its backoff.
-- version (NULL: 1) makes the definition a version of the flow named
-- flow_slug: version 1 is the definition flow_slug itself, version N >= 2 the
-- definition <flow_slug>@N, whose slug add_step, claims and runs use.  The
-- returned row's flow_slug is the definition's.
-- concurrency (NULL: none) lets at most that many tasks of the flow's task
-- steps hold a slot at once, per distinct value of concurrency_key (a path
-- into the run's input: run.<field>...); steps with a limit of their own
-- follow theirs instead.  A tunable, like the others.
-- Locks: the flows row (insert or update).
-- Errors: 22004 NULL slug or option; 22023 invalid slug or option below its minimum.
CREATE FUNCTION pgflow.create_flow(
    flow_slug text,
    max_attempts integer DEFAULT 3,
    base_delay integer DEFAULT 1,
    timeout integer DEFAULT 60,
    step_events boolean DEFAULT false,
    heartbeat integer DEFAULT NULL,
    max_delay integer DEFAULT NULL,
    jitter boolean DEFAULT false,
    version integer DEFAULT NULL,
    concurrency integer DEFAULT NULL,
    concurrency_key text DEFAULT NULL
)
RETURNS pgflow.flows
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow pgflow.flows;
    v_version integer := coalesce(create_flow.version, 1);
    v_slug text;
    v_gate_key text[];
    v_before pgflow.flows;
BEGIN
    PERFORM pgflow._check_slug('flow slug', create_flow.flow_slug);
    IF strpos(create_flow.flow_slug, '@') > 0 THEN
        RAISE EXCEPTION 'create_flow takes the flow''s name, not "%"', create_flow.flow_slug
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('pass flow_slug => %L, version => %s',
                                split_part(create_flow.flow_slug, '@', 1),
                                split_part(create_flow.flow_slug, '@', 2));
    END IF;
    PERFORM pgflow._check_option('version', create_flow.version, 1, true);
    v_slug := create_flow.flow_slug || CASE WHEN v_version = 1 THEN '' ELSE '@' || v_version END;
    PERFORM pgflow._check_option('max_attempts', create_flow.max_attempts, 1, false);
    PERFORM pgflow._check_option('base_delay', create_flow.base_delay, 1, false);
    PERFORM pgflow._check_option('timeout', create_flow.timeout, 3, false);
    PERFORM pgflow._check_option('heartbeat', create_flow.heartbeat, 1, true);
    PERFORM pgflow._check_option('max_delay', create_flow.max_delay, 1, true);
    IF create_flow.step_events IS NULL THEN
        RAISE EXCEPTION 'step_events must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass true or false';
    END IF;
    IF create_flow.jitter IS NULL THEN
        RAISE EXCEPTION 'jitter must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass true or false';
    END IF;
    v_gate_key := pgflow._check_concurrency(format('flow "%s"', v_slug), create_flow.concurrency,
                                            create_flow.concurrency_key, ARRAY['run']);
    SELECT * INTO v_before FROM pgflow.flows AS f WHERE f.flow_slug = v_slug;

    INSERT INTO pgflow.flows AS f
        (flow_slug, opt_max_attempts, opt_base_delay, opt_timeout, opt_step_events,
         opt_heartbeat, opt_max_delay, opt_jitter, flow_name, version, opt_concurrency,
         opt_concurrency_key)
    VALUES
        (v_slug, create_flow.max_attempts, create_flow.base_delay,
         create_flow.timeout, create_flow.step_events, create_flow.heartbeat,
         create_flow.max_delay, create_flow.jitter, create_flow.flow_slug, v_version,
         create_flow.concurrency, v_gate_key)
    ON CONFLICT ON CONSTRAINT flows_pkey DO UPDATE
        SET opt_max_attempts = excluded.opt_max_attempts,
            opt_base_delay = excluded.opt_base_delay,
            opt_timeout = excluded.opt_timeout,
            opt_step_events = excluded.opt_step_events,
            opt_heartbeat = excluded.opt_heartbeat,
            opt_max_delay = excluded.opt_max_delay,
            opt_jitter = excluded.opt_jitter,
            opt_concurrency = excluded.opt_concurrency,
            opt_concurrency_key = excluded.opt_concurrency_key
        -- an identical re-run writes nothing
        WHERE (f.opt_max_attempts, f.opt_base_delay, f.opt_timeout, f.opt_step_events,
               f.opt_heartbeat, f.opt_max_delay, f.opt_jitter, f.opt_concurrency,
               f.opt_concurrency_key)
              IS DISTINCT FROM
              (excluded.opt_max_attempts, excluded.opt_base_delay, excluded.opt_timeout,
               excluded.opt_step_events, excluded.opt_heartbeat, excluded.opt_max_delay,
               excluded.opt_jitter, excluded.opt_concurrency, excluded.opt_concurrency_key)
    RETURNING * INTO v_flow;

    IF v_flow.flow_slug IS NULL THEN
        SELECT * INTO STRICT v_flow FROM pgflow.flows AS f WHERE f.flow_slug = v_slug;
    ELSIF v_before.flow_slug IS NOT NULL
          AND (v_before.opt_concurrency, v_before.opt_concurrency_key)
              IS DISTINCT FROM (v_flow.opt_concurrency, v_flow.opt_concurrency_key) THEN
        -- a changed limit takes effect at once for the parked tasks
        PERFORM pgflow._gate_refill_flow(v_slug);
    END IF;
    RETURN v_flow;
END;
$$;

COMMENT ON FUNCTION pgflow.create_flow(text, integer, integer, integer, boolean, integer, integer, boolean, integer, integer, text) IS
    'create a flow definition (or a version of one), or update its tunables (idempotent)';

-- ---- src/110_add_step.sql
-- _check_wait: raises unless a wait step's definition is valid: an event name
-- (a letter, then letters, digits, _ . : -; at most 128), a key path whose
-- first segment is run or one of the step's dependencies, no task tunables.
-- Returns the key path as an array ({run,order_id}).
-- Errors: 22004 NULL event or key; 22023 invalid name, path or tunable.
CREATE FUNCTION pgflow._check_wait(step_slug text, wait_event text, wait_key text, deps text[],
                                   task_options integer[], jitter boolean)
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[];
BEGIN
    IF wait_event IS NULL OR wait_key IS NULL THEN
        RAISE EXCEPTION 'wait step "%" needs wait_event and wait_key', step_slug
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'e.g. wait_event => ''payment_received'', wait_key => ''run.order_id''';
    END IF;
    IF wait_event !~ '^[a-zA-Z][a-zA-Z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'wait step "%": invalid event name "%"', step_slug, wait_event
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an event name starts with a letter, then letters, digits, _ . : or - (at most 128)';
    END IF;
    v_path := string_to_array(wait_key, '.');
    IF array_position(v_path, '') IS NOT NULL OR cardinality(v_path) < 2 THEN
        RAISE EXCEPTION 'wait step "%": invalid key path "%"', step_slug, wait_key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a dotted path into the step''s input, e.g. run.order_id or <dependency>.id';
    END IF;
    IF v_path[1] <> 'run' AND NOT v_path[1] = ANY (deps) THEN
        RAISE EXCEPTION 'wait step "%": key path "%" starts with "%", which is neither run nor a dependency',
                step_slug, wait_key, v_path[1]
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('start it with run or one of [%s]', array_to_string(deps, ', '));
    END IF;
    IF cardinality(array_remove(task_options, NULL)) > 0 OR jitter IS NOT NULL THEN
        RAISE EXCEPTION 'wait step "%" has no task: max_attempts, base_delay, start_delay, heartbeat, max_delay and jitter do not apply',
                step_slug
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'leave them out; timeout and when_exhausted say how long it waits and what then';
    END IF;
    RETURN v_path;
END;
$$;

COMMENT ON FUNCTION pgflow._check_wait(text, text, text, text[], integer[], boolean) IS
    'validate a wait step''s event name, key path and options; returns the key path as an array';

-- add_step: adds a step to a flow, after its dependencies (topological order).
-- Re-running the same call is a no-op returning the existing row; a call with
-- a different structure (dependencies, step type, conditions or modes) for an
-- existing step is refused; differing tunables are updated in place (NULL
-- means: inherit the flow's; heartbeat, max_delay and jitter as in
-- create_flow).  New steps are refused once the flow has runs.
-- A wait step (step_type => 'wait') has no handler: it waits for
-- emit_event(wait_event, <value at wait_key>); wait_key is a dotted path into
-- its input ({"run": run input, "<dep>": output}), e.g. run.order_id, whose
-- first segment is run or one of its dependencies; timeout is how long it
-- waits (NULL: no deadline, unlike task steps it does not inherit the flow's)
-- and when_exhausted what happens then.  Task tunables (max_attempts,
-- base_delay, start_delay, heartbeat, max_delay, jitter) do not apply to it.
-- Locks: the flows row FOR UPDATE (serialises definition changes of a flow
-- and step_index allocation), the steps row.
-- Errors: 22004 NULL argument; 22023 invalid slug, option, mode, pattern,
-- dependency list; 42704 unknown flow or dependency; 42P17 structure differs
-- from the existing step; 55000 the flow already has runs.
-- concurrency (NULL: none) lets at most that many of the step's tasks hold a
-- slot at once (started, leased, or waiting for a retry), per distinct value
-- of concurrency_key: a dotted path into the task's input whose first
-- segment is run, one of its dependencies or, for a map step, item (the
-- task's element); a missing key counts as null.  It replaces the flow's
-- limit for this step.  A tunable: a change applies at once to the step's
-- parked tasks, and to tasks created after it (see 230_concurrency.sql).
CREATE FUNCTION pgflow.add_step(
    flow_slug text,
    step_slug text,
    deps_slugs text[] DEFAULT '{}',
    max_attempts integer DEFAULT NULL,
    base_delay integer DEFAULT NULL,
    timeout integer DEFAULT NULL,
    start_delay integer DEFAULT NULL,
    step_type text DEFAULT 'single',
    required_input_pattern jsonb DEFAULT NULL,
    forbidden_input_pattern jsonb DEFAULT NULL,
    when_unmet text DEFAULT 'skip',
    when_exhausted text DEFAULT 'fail',
    heartbeat integer DEFAULT NULL,
    max_delay integer DEFAULT NULL,
    jitter boolean DEFAULT NULL,
    wait_event text DEFAULT NULL,
    wait_key text DEFAULT NULL,
    concurrency integer DEFAULT NULL,
    concurrency_key text DEFAULT NULL
)
RETURNS pgflow.steps
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deps text[];
    v_dup text;
    v_missing text;
    v_existing pgflow.steps;
    v_existing_deps text[];
    v_diffs text[] := '{}';
    v_step pgflow.steps;
    v_key_path text[];
    v_existing_wait pgflow.step_waits;
    v_gate_key text[];
BEGIN
    PERFORM pgflow._check_slug('flow slug', add_step.flow_slug);
    PERFORM pgflow._check_slug('step slug', add_step.step_slug);
    PERFORM pgflow._check_option('max_attempts', add_step.max_attempts, 1, true);
    PERFORM pgflow._check_option('base_delay', add_step.base_delay, 1, true);
    PERFORM pgflow._check_option('timeout', add_step.timeout, 3, true);
    PERFORM pgflow._check_option('start_delay', add_step.start_delay, 0, true);
    PERFORM pgflow._check_option('heartbeat', add_step.heartbeat, 1, true);
    PERFORM pgflow._check_option('max_delay', add_step.max_delay, 1, true);
    PERFORM pgflow._check_choice('step_type', add_step.step_type, ARRAY['single', 'map', 'wait']);
    PERFORM pgflow._check_choice('when_unmet', add_step.when_unmet,
                                 ARRAY['skip', 'skip-cascade', 'fail']);
    PERFORM pgflow._check_choice('when_exhausted', add_step.when_exhausted,
                                 ARRAY['fail', 'skip', 'skip-cascade']);
    PERFORM pgflow._check_pattern('required_input_pattern', add_step.step_slug,
                                  add_step.required_input_pattern);
    PERFORM pgflow._check_pattern('forbidden_input_pattern', add_step.step_slug,
                                  add_step.forbidden_input_pattern);

    -- dependency list: no NULLs, valid slugs, no duplicates, not itself
    IF add_step.deps_slugs IS NULL THEN
        RAISE EXCEPTION 'deps_slugs must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass ''{}'' (or leave it out) for a step without dependencies';
    END IF;
    IF array_position(add_step.deps_slugs, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'deps_slugs of step "%" contains NULL', add_step.step_slug
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'list the slugs of the steps it depends on';
    END IF;
    PERFORM pgflow._check_slug('dependency slug', d) FROM unnest(add_step.deps_slugs) AS d;
    SELECT d INTO v_dup
    FROM unnest(add_step.deps_slugs) AS d
    GROUP BY d
    HAVING count(*) > 1
    LIMIT 1;
    IF v_dup IS NOT NULL THEN
        RAISE EXCEPTION 'step "%" lists dependency "%" more than once', add_step.step_slug, v_dup
            USING ERRCODE = 'invalid_parameter_value', HINT = 'list each dependency once';
    END IF;
    IF add_step.step_slug = ANY (add_step.deps_slugs) THEN
        RAISE EXCEPTION 'step "%" cannot depend on itself', add_step.step_slug
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'flows are acyclic: remove it from deps_slugs';
    END IF;
    IF add_step.step_type = 'map' AND cardinality(add_step.deps_slugs) > 1 THEN
        RAISE EXCEPTION 'map step "%" has % dependencies (%); a map step takes its array from at most one',
                add_step.step_slug, cardinality(add_step.deps_slugs),
                array_to_string(add_step.deps_slugs, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'add a single step that combines them and map over its output';
    END IF;
    v_deps := ARRAY(SELECT d FROM unnest(add_step.deps_slugs) AS d ORDER BY d COLLATE "C");
    IF add_step.step_type = 'wait' THEN
        v_key_path := pgflow._check_wait(add_step.step_slug, add_step.wait_event, add_step.wait_key,
                                         v_deps, ARRAY[add_step.max_attempts, add_step.base_delay,
                                                       add_step.start_delay, add_step.heartbeat,
                                                       add_step.max_delay],
                                         add_step.jitter);
    ELSIF add_step.wait_event IS NOT NULL OR add_step.wait_key IS NOT NULL THEN
        RAISE EXCEPTION 'step "%" is a % step: wait_event and wait_key are only for wait steps',
                add_step.step_slug, add_step.step_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass step_type => ''wait'' to make it wait for an event';
    END IF;
    IF add_step.step_type = 'wait' AND add_step.concurrency IS NOT NULL THEN
        RAISE EXCEPTION 'wait step "%" has no task: concurrency does not apply', add_step.step_slug
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'limit the steps that depend on it instead';
    END IF;
    v_gate_key := pgflow._check_concurrency(format('step "%s"', add_step.step_slug),
                                            add_step.concurrency, add_step.concurrency_key,
                                            ARRAY['run'] || v_deps
                                            || CASE WHEN add_step.step_type = 'map'
                                                    THEN ARRAY['item'] ELSE '{}' END);

    PERFORM 1 FROM pgflow.flows AS f WHERE f.flow_slug = add_step.flow_slug FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', add_step.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = format('create it first: SELECT pgflow.create_flow(%L)', add_step.flow_slug);
    END IF;

    SELECT d INTO v_missing
    FROM unnest(add_step.deps_slugs) AS d
    WHERE NOT EXISTS (
        SELECT 1 FROM pgflow.steps AS s
        WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = d)
    LIMIT 1;

    SELECT * INTO v_existing
    FROM pgflow.steps AS s
    WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug;

    IF v_existing.step_slug IS NULL THEN
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'step "%" of flow "%" depends on unknown step "%"',
                    add_step.step_slug, add_step.flow_slug, v_missing
                USING ERRCODE = 'undefined_object',
                      HINT = format('add step "%s" first: steps are added in dependency order', v_missing);
        END IF;
        IF EXISTS (SELECT 1 FROM pgflow.runs AS r WHERE r.flow_slug = add_step.flow_slug) THEN
            RAISE EXCEPTION 'cannot add step "%" to flow "%": the flow already has runs',
                    add_step.step_slug, add_step.flow_slug
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = pgflow._next_version_hint(add_step.flow_slug,
                                                       'a flow''s structure is fixed once it has run');
        END IF;

        INSERT INTO pgflow.steps AS s (
            flow_slug, step_slug, step_type, step_index, deps_count,
            opt_max_attempts, opt_base_delay, opt_timeout, opt_start_delay,
            required_input_pattern, forbidden_input_pattern, when_unmet, when_exhausted,
            opt_heartbeat, opt_max_delay, opt_jitter, opt_concurrency, opt_concurrency_key)
        SELECT add_step.flow_slug, add_step.step_slug, add_step.step_type,
               (SELECT count(*) FROM pgflow.steps AS s2 WHERE s2.flow_slug = add_step.flow_slug),
               cardinality(v_deps),
               add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay,
               add_step.required_input_pattern, add_step.forbidden_input_pattern,
               add_step.when_unmet, add_step.when_exhausted,
               add_step.heartbeat, add_step.max_delay, add_step.jitter,
               add_step.concurrency, v_gate_key
        RETURNING * INTO v_step;

        INSERT INTO pgflow.deps (flow_slug, dep_slug, step_slug)
        SELECT add_step.flow_slug, d, add_step.step_slug FROM unnest(v_deps) AS d;
        IF add_step.step_type = 'wait' THEN
            INSERT INTO pgflow.step_waits (flow_slug, step_slug, event_name, key_path)
            VALUES (add_step.flow_slug, add_step.step_slug, add_step.wait_event, v_key_path);
        END IF;
        RETURN v_step;
    END IF;

    -- The step exists: the structure must match exactly.
    v_existing_deps := ARRAY(
        SELECT d.dep_slug FROM pgflow.deps AS d
        WHERE d.flow_slug = add_step.flow_slug AND d.step_slug = add_step.step_slug
        ORDER BY d.dep_slug COLLATE "C");
    IF v_existing_deps IS DISTINCT FROM v_deps THEN
        v_diffs := v_diffs || format('dependencies are [%s], not [%s]',
            array_to_string(v_existing_deps, ', '), array_to_string(v_deps, ', '));
    END IF;
    IF v_existing.step_type IS DISTINCT FROM add_step.step_type THEN
        v_diffs := v_diffs || format('step_type is %s, not %s', v_existing.step_type, add_step.step_type);
    END IF;
    IF v_existing.required_input_pattern IS DISTINCT FROM add_step.required_input_pattern THEN
        v_diffs := v_diffs || format('required_input_pattern is %s, not %s',
            coalesce(v_existing.required_input_pattern::text, 'NULL'),
            coalesce(add_step.required_input_pattern::text, 'NULL'));
    END IF;
    IF v_existing.forbidden_input_pattern IS DISTINCT FROM add_step.forbidden_input_pattern THEN
        v_diffs := v_diffs || format('forbidden_input_pattern is %s, not %s',
            coalesce(v_existing.forbidden_input_pattern::text, 'NULL'),
            coalesce(add_step.forbidden_input_pattern::text, 'NULL'));
    END IF;
    IF v_existing.when_unmet IS DISTINCT FROM add_step.when_unmet THEN
        v_diffs := v_diffs || format('when_unmet is %s, not %s', v_existing.when_unmet, add_step.when_unmet);
    END IF;
    IF v_existing.when_exhausted IS DISTINCT FROM add_step.when_exhausted THEN
        v_diffs := v_diffs || format('when_exhausted is %s, not %s',
            v_existing.when_exhausted, add_step.when_exhausted);
    END IF;
    SELECT * INTO v_existing_wait
    FROM pgflow.step_waits AS w
    WHERE w.flow_slug = add_step.flow_slug AND w.step_slug = add_step.step_slug;
    IF v_existing.step_type = 'wait' AND add_step.step_type = 'wait'
       AND (v_existing_wait.event_name, v_existing_wait.key_path)
           IS DISTINCT FROM (add_step.wait_event, v_key_path) THEN
        v_diffs := v_diffs || format('it waits for %s at %s, not %s at %s',
            v_existing_wait.event_name, array_to_string(v_existing_wait.key_path, '.'),
            add_step.wait_event, add_step.wait_key);
    END IF;
    IF cardinality(v_diffs) > 0 THEN
        RAISE EXCEPTION 'step "%" of flow "%" already exists with a different definition: %',
                add_step.step_slug, add_step.flow_slug, array_to_string(v_diffs, '; ')
            USING ERRCODE = 'invalid_object_definition',
                  HINT = pgflow._next_version_hint(add_step.flow_slug,
                                                   'a definition cannot change structure once created');
    END IF;

    -- Same structure: tunables may change in place; an identical call writes nothing.
    UPDATE pgflow.steps AS s
    SET opt_max_attempts = add_step.max_attempts,
        opt_base_delay = add_step.base_delay,
        opt_timeout = add_step.timeout,
        opt_start_delay = add_step.start_delay,
        opt_heartbeat = add_step.heartbeat,
        opt_max_delay = add_step.max_delay,
        opt_jitter = add_step.jitter,
        opt_concurrency = add_step.concurrency,
        opt_concurrency_key = v_gate_key
    WHERE s.flow_slug = add_step.flow_slug
      AND s.step_slug = add_step.step_slug
      AND (s.opt_max_attempts, s.opt_base_delay, s.opt_timeout, s.opt_start_delay,
           s.opt_heartbeat, s.opt_max_delay, s.opt_jitter, s.opt_concurrency, s.opt_concurrency_key)
          IS DISTINCT FROM
          (add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay,
           add_step.heartbeat, add_step.max_delay, add_step.jitter, add_step.concurrency, v_gate_key)
    RETURNING * INTO v_step;
    IF v_step.step_slug IS NULL THEN
        RETURN v_existing;
    END IF;
    -- a changed limit takes effect at once: parked tasks fill the slots it
    -- has now (a raised or removed limit un-parks them)
    IF (v_existing.opt_concurrency, v_existing.opt_concurrency_key)
       IS DISTINCT FROM (v_step.opt_concurrency, v_step.opt_concurrency_key) THEN
        PERFORM pgflow._gate_refill_flow(add_step.flow_slug);
    END IF;
    RETURN v_step;
END;
$$;

COMMENT ON FUNCTION pgflow.add_step(text, text, text[], integer, integer, integer, integer, text, jsonb, jsonb, text, text, integer, integer, boolean, text, text, integer, text) IS
    'add a step to a flow after its dependencies (idempotent; tunables update in place)';

-- ---- src/120_versions.sql
-- Versions and whole definitions.
--
-- A flow name has one or more versions, each an immutable definition
-- (version 1: the plain slug; N >= 2: <name>@N).  start_flow(name) starts
-- the current version: the one set_current_version pinned, else the highest.
-- Runs finish on the version they started with.
--
-- A migration written by pgflow-build states a whole definition; it ends
-- with check_flow_steps, which refuses a definition the database holds with
-- steps the migration lacks (create_flow and add_step alone cannot see a
-- removed step).  Migrations written by hand or by other tools do not call
-- it and apply as before.

-- _next_version_hint: "<why>; define version N+1 ..." for refusals of a
-- structure change.  Locks nothing.
CREATE FUNCTION pgflow._next_version_hint(flow_slug text, why text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := split_part(_next_version_hint.flow_slug, '@', 1);
    v_next integer;
BEGIN
    SELECT coalesce(max(f.version), 1) + 1 INTO v_next
    FROM pgflow.flows AS f WHERE f.flow_name = v_name;
    RETURN format('%s; define the next version: version: %s in the spec (pgflow-build writes it), or pgflow.create_flow(%L, version => %s)',
                  _next_version_hint.why, v_next, v_name, v_next);
END;
$$;

COMMENT ON FUNCTION pgflow._next_version_hint(text, text) IS
    'the hint of a refused structure change: which version to define next';

-- _resolve_flow: the definition slug start_flow uses for a flow reference:
-- a definition slug (order, order@3) as it is when it exists; a flow name
-- with a version, that version; a flow name alone, its current version.
-- NULL when there is no such definition.  Locks nothing.
CREATE FUNCTION pgflow._resolve_flow(flow_slug text, version integer)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_slug text;
BEGIN
    IF strpos(_resolve_flow.flow_slug, '@') > 0 THEN
        SELECT f.flow_slug INTO v_slug FROM pgflow.flows AS f
        WHERE f.flow_slug = _resolve_flow.flow_slug
          AND (_resolve_flow.version IS NULL OR f.version = _resolve_flow.version);
    ELSIF _resolve_flow.version IS NOT NULL THEN
        SELECT f.flow_slug INTO v_slug FROM pgflow.flows AS f
        WHERE f.flow_name = _resolve_flow.flow_slug AND f.version = _resolve_flow.version;
    ELSE
        -- the pinned version, else the highest (a plain flow: its only one)
        SELECT f.flow_slug INTO v_slug
        FROM pgflow.flows AS f
        LEFT JOIN pgflow.current_versions AS c ON c.flow_name = f.flow_name
        WHERE f.flow_name = _resolve_flow.flow_slug
        ORDER BY (f.version = c.version) IS TRUE DESC, f.version DESC
        LIMIT 1;
    END IF;
    RETURN v_slug;
END;
$$;

COMMENT ON FUNCTION pgflow._resolve_flow(text, integer) IS
    'the definition slug of a flow reference (name, name and version, or definition slug); NULL if none';

-- check_flow_steps: the end of a migration that states a whole definition:
-- refuses (42P17, naming each) steps of the definition that step_slugs does
-- not list -- a migration cannot remove a step; define a new version -- and
-- steps listed that the definition lacks.  Returns the flows row.
-- Locks: the flows row (FOR SHARE: no concurrent add_step).
-- Errors: 22004 NULL argument; 22023 invalid slug; 42704 unknown flow;
-- 42P17 the step lists differ.
CREATE FUNCTION pgflow.check_flow_steps(flow_slug text, step_slugs text[])
RETURNS pgflow.flows
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow pgflow.flows;
    v_extra text[];
    v_missing text[];
    v_diffs text[] := '{}';
BEGIN
    PERFORM pgflow._check_slug('flow slug', check_flow_steps.flow_slug);
    IF check_flow_steps.step_slugs IS NULL OR array_position(check_flow_steps.step_slugs, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'step_slugs must not be NULL or hold NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'list every step of the definition';
    END IF;
    SELECT * INTO v_flow FROM pgflow.flows AS f
    WHERE f.flow_slug = check_flow_steps.flow_slug FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', check_flow_steps.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'create it first with pgflow.create_flow()';
    END IF;
    v_extra := ARRAY(
        SELECT s.step_slug FROM pgflow.steps AS s
        WHERE s.flow_slug = check_flow_steps.flow_slug
          AND s.step_slug <> ALL (check_flow_steps.step_slugs)
        ORDER BY s.step_index);
    v_missing := ARRAY(
        SELECT d FROM unnest(check_flow_steps.step_slugs) AS d
        WHERE NOT EXISTS (SELECT 1 FROM pgflow.steps AS s
                          WHERE s.flow_slug = check_flow_steps.flow_slug AND s.step_slug = d)
        ORDER BY d);
    IF cardinality(v_extra) > 0 THEN
        v_diffs := v_diffs || format('the database has step%s %s, which the migration lacks',
                                     CASE WHEN cardinality(v_extra) > 1 THEN 's' ELSE '' END,
                                     (SELECT string_agg(format('"%s"', e), ', ') FROM unnest(v_extra) AS e));
    END IF;
    IF cardinality(v_missing) > 0 THEN
        v_diffs := v_diffs || format('the migration lists step%s %s, which the database lacks',
                                     CASE WHEN cardinality(v_missing) > 1 THEN 's' ELSE '' END,
                                     (SELECT string_agg(format('"%s"', m), ', ') FROM unnest(v_missing) AS m));
    END IF;
    IF cardinality(v_diffs) > 0 THEN
        RAISE EXCEPTION 'flow "%" (version %) has another structure than this migration: %',
                v_flow.flow_name, v_flow.version, array_to_string(v_diffs, '; ')
            USING ERRCODE = 'invalid_object_definition',
                  HINT = pgflow._next_version_hint(v_flow.flow_slug, 'a step cannot be removed from a definition');
    END IF;
    RETURN v_flow;
END;
$$;

COMMENT ON FUNCTION pgflow.check_flow_steps(text, text[]) IS
    'end of a whole-definition migration: refuse a definition whose steps differ from the list';

-- set_current_version: pins the version start_flow(flow_name) starts
-- (roll back or forward without a migration); version NULL unpins (the
-- highest version is current again).  Runs already started keep their
-- version.  Owner-only (an operator action).  Returns the version now current.
-- Locks: the current_versions row.
-- Errors: 22004 NULL flow_name; 22023 invalid name; 42704 unknown flow or version.
CREATE FUNCTION pgflow.set_current_version(flow_name text, version integer)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._check_slug('flow name', set_current_version.flow_name);
    IF NOT EXISTS (SELECT 1 FROM pgflow.flows AS f WHERE f.flow_name = set_current_version.flow_name) THEN
        RAISE EXCEPTION 'flow "%" does not exist', set_current_version.flow_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'pgflow.list_flows() lists the flows and their versions';
    END IF;
    IF set_current_version.version IS NULL THEN
        DELETE FROM pgflow.current_versions AS c WHERE c.flow_name = set_current_version.flow_name;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM pgflow.flows AS f
                       WHERE f.flow_name = set_current_version.flow_name
                         AND f.version = set_current_version.version) THEN
            RAISE EXCEPTION 'flow "%" has no version %', set_current_version.flow_name,
                    set_current_version.version
                USING ERRCODE = 'undefined_object',
                      HINT = 'apply the version''s migration first; pgflow.list_flows() lists the versions';
        END IF;
        INSERT INTO pgflow.current_versions AS c (flow_name, version)
        VALUES (set_current_version.flow_name, set_current_version.version)
        ON CONFLICT ON CONSTRAINT current_versions_pkey DO UPDATE
            SET version = excluded.version, pinned_at = now();
    END IF;
    RETURN (SELECT f.version FROM pgflow.flows AS f
            WHERE f.flow_slug = pgflow._resolve_flow(set_current_version.flow_name, NULL));
END;
$$;

COMMENT ON FUNCTION pgflow.set_current_version(text, integer) IS
    'pin the version start_flow(flow_name) starts (NULL: the highest again); returns it';

-- list_flows: every flow definition as a small JSON document: flow_slug,
-- flow_name, version, current (what start_flow(flow_name) starts), pinned,
-- its runs counted in all and by status (runs, runs_in_flight,
-- runs_completed, runs_failed, runs_cancelled), drained (no run in flight),
-- steps, created_at, paused (pause_flow).  Each count stops at count_limit
-- (10 000), so the call costs the same with a history of millions: a count
-- equal to count_limit means at least that many, and runs_completed is null
-- then (it is runs minus the others, known only while runs is exact).  For
-- `pgflow flows` and dashboards.  Locks nothing.
CREATE FUNCTION pgflow.list_flows()
RETURNS SETOF jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- see the counts below
SET enable_bitmapscan = off
-- the estimate of the correlated counts is above jit_above_cost: compiling
-- the query took 220 of the 270 ms a call took with 1 000 000 runs
SET jit = off
AS $$
    SELECT jsonb_build_object(
        'flow_slug', f.flow_slug,
        'flow_name', f.flow_name,
        'version', f.version,
        'current', f.flow_slug = pgflow._resolve_flow(f.flow_name, NULL),
        'pinned', c.version IS NOT NULL,
        'runs', n.runs,
        'runs_in_flight', n.started,
        'runs_completed', CASE WHEN n.runs < 10000 THEN n.runs - n.started - n.failed - n.cancelled END,
        'runs_failed', n.failed,
        'runs_cancelled', n.cancelled,
        'count_limit', 10000,
        'drained', n.started = 0,
        'steps', (SELECT count(*) FROM pgflow.steps AS s WHERE s.flow_slug = f.flow_slug),
        'created_at', f.created_at,
        'paused', EXISTS (SELECT 1 FROM pgflow.paused_flows AS p WHERE p.flow_slug = f.flow_slug))
    FROM pgflow.flows AS f
    LEFT JOIN pgflow.current_versions AS c ON c.flow_name = f.flow_name
    -- each count is an ordered range of at most 10 000 entries of an index
    -- (runs_flow_slug_started_at_idx, runs_flow_open_idx): a flow with a long
    -- history costs what one with 10 000 runs does.  A bitmap scan would read
    -- the flow's whole range before its LIMIT applies, and the planner picks
    -- one when the visibility map is not set (no VACUUM yet), hence
    -- enable_bitmapscan = off for this function
    CROSS JOIN LATERAL (
        SELECT (SELECT count(*) FROM (SELECT FROM pgflow.runs AS r
                                      WHERE r.flow_slug = f.flow_slug
                                      ORDER BY r.started_at LIMIT 10000) AS x) AS runs,
               (SELECT count(*) FROM (SELECT FROM pgflow.runs AS r
                                      WHERE r.flow_slug = f.flow_slug AND r.status = 'started'
                                      ORDER BY r.started_at LIMIT 10000) AS x) AS started,
               (SELECT count(*) FROM (SELECT FROM pgflow.runs AS r
                                      WHERE r.flow_slug = f.flow_slug AND r.status = 'failed'
                                      ORDER BY r.started_at LIMIT 10000) AS x) AS failed,
               (SELECT count(*) FROM (SELECT FROM pgflow.runs AS r
                                      WHERE r.flow_slug = f.flow_slug AND r.status = 'cancelled'
                                      ORDER BY r.started_at LIMIT 10000) AS x) AS cancelled
        OFFSET 0  -- counted once: flattened, each use of n.runs would count again
    ) AS n
    ORDER BY f.flow_name, f.version;
$$;

COMMENT ON FUNCTION pgflow.list_flows() IS
    'every flow definition with its version, whether it is current, and its runs by status (each count up to 10 000)';

-- ---- src/200_runtime_tables.sql
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

-- ---- src/210_engine_events.sql
-- Notifications.  NOTIFY is not free: a transaction that notifies takes a
-- cluster-wide lock from pre-commit until its commit is flushed, so notifying
-- commits serialise.  Identical notifications within a transaction are
-- collapsed by PostgreSQL, so each transaction sends at most one wake-up per
-- flow and one event per (event, run, step).

-- _waiting_key: the advisory-lock key (two int4s) by which workers waiting
-- for tasks of a flow make themselves known: classid 0x70676677 ("pgfw"),
-- objid from the md5 of the flow slug (stable across PostgreSQL versions; a
-- collision only costs an unneeded wake-up).
-- (PL/pgSQL, as every small function on the hot path here: a SQL function
-- with a SET clause is never inlined and is planned anew on every call.)
CREATE FUNCTION pgflow._waiting_key(flow_slug text)
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ('x' || left(md5(_waiting_key.flow_slug), 8))::bit(32)::integer;
END;
$$;

COMMENT ON FUNCTION pgflow._waiting_key(text) IS
    'advisory lock objid under which idle workers of a flow wait (classid 1885824631)';

-- _wake_workers: tells LISTENing workers that tasks of a flow are claimable now
-- (channel pgflow_tasks, payload = flow slug), but only when a worker waits:
-- idle workers hold a shared advisory lock on the flow's key (see
-- worker_idle), so a free exclusive try-lock means no other session waits
-- and the NOTIFY (and the commit serialisation it brings) is skipped.  The
-- session's own mark does not count (its own locks never conflict with its
-- try-lock): a worker that marks itself idle, claims and reports on one
-- connection is not waiting while it reports, and finds the work its own
-- report queued by claiming again.  Busy workers find the work on their next
-- claim.
-- Locks: the flow's advisory key for an instant (try, then released).
CREATE FUNCTION pgflow._wake_workers(flow_slug text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key integer := pgflow._waiting_key(flow_slug);
BEGIN
    IF pg_try_advisory_lock(1885824631, v_key) THEN
        PERFORM pg_advisory_unlock(1885824631, v_key);
    ELSE
        PERFORM pg_notify('pgflow_tasks', flow_slug);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._wake_workers(text) IS
    'NOTIFY pgflow_tasks with the flow slug if a worker waits (at most once per transaction)';

-- worker_idle: a worker says it is about to wait for NOTIFY pgflow_tasks
-- (idle => true) or is busy again (idle => false), for each of its flows.
-- Call it on the connection that LISTENs: the marks are session advisory
-- locks, released by idle => false or when the session ends.  Producers only
-- send wake-ups while some worker is marked idle, so NOTIFY costs nothing
-- under load.  Protocol: mark idle, claim once more, then wait (with a
-- fallback poll: a wake-up can be missed if work is committed while the
-- worker is marking itself idle).
-- Locks: shared session advisory locks (1885824631, _waiting_key(flow)).
-- Errors: 22004 NULL argument.
CREATE FUNCTION pgflow.worker_idle(flow_slugs text[], idle boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow text;
    v_held boolean;
BEGIN
    IF flow_slugs IS NULL OR idle IS NULL THEN
        RAISE EXCEPTION 'flow_slugs and idle must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the flows the worker serves, e.g. ARRAY[''my_flow'']';
    END IF;
    FOR v_flow, v_held IN
        SELECT f, EXISTS (
                   SELECT 1 FROM pg_locks AS l
                   WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()
                     AND l.classid = 1885824631
                     AND l.objid = pgflow._waiting_key(f)::bigint::bit(32)::bigint::oid
                     AND l.objsubid = 2)
        FROM (SELECT DISTINCT f FROM unnest(flow_slugs) AS f) AS d
    LOOP
        -- session advisory locks stack: take or release each mark only once
        IF idle AND NOT v_held THEN
            PERFORM pg_advisory_lock_shared(1885824631, pgflow._waiting_key(v_flow));
        ELSIF NOT idle AND v_held THEN
            PERFORM pg_advisory_unlock_shared(1885824631, pgflow._waiting_key(v_flow));
        END IF;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow.worker_idle(text[], boolean) IS
    'mark this session as waiting (or no longer) for NOTIFY pgflow_tasks of these flows';

-- _events_wanted: whether events are to be sent: while some session
-- subscribes (listen_events holds a shared advisory lock on (1885824632, 0))
-- or this session LISTENs on pgflow_events itself.  An event nobody waits
-- for would still serialise the commit.
-- Locks: the events advisory key for an instant (try, then released).
CREATE FUNCTION pgflow._events_wanted()
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_try_advisory_lock(1885824632, 0) THEN
        PERFORM pg_advisory_unlock(1885824632, 0);
        RETURN 'pgflow_events' = ANY (ARRAY(SELECT pg_listening_channels()));
    END IF;
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgflow._events_wanted() IS
    'whether a session subscribes to pgflow_events (listen_events) or this one LISTENs on it';

-- _emit: announces a run or step event on channel pgflow_events as a small
-- JSON object (ids and status, never outputs: NOTIFY payloads are < 8 kB;
-- "parent_run_id" for the events of a child run),
-- but only while _events_wanted says someone waits for it.
-- Locks: as _events_wanted.
CREATE FUNCTION pgflow._emit(event text, flow_slug text, run_id uuid, step_slug text, status text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgflow._events_wanted() THEN
        RETURN;
    END IF;
    PERFORM pg_notify('pgflow_events', jsonb_strip_nulls(
        jsonb_build_object(
            'event', event, 'flow_slug', flow_slug, 'run_id', run_id,
            'step_slug', step_slug, 'status', status,
            -- a child run's events name its parent run
            'parent_run_id', (SELECT r.parent_run_id FROM pgflow.runs AS r
                              WHERE r.run_id = _emit.run_id)))::text);
END;
$$;

COMMENT ON FUNCTION pgflow._emit(text, text, uuid, text, text) IS
    'NOTIFY pgflow_events with {"event", "flow_slug", "run_id", "step_slug"?, "status"} if subscribed';

-- listen_events: subscribes this session to the events on channel
-- pgflow_events (listening => true) or ends the subscription.  Events are
-- only sent while some session subscribes, so a client does both:
--     LISTEN pgflow_events; SELECT pgflow.listen_events();
-- The subscription is a shared session advisory lock on (1885824632, 0),
-- released by listening => false or when the session ends.
-- Errors: 22004 NULL argument.
CREATE FUNCTION pgflow.listen_events(listening boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_held boolean;
BEGIN
    IF listening IS NULL THEN
        RAISE EXCEPTION 'listening must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass true or false';
    END IF;
    SELECT EXISTS (
        SELECT 1 FROM pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()
          AND l.classid = 1885824632 AND l.objid = 0 AND l.objsubid = 2)
    INTO v_held;
    -- session advisory locks stack: take or release the mark only once
    IF listening AND NOT v_held THEN
        PERFORM pg_advisory_lock_shared(1885824632, 0);
    ELSIF NOT listening AND v_held THEN
        PERFORM pg_advisory_unlock_shared(1885824632, 0);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow.listen_events(boolean) IS
    'subscribe this session (or not) to pgflow_events: events are sent only while someone is';

-- _emit_step: _emit for a step status change, only when the flow opted in
-- (flows.opt_step_events).
CREATE FUNCTION pgflow._emit_step(flow_slug text, run_id uuid, step_slug text, status text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgflow._emit('step:' || _emit_step.step_slug || ':' || _emit_step.status,
                        _emit_step.flow_slug, _emit_step.run_id, _emit_step.step_slug,
                        _emit_step.status)
    FROM pgflow.flows AS f
    WHERE f.flow_slug = _emit_step.flow_slug AND f.opt_step_events;
$$;

COMMENT ON FUNCTION pgflow._emit_step(text, uuid, text, text) IS
    'announce a step status change on pgflow_events if the flow opted in';

-- ---- src/220_engine_internals.sql
-- Engine internals: the state transitions shared by the protocol functions.
--
-- Lock order (deadlock freedom): a task row, then its step_states row, then
-- the runs row, then dependent step_states rows.  Every transaction that
-- touches the step_states of *other* steps holds the runs row first, so
-- completions of sibling steps in one run serialise on the run, and never
-- lock each other's rows in opposite orders.

-- _complete_run: marks a started run completed with output {leaf_step: output}
-- over its completed leaf steps (skipped leaves are absent).
-- Locks: the runs row (already held by the caller).
CREATE FUNCTION pgflow._complete_run(run_id uuid)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
BEGIN
    UPDATE pgflow.runs AS r
    SET status = 'completed',
        completed_at = now(),
        output = pgflow._run_output(r.run_id)
    WHERE r.run_id = _complete_run.run_id AND r.status = 'started'
    RETURNING r.flow_slug INTO v_flow_slug;
    IF FOUND THEN
        PERFORM pgflow._emit('run:completed', v_flow_slug, _complete_run.run_id, NULL, 'completed');
        -- a child run reports to its parent task (nothing for other runs)
        PERFORM pgflow._child_finished(_complete_run.run_id);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._complete_run(uuid) IS
    'mark a run completed with {leaf_step: output} over its completed leaves';

-- _steps_finished: bookkeeping after steps completed or were skipped (their
-- own rows already say so), for any number of runs at once: element i of
-- run_ids and step_slugs is one such step.  In as few row writes as
-- possible: one UPDATE per run (remaining_steps; a run with nothing left is
-- completed by that same UPDATE, with its output) and one UPDATE per
-- dependent that still waits (remaining_deps).  A dependent that waits on
-- nothing any more and starts inline (_inline_steps: a single step without
-- conditions) is started by that same UPDATE and its task queued; the
-- others are left for _start_ready_steps.  Workers are woken once per flow.
-- Returns the runs (in run_id order) that have such a dependent left.
-- Locks: the runs rows (run_id order), then dependent step_states rows
-- (which only a holder of their run's row changes).
CREATE FUNCTION pgflow._steps_finished(run_ids uuid[], step_slugs text[])
RETURNS uuid[]
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run uuid;
    v_n integer;
    v_remaining integer;
    v_status text;
    v_flow_slug text;
    v_live uuid[] := '{}';
    v_pending uuid[];
    v_wake text[];
    v_event_runs uuid[];
    v_event_steps text[];
    v_event_flows text[];
    v_parent uuid;
    v_children uuid[] := '{}';
    v_priority integer;
    v_priorities integer[] := '{}';
BEGIN
    IF cardinality(_steps_finished.run_ids) = 0 THEN
        RETURN '{}';
    END IF;
    -- Run by run, in run_id order (the lock order): the row is locked and
    -- read first, then updated by a statement of its own, whose snapshot is
    -- taken after every sibling completion the lock waited for had
    -- committed, so a run's output sees every leaf (in the locking statement
    -- it would still read the old rows).  Single-row statements keep the
    -- plans on the primary key whatever the statistics say.
    FOR v_run, v_n IN
        SELECT f.run_id, count(DISTINCT f.step_slug)::integer
        FROM unnest(_steps_finished.run_ids, _steps_finished.step_slugs) AS f(run_id, step_slug)
        GROUP BY f.run_id
        ORDER BY f.run_id
    LOOP
        SELECT r.remaining_steps, r.status, r.flow_slug, r.parent_run_id, r.priority
        INTO v_remaining, v_status, v_flow_slug, v_parent, v_priority
        FROM pgflow.runs AS r
        WHERE r.run_id = v_run
        FOR UPDATE;
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        IF v_remaining <> v_n THEN
            UPDATE pgflow.runs AS r
            SET remaining_steps = r.remaining_steps - v_n
            WHERE r.run_id = v_run;
            v_live := v_live || v_run;
            v_priorities := v_priorities || v_priority;
        ELSE
            UPDATE pgflow.runs AS r
            SET remaining_steps = 0, status = 'completed', completed_at = now(),
                output = pgflow._run_output(r.run_id)
            WHERE r.run_id = v_run;
            PERFORM pgflow._emit('run:completed', v_flow_slug, v_run, NULL, 'completed');
            IF v_parent IS NOT NULL THEN
                v_children := v_children || v_run;
            END IF;
        END IF;
    END LOOP;

    IF cardinality(v_live) = 0 THEN
        -- completed child runs report to their parent tasks once this
        -- batch's bookkeeping is done
        PERFORM pgflow._child_finished(c) FROM unnest(v_children) AS c;
        RETURN '{}';
    END IF;

    WITH fin AS (
        SELECT DISTINCT f.run_id, f.step_slug, ss.flow_slug
        FROM unnest(_steps_finished.run_ids, _steps_finished.step_slugs) AS f(run_id, step_slug)
        JOIN pgflow.step_states AS ss ON ss.run_id = f.run_id AND ss.step_slug = f.step_slug
        WHERE f.run_id = ANY (v_live)
    ), waiting AS (
        SELECT fin.run_id, d.step_slug, count(*)::integer AS n,
               bool_and(s.inline) AS simple,
               max(coalesce(s.opt_start_delay, 0)) AS start_delay
        FROM fin
        JOIN pgflow.deps AS d ON d.flow_slug = fin.flow_slug AND d.dep_slug = fin.step_slug
        JOIN pgflow._inline_steps AS s ON s.flow_slug = d.flow_slug AND s.step_slug = d.step_slug
        GROUP BY fin.run_id, d.step_slug
    ), updated AS (
        -- no lock is taken first: a step that waits is only ever changed by a
        -- transaction holding its run's row, as this one does
        UPDATE pgflow.step_states AS ss
        SET remaining_deps = ss.remaining_deps - w.n,
            status = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN 'started' ELSE ss.status END,
            started_at = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN now() ELSE ss.started_at END,
            initial_tasks = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN 1 ELSE ss.initial_tasks END,
            remaining_tasks = CASE WHEN ss.remaining_deps = w.n AND w.simple THEN 1 ELSE ss.remaining_tasks END
        FROM waiting AS w
        WHERE ss.run_id = w.run_id AND ss.step_slug = w.step_slug
          AND ss.status = 'created'
        RETURNING ss.run_id, ss.step_slug, ss.flow_slug, ss.status, ss.remaining_deps, w.start_delay
    ), queued AS (
        INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority)
        SELECT u.run_id, u.step_slug, 0, u.flow_slug, now() + make_interval(secs => u.start_delay),
               -- the run's priority, read with its row above (mostly all 0)
               CASE WHEN v_priorities <@ '{0}' THEN 0
                    ELSE (SELECT l.priority FROM unnest(v_live, v_priorities) AS l(run_id, priority)
                          WHERE l.run_id = u.run_id) END
        FROM updated AS u
        WHERE u.status = 'started'
        RETURNING run_id, step_slug, flow_slug, vt <= now() AS ready
    )
    SELECT (SELECT array_agg(DISTINCT u.run_id ORDER BY u.run_id) FROM updated AS u
            WHERE u.status = 'created' AND u.remaining_deps = 0),
           (SELECT array_agg(DISTINCT q.flow_slug) FROM queued AS q WHERE q.ready),
           e.runs, e.steps, e.flows
    INTO v_pending, v_wake, v_event_runs, v_event_steps, v_event_flows
    FROM (
        -- the started steps of flows that send step events
        SELECT array_agg(q.run_id ORDER BY q.run_id, q.step_slug) AS runs,
               array_agg(q.step_slug ORDER BY q.run_id, q.step_slug) AS steps,
               array_agg(q.flow_slug ORDER BY q.run_id, q.step_slug) AS flows
        FROM queued AS q
        JOIN pgflow.flows AS f ON f.flow_slug = q.flow_slug AND f.opt_step_events
    ) AS e;

    IF v_wake IS NOT NULL THEN
        PERFORM pgflow._wake_workers(w) FROM unnest(v_wake) AS w;
    END IF;
    IF v_event_runs IS NOT NULL THEN
        PERFORM pgflow._emit_step(e.flow_slug, e.run_id, e.step_slug, 'started')
        FROM unnest(v_event_runs, v_event_steps, v_event_flows) AS e(run_id, step_slug, flow_slug);
    END IF;
    PERFORM pgflow._child_finished(c) FROM unnest(v_children) AS c;
    RETURN coalesce(v_pending, '{}');
END;
$$;

COMMENT ON FUNCTION pgflow._steps_finished(uuid[], text[]) IS
    'after steps completed or were skipped: update their runs and dependents; start simple ones';

-- _run_output: {leaf_step: output} over the completed leaf steps of a run
-- (skipped leaves are absent).
CREATE FUNCTION pgflow._run_output(run_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
        SELECT coalesce(jsonb_object_agg(ss.step_slug, ss.output), '{}'::jsonb)
        FROM pgflow.step_states AS ss
        WHERE ss.run_id = _run_output.run_id
          AND ss.status = 'completed'
          AND NOT EXISTS (
              SELECT 1 FROM pgflow.deps AS d
              WHERE d.flow_slug = ss.flow_slug AND d.dep_slug = ss.step_slug));
END;
$$;

COMMENT ON FUNCTION pgflow._run_output(uuid) IS
    'the output of a run: {leaf_step: output} over its completed leaf steps';

-- _complete_step: marks a step completed with its output, sends its event
-- (if the flow opted in) and does the run's bookkeeping (_steps_finished).
-- Returns true when a dependent is left for _start_ready_steps, which the
-- caller then runs.
-- Locks: the step_states row, then as _steps_finished.
CREATE FUNCTION pgflow._complete_step(run_id uuid, step_slug text, output jsonb)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
BEGIN
    UPDATE pgflow.step_states AS ss
    SET status = 'completed',
        output = _complete_step.output,
        remaining_tasks = 0,
        completed_at = now()
    WHERE ss.run_id = _complete_step.run_id AND ss.step_slug = _complete_step.step_slug
    RETURNING ss.flow_slug INTO v_flow_slug;
    PERFORM pgflow._emit_step(v_flow_slug, _complete_step.run_id, _complete_step.step_slug,
                              'completed');
    RETURN cardinality(pgflow._steps_finished(ARRAY[_complete_step.run_id],
                                              ARRAY[_complete_step.step_slug])) > 0;
END;
$$;

COMMENT ON FUNCTION pgflow._complete_step(uuid, text, jsonb) IS
    'mark a step completed with its output and update counters; true if steps wait for a start';

-- _skip_steps: skips a step (reason given) and, with cascade, every step
-- downstream of it that has not started (reason dependency_skipped).  Tasks of
-- the skipped steps that are still queued or running are cancelled (their late
-- completions change nothing).  Returns the slugs it skipped.  The caller then
-- starts steps that became ready.
-- Locks: the step_states rows, their task rows, then as _steps_finished.
CREATE FUNCTION pgflow._skip_steps(run_id uuid, step_slug text, reason text, cascade boolean)
RETURNS text[]
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
    v_targets text[];
    v_skipped text[];
BEGIN
    SELECT ss.flow_slug INTO v_flow_slug
    FROM pgflow.step_states AS ss
    WHERE ss.run_id = _skip_steps.run_id AND ss.step_slug = _skip_steps.step_slug;

    IF cascade THEN
        WITH RECURSIVE downstream(step_slug) AS (
            SELECT _skip_steps.step_slug
            UNION
            SELECT d.step_slug
            FROM pgflow.deps AS d
            JOIN downstream AS ds ON d.dep_slug = ds.step_slug
            WHERE d.flow_slug = v_flow_slug
        )
        SELECT array_agg(ds.step_slug) INTO v_targets FROM downstream AS ds;
    ELSE
        v_targets := ARRAY[_skip_steps.step_slug];
    END IF;

    WITH skipped AS (
        UPDATE pgflow.step_states AS ss
        SET status = 'skipped',
            skip_reason = CASE WHEN ss.step_slug = _skip_steps.step_slug
                               THEN _skip_steps.reason ELSE 'dependency_skipped' END,
            skipped_at = now()
        WHERE ss.run_id = _skip_steps.run_id
          AND ss.step_slug = ANY (v_targets)
          AND ss.status IN ('created', 'started')
        RETURNING ss.step_slug
    )
    SELECT coalesce(array_agg(s.step_slug), '{}') INTO v_skipped FROM skipped AS s;

    UPDATE pgflow.step_tasks AS t
    SET status = 'cancelled'
    WHERE t.run_id = _skip_steps.run_id
      AND t.step_slug = ANY (v_skipped)
      AND t.status IN ('queued', 'started');
    -- the running child runs of sub-flow tasks just cancelled are cancelled too
    PERFORM pgflow._cancel_children(_skip_steps.run_id, false);

    PERFORM pgflow._emit_step(v_flow_slug, _skip_steps.run_id, s, 'skipped')
    FROM unnest(v_skipped) AS s;
    PERFORM pgflow._steps_finished(array_fill(_skip_steps.run_id, ARRAY[cardinality(v_skipped)]),
                                   v_skipped);
    RETURN v_skipped;
END;
$$;

COMMENT ON FUNCTION pgflow._skip_steps(uuid, text, text, boolean) IS
    'skip a step (and with cascade everything downstream of it) and update counters';

-- _fail_run: fails a started run because of one step: the step becomes
-- failed, the run failed (failed_at, error_message), every queued or running
-- task of the run cancelled and every other started step cancelled, so nothing
-- of the run keeps running and late completions change nothing.
-- Locks: the step_states row, the runs row, the run's open task rows.
CREATE FUNCTION pgflow._fail_run(run_id uuid, step_slug text, error_message text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow_slug text;
BEGIN
    UPDATE pgflow.step_states AS ss
    SET status = 'failed', failed_at = now(), error_message = _fail_run.error_message
    WHERE ss.run_id = _fail_run.run_id
      AND ss.step_slug = _fail_run.step_slug
      AND ss.status IN ('created', 'started');

    UPDATE pgflow.runs AS r
    SET status = 'failed',
        failed_at = now(),
        error_message = format('step "%s" failed: %s', _fail_run.step_slug, _fail_run.error_message)
    WHERE r.run_id = _fail_run.run_id AND r.status = 'started'
    RETURNING r.flow_slug INTO v_flow_slug;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    UPDATE pgflow.step_tasks AS t
    SET status = 'cancelled'
    WHERE t.run_id = _fail_run.run_id AND t.status IN ('queued', 'started');

    UPDATE pgflow.step_states AS ss
    SET status = 'cancelled'
    WHERE ss.run_id = _fail_run.run_id AND ss.status = 'started';

    PERFORM pgflow._emit_step(v_flow_slug, _fail_run.run_id, _fail_run.step_slug, 'failed');
    PERFORM pgflow._emit('run:failed', v_flow_slug, _fail_run.run_id, NULL, 'failed');
    -- its running child runs are cancelled; a child run reports to its parent
    PERFORM pgflow._cancel_children(_fail_run.run_id, false);
    PERFORM pgflow._child_finished(_fail_run.run_id);
END;
$$;

COMMENT ON FUNCTION pgflow._fail_run(uuid, text, text) IS
    'fail a run because of one step and cancel everything of it still open';

-- _start_ready_steps: starts every step of a run that waits on nothing,
-- repeating until none is left, so cascades (skips, empty maps) of any depth
-- resolve in the calling transaction.  For each ready step, in step order:
--   * a map step whose source step was skipped is skipped (dependency_skipped);
--   * conditions are evaluated against {"run": input, "<dep>": output, ...};
--     unmet -> when_unmet (skip, skip-cascade, fail);
--   * a map step over a non-array fails the run; over [] it completes with [];
--   * a wait step gets no task: _start_wait makes it wait for its event
--     (or completes it with a kept one);
--   * a sub-flow step's tasks are created started and never claimable; a
--     child run per task starts after the loop (_start_children);
--   * otherwise its tasks are queued (vt = now() + start_delay) and workers
--     are woken when they are claimable at once; the tasks of a step under a
--     concurrency limit (its own, else its flow's) are queued parked (vt =
--     infinity) with their gate, and the gates are refilled after the loop.
-- Locks: the ready step_states rows (after the runs row, held by the caller
-- or by the bookkeeping it triggers).
CREATE FUNCTION pgflow._start_ready_steps(run_id uuid)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_step record;
    v_input jsonb;
    v_source jsonb;
    v_source_status text;
    v_count integer;
    v_wake boolean := false;
    v_progress boolean;
    v_skipped text[] := '{}';
    v_step_events boolean;
    v_subflow_steps text[] := '{}';
    v_flow_limit integer;
    v_flow_key text[];
    v_gates text[] := '{}';
BEGIN
    SELECT * INTO v_run FROM pgflow.runs AS r WHERE r.run_id = _start_ready_steps.run_id;
    IF v_run.status IS DISTINCT FROM 'started' THEN
        RETURN;
    END IF;
    SELECT f.opt_step_events, f.opt_concurrency, f.opt_concurrency_key
    INTO v_step_events, v_flow_limit, v_flow_key
    FROM pgflow.flows AS f WHERE f.flow_slug = v_run.flow_slug;
    LOOP
        v_progress := false;

        FOR v_step IN
            SELECT ss.step_slug, s.step_type, s.deps_count, s.when_unmet,
                   s.required_input_pattern, s.forbidden_input_pattern,
                   coalesce(s.opt_start_delay, 0) AS start_delay,
                   s.opt_concurrency, s.opt_concurrency_key,
                   EXISTS (SELECT 1 FROM pgflow.step_subflows AS sf
                           WHERE sf.flow_slug = s.flow_slug AND sf.step_slug = s.step_slug) AS subflow
            FROM pgflow.step_states AS ss
            JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            WHERE ss.run_id = _start_ready_steps.run_id
              AND ss.status = 'created'
              AND ss.remaining_deps = 0
            ORDER BY s.step_index
            FOR UPDATE OF ss
        LOOP
            -- an earlier skip-cascade of this round may have skipped this step
            -- (a failed run returns at once, below)
            CONTINUE WHEN v_step.step_slug = ANY (v_skipped);
            v_progress := true;

            IF v_step.step_type = 'map' AND v_step.deps_count = 1 THEN
                SELECT ds.output, ds.status INTO v_source, v_source_status
                FROM pgflow.deps AS d
                JOIN pgflow.step_states AS ds
                  ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                WHERE d.flow_slug = v_run.flow_slug AND d.step_slug = v_step.step_slug;
                IF v_source_status = 'skipped' THEN
                    v_skipped := v_skipped || pgflow._skip_steps(_start_ready_steps.run_id,
                        v_step.step_slug, 'dependency_skipped', false);
                    CONTINUE;
                END IF;
            ELSIF v_step.step_type = 'map' THEN
                v_source := v_run.input;
            END IF;

            IF v_step.required_input_pattern IS NOT NULL
               OR v_step.forbidden_input_pattern IS NOT NULL THEN
                v_input := jsonb_build_object('run', v_run.input) || coalesce((
                    SELECT jsonb_object_agg(d.dep_slug, ds.output)
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = v_run.flow_slug
                      AND d.step_slug = v_step.step_slug
                      AND ds.status = 'completed'), '{}'::jsonb);
                IF NOT (coalesce(v_input @> v_step.required_input_pattern, true)
                        AND NOT coalesce(v_input @> v_step.forbidden_input_pattern, false)) THEN
                    IF v_step.when_unmet = 'fail' THEN
                        PERFORM pgflow._fail_run(_start_ready_steps.run_id, v_step.step_slug,
                            'condition not met (when_unmet = fail)');
                        RETURN;
                    END IF;
                    v_skipped := v_skipped || pgflow._skip_steps(_start_ready_steps.run_id,
                        v_step.step_slug, 'condition_unmet', v_step.when_unmet = 'skip-cascade');
                    CONTINUE;
                END IF;
            END IF;

            IF v_step.step_type = 'wait' THEN
                -- no task: it waits for its event (or consumes a kept one)
                v_input := jsonb_build_object('run', v_run.input) || coalesce((
                    SELECT jsonb_object_agg(d.dep_slug, ds.output)
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = v_run.flow_slug
                      AND d.step_slug = v_step.step_slug
                      AND ds.status = 'completed'), '{}'::jsonb);
                IF pgflow._start_wait(_start_ready_steps.run_id, v_run.flow_slug, v_step.step_slug,
                                      v_input) = 'failed' THEN
                    RETURN;
                END IF;
                CONTINUE;
            END IF;

            IF v_step.step_type = 'map' THEN
                IF jsonb_typeof(v_source) IS DISTINCT FROM 'array' THEN
                    PERFORM pgflow._fail_run(_start_ready_steps.run_id, v_step.step_slug,
                        format('map step "%s" needs an array as input, got %s',
                               v_step.step_slug, coalesce(jsonb_typeof(v_source), 'nothing')));
                    RETURN;
                END IF;
                v_count := jsonb_array_length(v_source);
            ELSE
                v_count := 1;
            END IF;

            UPDATE pgflow.step_states AS ss
            SET status = 'started',
                started_at = now(),
                initial_tasks = v_count,
                remaining_tasks = v_count
            WHERE ss.run_id = _start_ready_steps.run_id AND ss.step_slug = v_step.step_slug;
            IF v_step_events THEN
                PERFORM pgflow._emit_step(v_run.flow_slug, _start_ready_steps.run_id,
                                          v_step.step_slug, 'started');
            END IF;

            IF v_count = 0 THEN
                PERFORM pgflow._complete_step(_start_ready_steps.run_id, v_step.step_slug, '[]'::jsonb);
                CONTINUE;
            END IF;

            IF v_step.subflow THEN
                -- tasks no worker claims; their child runs start after this loop
                PERFORM pgflow._queue_subflow_tasks(_start_ready_steps.run_id, v_run.flow_slug,
                                                    v_step.step_slug, v_count);
                v_subflow_steps := v_subflow_steps || v_step.step_slug;
                CONTINUE;
            END IF;

            IF v_step.opt_concurrency IS NULL AND v_flow_limit IS NULL THEN
                INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority)
                SELECT _start_ready_steps.run_id, v_step.step_slug, i, v_run.flow_slug,
                       now() + make_interval(secs => v_step.start_delay), v_run.priority
                FROM generate_series(0, v_count - 1) AS i;
                v_wake := v_wake OR v_step.start_delay = 0;
                CONTINUE;
            END IF;

            -- gated: parked under its gate until _gate_refill gives it a slot
            v_input := jsonb_build_object('run', v_run.input) || coalesce((
                SELECT jsonb_object_agg(d.dep_slug, ds.output)
                FROM pgflow.deps AS d
                JOIN pgflow.step_states AS ds
                  ON ds.run_id = _start_ready_steps.run_id AND ds.step_slug = d.dep_slug
                WHERE d.flow_slug = v_run.flow_slug
                  AND d.step_slug = v_step.step_slug
                  AND ds.status = 'completed'), '{}'::jsonb);
            WITH parked AS (
                INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt, priority,
                                               gate)
                SELECT _start_ready_steps.run_id, v_step.step_slug, i, v_run.flow_slug, 'infinity',
                       v_run.priority,
                       CASE WHEN v_step.opt_concurrency IS NOT NULL
                            THEN pgflow._gate_of(v_step.step_slug, v_step.opt_concurrency_key, v_input,
                                                 CASE WHEN v_step.step_type = 'map' THEN v_source -> i END)
                            ELSE pgflow._gate_of('*', v_flow_key, v_input, NULL) END
                FROM generate_series(0, v_count - 1) AS i
                RETURNING gate
            )
            SELECT v_gates || array_agg(DISTINCT p.gate) INTO v_gates FROM parked AS p;
        END LOOP;

        EXIT WHEN NOT v_progress;
    END LOOP;

    IF v_wake THEN
        PERFORM pgflow._wake_workers(v_run.flow_slug);
    END IF;
    -- the gates of the parked tasks, in one order (lock order of their locks)
    PERFORM pgflow._gate_refill(v_run.flow_slug, g)
    FROM (SELECT DISTINCT g FROM unnest(v_gates) AS g ORDER BY g) AS x;
    -- child runs start once the steps of this run are settled: one that
    -- finishes at once advances this run through the usual paths
    IF cardinality(v_subflow_steps) > 0 THEN
        PERFORM pgflow._start_children(_start_ready_steps.run_id, v_subflow_steps, NULL);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._start_ready_steps(uuid) IS
    'start every step of a run that waits on nothing (conditions, maps, skips), to a fixed point';

-- _exhaust_task: a task ran out of attempts: the task fails and the step's
-- when_exhausted applies: fail (the run fails), skip (the step is skipped with
-- handler_failed, dependents continue) or skip-cascade.
-- Locks: the task row (held by the caller), then as _fail_run / _skip_steps.
CREATE FUNCTION pgflow._exhaust_task(run_id uuid, step_slug text, task_index integer,
                                     error_message text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode text;
BEGIN
    -- a task that something else of this transaction already cancelled (its
    -- run failed because of another task) stays cancelled
    UPDATE pgflow.step_tasks AS t
    SET status = 'failed', failed_at = now(), error_message = _exhaust_task.error_message
    WHERE t.run_id = _exhaust_task.run_id
      AND t.step_slug = _exhaust_task.step_slug
      AND t.task_index = _exhaust_task.task_index
      AND t.status IN ('queued', 'started');
    IF NOT FOUND THEN
        RETURN;
    END IF;

    SELECT s.when_exhausted INTO v_mode
    FROM pgflow.step_states AS ss
    JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE ss.run_id = _exhaust_task.run_id AND ss.step_slug = _exhaust_task.step_slug;

    IF v_mode = 'fail' THEN
        PERFORM pgflow._fail_run(_exhaust_task.run_id, _exhaust_task.step_slug,
                                 _exhaust_task.error_message);
    ELSE
        UPDATE pgflow.step_states AS ss
        SET error_message = _exhaust_task.error_message
        WHERE ss.run_id = _exhaust_task.run_id AND ss.step_slug = _exhaust_task.step_slug;
        PERFORM pgflow._skip_steps(_exhaust_task.run_id, _exhaust_task.step_slug,
                                   'handler_failed', v_mode = 'skip-cascade');
        PERFORM pgflow._start_ready_steps(_exhaust_task.run_id);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._exhaust_task(uuid, text, integer, text) IS
    'fail a task out of attempts and apply its step''s when_exhausted mode';

-- ---- src/225_priorities.sql
-- Run priorities and trace contexts (start_flow(priority =>, trace_context =>)).
--
-- A run's priority (an integer, default 0, higher first) is copied into each
-- of its tasks when they are created, and a sub-flow's child runs inherit
-- their parent's.  Claims (claim_tasks, read_with_poll) take the claimable
-- tasks of the highest priority level first, oldest (vt) first within a
-- level: one ordered range of step_tasks_ready_idx per level, the levels
-- found by a loose index scan over the same index, so a claim never reads a
-- level's tasks that are not yet claimable.  Only flows that ever had a run
-- with a priority other than 0 (flows.prioritized, set by _start_run, never
-- reset) look for levels: the others claim one range, priority 0, as before.
-- Priorities order what is claimable; they do not jump a start_delay, a
-- retry's backoff or a concurrency limit (a parked task is un-parked by its
-- gate, highest priority first, then oldest).

ALTER TABLE pgflow.runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE pgflow.runs ADD COLUMN trace_context text;
ALTER TABLE pgflow.runs ADD CONSTRAINT runs_trace_context_check
    CHECK (trace_context ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
COMMENT ON COLUMN pgflow.runs.priority IS
    'claims take higher-priority runs'' tasks first (default 0; a child run has its parent''s)';
COMMENT ON COLUMN pgflow.runs.trace_context IS
    'the W3C traceparent start_flow was given: workers make their task spans its children';

ALTER TABLE pgflow.flows ADD COLUMN prioritized boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN pgflow.flows.prioritized IS
    'a run with a priority other than 0 was started: claims look through priority levels (never reset)';

ALTER TABLE pgflow.step_tasks ADD COLUMN priority integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN pgflow.step_tasks.priority IS
    'its run''s priority (copied when the task is created): claims take higher first';

-- Claimable work of a flow by priority level, oldest first within a level:
-- queued tasks whose vt has passed and started tasks whose lease expired.
CREATE INDEX step_tasks_ready_idx ON pgflow.step_tasks (flow_slug, priority, vt)
    WHERE status IN ('queued', 'started');

-- _check_trace_context: raises unless a trace context is NULL or a W3C
-- traceparent of version 00 with a non-zero trace id and parent id.
-- Errors: 22023.
CREATE FUNCTION pgflow._check_trace_context(trace_context text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF trace_context IS NOT NULL
       AND (trace_context !~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
            OR substr(trace_context, 4, 32) = repeat('0', 32)
            OR substr(trace_context, 37, 16) = repeat('0', 16)) THEN
        RAISE EXCEPTION 'trace_context "%" is not a W3C traceparent', left(trace_context, 80)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lower case, e.g. the traceparent header of the current span, or NULL';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_trace_context(text) IS
    'raise unless a trace context is NULL or a valid W3C traceparent (version 00)';

-- trace_contexts: the trace contexts of runs (for workers that make task
-- spans children of the trace a run was started in); runs without one, and
-- unknown runs, are left out.
CREATE FUNCTION pgflow.trace_contexts(run_ids uuid[])
RETURNS TABLE (run_id uuid, trace_context text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.run_id, r.trace_context
    FROM pgflow.runs AS r
    WHERE r.run_id = ANY (trace_contexts.run_ids) AND r.trace_context IS NOT NULL;
$$;

COMMENT ON FUNCTION pgflow.trace_contexts(uuid[]) IS
    'the W3C trace contexts the given runs were started with (runs without one are left out)';

-- ---- src/230_concurrency.sql
-- Concurrency limits ("at most N of these at once, per key").
--
-- A step's concurrency (add_step(concurrency => N, concurrency_key => path))
-- lets at most N of its tasks hold a slot at once, per distinct value of the
-- key; a flow's (create_flow(concurrency => N, concurrency_key => 'run.x'))
-- does the same for the tasks of all its task steps together, except the
-- steps that have a limit of their own (one gate per task: a step's limit
-- replaces the flow's for that step).  Sub-flow and wait steps have no
-- tasks that workers run and are never gated.
--
-- How it stays exact and cheap: a gated task is created *parked* (queued,
-- vt = 'infinity': outside the vt <= now range every claim reads, so a
-- blocked backlog is never scanned) and named by its gate (step_tasks.gate,
-- '<step slug or *>|<key value as JSON text>').  _gate_refill, under a
-- transaction advisory lock of the gate, counts the gate's tasks that hold a
-- slot (open, vt finite: ready, delayed for a retry, started or with an
-- expired lease; at most `limit` rows through step_tasks_gate_idx) and
-- un-parks the oldest parked ones into the free slots.  It runs when gated
-- tasks are created, when retry_run re-queues them, when a limit changes,
-- and, from a trigger, whenever a task holding a slot reaches a final
-- status (completed, failed, cancelled), whichever function finishes it.
-- Claims (claim_tasks, read_with_poll) are unchanged: an un-parked task is
-- an ordinary claimable task.  Exact under READ COMMITTED (the default: each
-- statement of _gate_refill sees what committed before it took the lock).

ALTER TABLE pgflow.flows ADD COLUMN opt_concurrency integer;
ALTER TABLE pgflow.flows ADD COLUMN opt_concurrency_key text[];
ALTER TABLE pgflow.flows ADD CONSTRAINT flows_opt_concurrency_check
    CHECK (opt_concurrency >= 1 AND (opt_concurrency_key IS NULL OR cardinality(opt_concurrency_key) >= 2));
ALTER TABLE pgflow.flows ADD CONSTRAINT flows_opt_concurrency_key_check
    CHECK (opt_concurrency_key IS NULL OR opt_concurrency IS NOT NULL);
COMMENT ON COLUMN pgflow.flows.opt_concurrency IS
    'at most this many tasks of the flow''s task steps (without a limit of their own) hold a slot at once, per key (NULL: no limit)';
COMMENT ON COLUMN pgflow.flows.opt_concurrency_key IS
    'the path into a task''s input ({run,tenant}) whose value partitions the flow''s limit (NULL: one limit for all)';

ALTER TABLE pgflow.steps ADD COLUMN opt_concurrency integer;
ALTER TABLE pgflow.steps ADD COLUMN opt_concurrency_key text[];
ALTER TABLE pgflow.steps ADD CONSTRAINT steps_opt_concurrency_check
    CHECK (opt_concurrency >= 1 AND (opt_concurrency_key IS NULL OR cardinality(opt_concurrency_key) >= 1));
ALTER TABLE pgflow.steps ADD CONSTRAINT steps_opt_concurrency_key_check
    CHECK (opt_concurrency_key IS NULL OR opt_concurrency IS NOT NULL);
COMMENT ON COLUMN pgflow.steps.opt_concurrency IS
    'at most this many of the step''s tasks hold a slot at once, per key (NULL: the flow''s limit, if any)';
COMMENT ON COLUMN pgflow.steps.opt_concurrency_key IS
    'the path into a task''s input ({run,tenant}, {<dep>,id}, {item,tenant} for a map''s element) partitioning the step''s limit';

ALTER TABLE pgflow.step_tasks ADD COLUMN gate text;
COMMENT ON COLUMN pgflow.step_tasks.gate IS
    'the concurrency gate the task passes (''<step slug or *>|<key JSON>''; NULL: ungated); parked while queued with vt = infinity';

-- the tasks of a gate holding a slot (vt finite) and the parked ones
-- (vt = infinity, highest priority first, then oldest); ungated tasks are
-- not in it
CREATE INDEX step_tasks_gate_idx ON pgflow.step_tasks (flow_slug, gate, vt, priority DESC, message_id)
    WHERE gate IS NOT NULL AND status IN ('queued', 'started');

-- _check_concurrency: raises unless a limit and its key are valid; returns
-- the key as a path array (NULL without a key).  firsts: what the key's
-- first segment may be (run, the step's dependencies, item for a map).
-- Errors: 22023 limit below 1, a key without a limit, an invalid path.
CREATE FUNCTION pgflow._check_concurrency(who text, concurrency integer, concurrency_key text,
                                          firsts text[])
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[];
BEGIN
    IF concurrency IS NULL THEN
        IF concurrency_key IS NOT NULL THEN
            RAISE EXCEPTION '%: concurrency_key "%" needs a concurrency limit', who, concurrency_key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass concurrency => N (at most N at once per key value) with it';
        END IF;
        RETURN NULL;
    END IF;
    IF concurrency < 1 THEN
        RAISE EXCEPTION '%: concurrency must be at least 1, got %', who, concurrency
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'leave it out (NULL) for no limit';
    END IF;
    IF concurrency_key IS NULL THEN
        RETURN NULL;
    END IF;
    v_path := string_to_array(concurrency_key, '.');
    IF array_position(v_path, '') IS NOT NULL
       OR (cardinality(v_path) < 2 AND v_path[1] IS DISTINCT FROM 'item') THEN
        RAISE EXCEPTION '%: invalid concurrency_key "%"', who, concurrency_key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a dotted path into the task''s input, e.g. run.customer_id';
    END IF;
    IF NOT v_path[1] = ANY (firsts) THEN
        RAISE EXCEPTION '%: concurrency_key "%" starts with "%", not one of [%]',
                who, concurrency_key, v_path[1], array_to_string(firsts, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'start it with run (the run''s input), a dependency''s slug, or item (a map task''s element)';
    END IF;
    RETURN v_path;
END;
$$;

COMMENT ON FUNCTION pgflow._check_concurrency(text, integer, text, text[]) IS
    'validate a concurrency limit and key; returns the key as a path array';

-- _gate_of: the gate of a task: scope ('*' for the flow's limit, else the
-- step slug), then the key's value in the task's input (input: {"run",
-- "<dep>"}; item: a map task's element) as JSON text; a missing key is null
-- (all tasks without it share one gate).  Values longer than 200 characters
-- are replaced by the JSON string "md5:<hash of the value>".
CREATE FUNCTION pgflow._gate_of(scope text, key_path text[], input jsonb, item jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT scope || '|' || CASE WHEN length(v) > 200 THEN to_jsonb('md5:' || md5(v))::text ELSE v END
    FROM (SELECT CASE
                     WHEN key_path IS NULL THEN ''
                     ELSE coalesce(CASE WHEN key_path[1] = 'item' THEN item #> key_path[2:]
                                        ELSE input #> key_path END::text, 'null')
                 END AS v) AS k
$$;

COMMENT ON FUNCTION pgflow._gate_of(text, text[], jsonb, jsonb) IS
    'the concurrency gate of a task from its scope, key path and input';

-- _gate_refill: un-parks the parked tasks of a gate, highest priority first,
-- then the oldest, into its free slots (limit minus the tasks holding one),
-- at once claimable (or at queued_at + start_delay, if that is later).  A gate whose limit was
-- removed un-parks everything.  Wakes idle workers when it un-parked a task.
-- Returns how many it un-parked.
-- Locks: the gate's transaction advisory lock (refills of one gate run one
-- at a time, each counting what the one before committed), then the
-- un-parked rows (SKIP LOCKED: a parked row another transaction holds is
-- being finished or re-queued by it, which refills again).
CREATE FUNCTION pgflow._gate_refill(flow_slug text, gate text)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := split_part(_gate_refill.gate, '|', 1);
    v_limit integer;
    v_free bigint;
    v_moved integer;
BEGIN
    PERFORM pg_advisory_xact_lock(1885824632, hashtext(_gate_refill.flow_slug || ' ' || _gate_refill.gate));
    -- nothing parked (a limit that does not bind): no slot to count, one probe
    -- (ordered like step_tasks_gate_idx, so that is the index even without
    -- statistics: the ready index would read every parked task of the flow)
    PERFORM FROM pgflow.step_tasks AS t
    WHERE t.flow_slug = _gate_refill.flow_slug
      AND t.gate = _gate_refill.gate
      AND t.status IN ('queued', 'started')
      AND t.vt = 'infinity'
    ORDER BY t.priority DESC, t.message_id
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF v_scope = '*' THEN
        SELECT f.opt_concurrency INTO v_limit
        FROM pgflow.flows AS f WHERE f.flow_slug = _gate_refill.flow_slug;
    ELSE
        SELECT s.opt_concurrency INTO v_limit
        FROM pgflow.steps AS s
        WHERE s.flow_slug = _gate_refill.flow_slug AND s.step_slug = v_scope;
    END IF;
    IF v_limit IS NOT NULL THEN
        -- the slot holders, at most v_limit of them read
        SELECT v_limit - count(*) INTO v_free
        FROM (SELECT FROM pgflow.step_tasks AS t
              WHERE t.flow_slug = _gate_refill.flow_slug
                AND t.gate = _gate_refill.gate
                AND t.status IN ('queued', 'started')
                AND t.vt < 'infinity'
              LIMIT v_limit) AS holders;
        IF v_free <= 0 THEN
            RETURN 0;
        END IF;
    END IF;

    WITH next AS (
        SELECT t.ctid
        FROM pgflow.step_tasks AS t
        WHERE t.flow_slug = _gate_refill.flow_slug
          AND t.gate = _gate_refill.gate
          AND t.status IN ('queued', 'started')
          AND t.vt = 'infinity'
        ORDER BY t.priority DESC, t.message_id
        LIMIT v_free
        FOR UPDATE SKIP LOCKED
    )
    UPDATE pgflow.step_tasks AS t
    SET vt = greatest(now(), t.queued_at + make_interval(secs => coalesce((
                 SELECT s.opt_start_delay FROM pgflow.steps AS s
                 WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug), 0)))
    FROM next
    WHERE t.ctid = next.ctid;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    IF v_moved > 0 THEN
        PERFORM pgflow._wake_workers(_gate_refill.flow_slug);
    END IF;
    RETURN v_moved;
END;
$$;

COMMENT ON FUNCTION pgflow._gate_refill(text, text) IS
    'un-park the parked tasks of a concurrency gate into its free slots (highest priority, then oldest, first)';

-- _gate_refill_flow: refills every gate of a flow that has parked tasks
-- (after its limits changed).
CREATE FUNCTION pgflow._gate_refill_flow(flow_slug text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._gate_refill(_gate_refill_flow.flow_slug, g.gate)
    FROM (SELECT DISTINCT t.gate
          FROM pgflow.step_tasks AS t
          WHERE t.flow_slug = _gate_refill_flow.flow_slug
            AND t.gate IS NOT NULL
            AND t.status IN ('queued', 'started')
            AND t.vt = 'infinity'
          ORDER BY t.gate) AS g;
END;
$$;

COMMENT ON FUNCTION pgflow._gate_refill_flow(text) IS
    'refill every concurrency gate of a flow that has parked tasks';

-- _gate_released: a task holding a slot of its gate reached a final status:
-- the slot goes to the gate's next parked task.
CREATE FUNCTION pgflow._gate_released()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._gate_refill(NEW.flow_slug, NEW.gate);
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION pgflow._gate_released() IS
    'trigger: a gated task holding a slot finished; refill its gate';

CREATE TRIGGER step_tasks_gate_released
    AFTER UPDATE OF status ON pgflow.step_tasks
    FOR EACH ROW
    WHEN (OLD.gate IS NOT NULL AND OLD.status IN ('queued', 'started')
          AND NEW.status NOT IN ('queued', 'started') AND OLD.vt < 'infinity')
    EXECUTE FUNCTION pgflow._gate_released();

-- ---- src/235_inline_steps.sql
-- _inline_steps: per step, whether it starts inline: a step that waits on
-- nothing any more becomes started and gets its one task in the statement
-- that finds it ready (start_flow and start_flows for root steps,
-- _steps_finished for dependents).  That holds for a single step without
-- input conditions, concurrency limits (its tasks are parked) or a sub-flow;
-- every other step is started by _start_ready_steps.  One definition for
-- the three statements, so a new kind of step is excluded in one place.  A
-- view (not a function) so that the planner inlines it into each statement.
CREATE VIEW pgflow._inline_steps AS
SELECT s.flow_slug, s.step_slug, s.deps_count, s.opt_start_delay,
       s.step_type = 'single'
       AND s.required_input_pattern IS NULL
       AND s.forbidden_input_pattern IS NULL
       AND s.opt_concurrency IS NULL
       AND NOT EXISTS (SELECT 1 FROM pgflow.flows AS f
                       WHERE f.flow_slug = s.flow_slug AND f.opt_concurrency IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM pgflow.step_subflows AS sf
                       WHERE sf.flow_slug = s.flow_slug AND sf.step_slug = s.step_slug) AS inline
FROM pgflow.steps AS s;

COMMENT ON VIEW pgflow._inline_steps IS
    'per step: whether it starts inline (single, no conditions, no concurrency limit, not a sub-flow)';

-- ---- src/300_start_flow.sql
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

-- ---- src/310_read_with_poll.sql
-- read_with_poll: leases up to qty claimable tasks of a flow for vt seconds:
-- queued tasks whose vt has passed, and started tasks whose lease expired
-- (their worker died or overran; the next start counts a new attempt).
-- Returns pgmq-shaped rows; message = {"run_id", "step_slug", "task_index"}.
-- With max_poll_seconds = 0 (what workers should use: they wait on NOTIFY
-- pgflow_tasks, not in SQL) it returns at once; otherwise it retries every
-- poll_interval_ms until something is claimable or the time is up.
-- A paused flow (pause_flow) has nothing claimable.  Higher-priority runs'
-- tasks first (start_flow's priority), then the oldest.
-- Generic plans only (plan_cache_mode): the planner estimates a custom plan
-- so much cheaper than the generic one that it re-planned the claim on
-- every call, which took 2.5 times as long as running it.  The leased rows
-- are updated by ctid, so the generic plan needs no estimate of how many
-- there are (guessing thousands, it read the whole table to join them).
-- Locks: the leased task rows (FOR UPDATE SKIP LOCKED: concurrent readers
-- never wait for each other nor get the same task).
-- Errors: 22004 NULL argument; 22023 invalid slug or out-of-range number.
CREATE FUNCTION pgflow.read_with_poll(
    flow_slug text,
    vt integer,
    qty integer,
    max_poll_seconds integer DEFAULT 0,
    poll_interval_ms integer DEFAULT 100
)
RETURNS SETOF pgflow.message_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now timestamptz;
    v_deadline timestamptz;
    v_levels boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', read_with_poll.flow_slug);
    PERFORM pgflow._check_option('vt', read_with_poll.vt, 1, false);
    PERFORM pgflow._check_option('qty', read_with_poll.qty, 1, false);
    PERFORM pgflow._check_option('max_poll_seconds', read_with_poll.max_poll_seconds, 0, false);
    PERFORM pgflow._check_option('poll_interval_ms', read_with_poll.poll_interval_ms, 1, false);
    v_deadline := clock_timestamp() + make_interval(secs => read_with_poll.max_poll_seconds);
    -- Losing this lease in a crash only makes the task claimable again: the
    -- commit need not wait for its WAL flush (see claim_tasks).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- only a flow that ever had a run with a priority other than 0 has levels
    SELECT f.prioritized INTO v_levels FROM pgflow.flows AS f
    WHERE f.flow_slug = read_with_poll.flow_slug;

    LOOP
        v_now := clock_timestamp();
        RETURN QUERY
        -- by priority level, highest first, as claim_tasks does (a flow
        -- without levels: priority 0 only)
        WITH RECURSIVE levels (priority) AS (
            SELECT CASE WHEN v_levels THEN
                       (SELECT t.priority FROM pgflow.step_tasks AS t
                        WHERE t.flow_slug = read_with_poll.flow_slug
                          AND t.status IN ('queued', 'started')
                        ORDER BY t.priority DESC
                        LIMIT 1)
                   ELSE 0 END
            UNION ALL
            SELECT (SELECT t.priority FROM pgflow.step_tasks AS t
                    WHERE t.flow_slug = read_with_poll.flow_slug
                      AND t.status IN ('queued', 'started') AND t.priority < l.priority
                    ORDER BY t.priority DESC
                    LIMIT 1)
            FROM levels AS l
            WHERE v_levels AND l.priority IS NOT NULL
        ), claimable AS (
            SELECT c.run_id, c.step_slug, c.task_index
            FROM levels AS l
            CROSS JOIN LATERAL (
                SELECT t.run_id, t.step_slug, t.task_index
                FROM pgflow.step_tasks AS t
                WHERE t.flow_slug = read_with_poll.flow_slug
                  AND t.status IN ('queued', 'started')
                  AND t.priority = l.priority
                  AND t.vt <= v_now
                  -- a paused flow (pause_flow) has nothing claimable: polled as usual
                  AND NOT EXISTS (SELECT 1 FROM pgflow.paused_flows AS p
                                  WHERE p.flow_slug = read_with_poll.flow_slug)
                ORDER BY t.vt
                LIMIT read_with_poll.qty
                FOR UPDATE SKIP LOCKED
            ) AS c
            LIMIT read_with_poll.qty
        )
        UPDATE pgflow.step_tasks AS t
        SET status = 'queued',
            vt = v_now + make_interval(secs => read_with_poll.vt),
            read_ct = t.read_ct + 1
        -- by ctid, each row found by a probe of the primary key (OFFSET 0: as
        -- a join, the generic plan hashed the whole table); the version this
        -- statement sees, which the UPDATE follows to the one it locked
        WHERE t.ctid = ANY (ARRAY(
                  SELECT t0.ctid
                  FROM claimable AS c
                  CROSS JOIN LATERAL (
                      SELECT t1.ctid FROM pgflow.step_tasks AS t1
                      WHERE t1.run_id = c.run_id AND t1.step_slug = c.step_slug
                        AND t1.task_index = c.task_index
                      OFFSET 0) AS t0))
        RETURNING t.message_id, t.read_ct, t.queued_at, t.vt,
                  jsonb_build_object('run_id', t.run_id, 'step_slug', t.step_slug,
                                     'task_index', t.task_index);
        IF FOUND OR clock_timestamp() >= v_deadline THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(read_with_poll.poll_interval_ms / 1000.0);
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow.read_with_poll(text, integer, integer, integer, integer) IS
    'lease up to qty claimable tasks of a flow for vt seconds (SKIP LOCKED); optional polling';

-- ---- src/320_start_tasks.sql
-- start_tasks: starts leased tasks (msg_ids from read_with_poll): each task
-- still queued becomes started, counts an attempt, gets a lease of the step
-- timeout + 2 s (heartbeat + 2 s for a step with a heartbeat) and records
-- the worker; returns what its handler needs (attempt: the attempt's number
-- over the task's whole life, which its reports name).
-- Handler input: a single step gets {"run": <flow input>, "<dep>": <output>,
-- ...} over its completed dependencies; a map task gets its array element.
-- A leased task whose attempts are already used up (its lease expired on the
-- last attempt) is failed instead of returned (when_exhausted applies).
-- Tasks not queued any more (started by another worker, cancelled) are
-- silently left out: the caller only runs what is returned.  A paused flow
-- (pause_flow) starts nothing.
-- Generic plans only (plan_cache_mode): the check for exhausted tasks was
-- otherwise re-planned on every call, which took seven times as long as
-- running it.
-- Locks: the task rows; for exhausted ones also as fail_task.
-- Errors: 22004 NULL flow_slug or msg_ids; 22023 invalid slug.
CREATE FUNCTION pgflow.start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_task record;
BEGIN
    PERFORM pgflow._check_slug('flow slug', start_tasks.flow_slug);
    IF start_tasks.msg_ids IS NULL THEN
        RAISE EXCEPTION 'msg_ids must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the msg_id values read_with_poll returned';
    END IF;

    -- Losing this lease in a crash only makes the task claimable again: the
    -- commit need not wait for its WAL flush (see claim_tasks).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- a paused flow (pause_flow) starts nothing: the leases run out and the
    -- tasks are claimable again after resume_flow
    IF EXISTS (SELECT 1 FROM pgflow.paused_flows AS p WHERE p.flow_slug = start_tasks.flow_slug) THEN
        RETURN;
    END IF;
    -- the named tasks out of attempts: one probe of the message_id key per
    -- id (OFFSET 0 keeps the subquery apart, so the flow's condition is not
    -- an index condition: a generic plan without statistics then read every
    -- queued task of the flow instead), then each locked and checked again
    FOR v_task IN
        SELECT t.message_id, coalesce(s.opt_max_attempts, f.opt_max_attempts) AS max_attempts
        FROM unnest(start_tasks.msg_ids) AS m(id)
        CROSS JOIN LATERAL (
            SELECT t0.message_id, t0.flow_slug, t0.step_slug, t0.status, t0.attempts_count,
                   t0.retried_attempts
            FROM pgflow.step_tasks AS t0
            WHERE t0.message_id = m.id
            OFFSET 0
        ) AS t
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.flow_slug = start_tasks.flow_slug
          AND t.status = 'queued'
          AND t.attempts_count - t.retried_attempts >= coalesce(s.opt_max_attempts, f.opt_max_attempts)
        ORDER BY t.message_id
    LOOP
        PERFORM FROM pgflow.step_tasks AS t
        WHERE t.message_id = v_task.message_id
          AND t.status = 'queued'
          AND t.attempts_count - t.retried_attempts >= v_task.max_attempts
        FOR UPDATE;
        IF FOUND THEN
            PERFORM pgflow._expire_lease(v_task.message_id);
        END IF;
    END LOOP;

    RETURN QUERY
    SELECT * FROM pgflow._start_tasks(start_tasks.flow_slug, start_tasks.msg_ids,
                                      start_tasks.worker_id, ARRAY['queued'], false);
END;
$$;

COMMENT ON FUNCTION pgflow.start_tasks(text, bigint[], uuid) IS
    'start leased tasks: count the attempt, set the lease, return each task''s input';

-- ---- src/325_start_tasks_internal.sql
-- _start_tasks: starts the given tasks of a flow (by message id) that are in
-- one of the given statuses: started, attempt counted, worker recorded, and
-- leased for the step's heartbeat (when it has one: the worker renews the
-- lease with extend_leases) or its timeout, whichever is shorter, + 2 s;
-- returns what their handlers need (see start_tasks).
-- count_read: also count the claim in read_ct (claim_tasks, which leases and
-- starts in one call; after read_with_poll, which counts it, start_tasks does not).
-- The UPDATE is driven from the id list alone (an index probe per id, then
-- the rows by ctid) and looks the step's timeout up per row, so no plan the
-- planner may pick on missing statistics scans the queue.  Generic plans only
-- (plan_cache_mode): a custom plan knows the statuses, which imply the
-- predicate of the claimable-tasks index, and may read the rows through it
-- instead: every queued and started task of the flow.  No seq scan
-- (enable_seqscan): a generic plan made while step_tasks is small (a new
-- installation, or after a TRUNCATE) would read it by seq scan, and keep
-- doing so, per call, once it has grown.
-- Locks: the task rows.
CREATE FUNCTION pgflow._start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid, statuses text[],
                                    count_read boolean)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
    WITH started AS (
        UPDATE pgflow.step_tasks AS t
        SET status = 'started',
            attempts_count = t.attempts_count + 1,
            read_ct = t.read_ct + _start_tasks.count_read::integer,
            started_at = now(),
            vt = now() + make_interval(secs => (
                -- least() skips NULL: no heartbeat leaves the timeout
                SELECT least(coalesce(s.opt_heartbeat, f.opt_heartbeat),
                             coalesce(s.opt_timeout, f.opt_timeout))
                FROM pgflow.steps AS s
                JOIN pgflow.flows AS f ON f.flow_slug = s.flow_slug
                WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug)::double precision + 2),
            last_worker_id = _start_tasks.worker_id
        -- by ctid, looked up through the message_id index: a plain
        -- `message_id = ANY (...)` next to the status test may be planned
        -- through the claimable-tasks index, reading every claimable task
        -- one probe of the message_id key per id (OFFSET 0: flattened into a
        -- join, a generic plan without statistics may read the whole table)
        WHERE t.ctid = ANY (ARRAY(
                  SELECT t0.ctid
                  FROM unnest(_start_tasks.msg_ids) AS m(id)
                  CROSS JOIN LATERAL (
                      SELECT t1.ctid FROM pgflow.step_tasks AS t1
                      WHERE t1.message_id = m.id
                      OFFSET 0) AS t0))
          AND t.flow_slug = _start_tasks.flow_slug
          AND t.status = ANY (_start_tasks.statuses)
        RETURNING t.flow_slug, t.run_id, t.step_slug, t.task_index, t.message_id,
                  t.attempts_count
    ), typed AS MATERIALIZED (
        SELECT st.*, s.step_type, s.deps_count
        FROM started AS st
        JOIN pgflow.steps AS s ON s.flow_slug = st.flow_slug AND s.step_slug = st.step_slug
    ), map_sources AS MATERIALIZED (
        -- each map source is read (and detoasted) once per call: `|| '[]'`
        -- makes an in-memory copy, so picking element i of it is cheap; on
        -- the stored (toasted) value each `-> i` would fetch the whole array
        SELECT ms.run_id, ms.step_slug, x.source || '[]'::jsonb AS source
        FROM (SELECT DISTINCT ty.run_id, ty.step_slug, ty.flow_slug, ty.deps_count
              FROM typed AS ty
              WHERE ty.step_type = 'map') AS ms
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN ms.deps_count = 0 THEN (
                    SELECT r.input FROM pgflow.runs AS r WHERE r.run_id = ms.run_id)
                ELSE (
                    SELECT ds.output
                    FROM pgflow.deps AS d
                    JOIN pgflow.step_states AS ds
                      ON ds.run_id = ms.run_id AND ds.step_slug = d.dep_slug
                    WHERE d.flow_slug = ms.flow_slug AND d.step_slug = ms.step_slug)
            END AS source
        ) AS x
    )
    SELECT ty.flow_slug, ty.run_id, ty.step_slug,
           CASE
               WHEN ty.step_type = 'map' THEN (
                   SELECT ms.source -> ty.task_index FROM map_sources AS ms
                   WHERE ms.run_id = ty.run_id AND ms.step_slug = ty.step_slug)
               ELSE jsonb_build_object('run', (
                        SELECT r.input FROM pgflow.runs AS r WHERE r.run_id = ty.run_id))
                    || coalesce((
                        SELECT jsonb_object_agg(d.dep_slug, ds.output)
                        FROM pgflow.deps AS d
                        JOIN pgflow.step_states AS ds
                          ON ds.run_id = ty.run_id AND ds.step_slug = d.dep_slug
                        WHERE d.flow_slug = ty.flow_slug
                          AND d.step_slug = ty.step_slug
                          AND ds.status = 'completed'), '{}'::jsonb)
           END,
           ty.message_id, ty.task_index, ty.attempts_count
    FROM typed AS ty
    ORDER BY ty.message_id;
END;
$$;

COMMENT ON FUNCTION pgflow._start_tasks(text, bigint[], uuid, text[], boolean) IS
    'start tasks by message id (count the attempt, set the lease) and return their inputs';

-- ---- src/330_complete_task.sql
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

-- ---- src/340_batch_protocol.sql
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

-- ---- src/345_failures_and_leases.sql
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

-- ---- src/350_waits.sql
-- Wait steps and events.
--
-- A wait step (step_type 'wait', pgflow.step_waits) gets no task.  When it is
-- ready (dependencies finished, conditions met) it is started and waits: a
-- pgflow.waits row says for which event, which key value (the JSON value at
-- its key path) and until when.  emit_event(event, key, payload) completes
-- every step waiting for that event and key with the payload as its output,
-- in the caller's transaction.  An event nobody waits for is kept (for
-- pgflow.event_retention, default 7 days) and consumed by the first wait
-- step that becomes ready for it.  A wait past its deadline is exhausted by
-- expire_waits() (which the reference worker calls periodically): its
-- when_exhausted applies (fail, skip, skip-cascade).
--
-- Keys are JSON strings, numbers or booleans compared by JSON equality: 42
-- and 42.0 are the same key, "42" (a string) is another one.
--
-- Exactly once: an emit and a wait step becoming ready for the same event
-- and key serialise on a transaction advisory lock (1885824633,
-- _event_lock_key(event, key)), so one of them sees the other's row; an emit
-- and expire_waits both delete the waits row first, so only one of them
-- acts on it; a repeated event_id conflicts on events_event_id_key.
-- Lock order: the advisory key, the waits row, the step_states row, the runs
-- row (as task -> step_state -> run elsewhere).

CREATE TABLE pgflow.waits (
    run_id     uuid        NOT NULL,
    step_slug  text        NOT NULL,
    flow_slug  text        NOT NULL,
    event_name text        NOT NULL,
    event_key  jsonb       NOT NULL,
    deadline   timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT waits_pkey PRIMARY KEY (run_id, step_slug),
    CONSTRAINT waits_step_fkey FOREIGN KEY (run_id, step_slug)
        REFERENCES pgflow.step_states (run_id, step_slug) ON DELETE CASCADE
);

COMMENT ON TABLE pgflow.waits IS
    'one row per started wait step: the event and key it waits for and its deadline (NULL: none)';

CREATE INDEX waits_event_idx ON pgflow.waits (event_name, event_key);
CREATE INDEX waits_deadline_idx ON pgflow.waits (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE pgflow.events (
    event_seq       bigint      GENERATED ALWAYS AS IDENTITY,
    event_name      text        NOT NULL,
    event_key       jsonb       NOT NULL,
    payload         jsonb       NOT NULL,
    event_id        text,
    emitted_at      timestamptz NOT NULL DEFAULT now(),
    consumed_at     timestamptz,
    completed_steps integer     NOT NULL DEFAULT 0,
    CONSTRAINT events_pkey PRIMARY KEY (event_seq),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_completed_steps_check CHECK (completed_steps >= 0)
);

COMMENT ON TABLE pgflow.events IS
    'emitted events, kept for pgflow.event_retention: unconsumed ones wait for a wait step, event_id makes emits idempotent';

CREATE INDEX events_pending_idx ON pgflow.events (event_name, event_key, event_seq)
    WHERE consumed_at IS NULL;
CREATE INDEX events_emitted_at_idx ON pgflow.events (emitted_at);

SELECT pg_catalog.pg_extension_config_dump('pgflow.waits', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.events', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.events_event_seq_seq', '');

-- _event_retention: how long events are kept: the setting
-- pgflow.event_retention (an interval, e.g. ALTER DATABASE app SET
-- pgflow.event_retention = '1 day'), default 7 days.
-- Errors: 22023 not an interval or negative.
CREATE FUNCTION pgflow._event_retention()
RETURNS interval
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text := nullif(current_setting('pgflow.event_retention', true), '');
    v_retention interval;
BEGIN
    IF v_setting IS NULL THEN
        RETURN interval '7 days';
    END IF;
    BEGIN
        v_retention := v_setting::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        v_retention := NULL;
    END;
    IF v_retention IS NULL OR v_retention < interval '0' THEN
        RAISE EXCEPTION 'pgflow.event_retention must be an interval >= 0, got "%"', v_setting
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. ALTER DATABASE mydb SET pgflow.event_retention = ''1 day''';
    END IF;
    RETURN v_retention;
END;
$$;

COMMENT ON FUNCTION pgflow._event_retention() IS
    'how long events are kept: setting pgflow.event_retention, default 7 days';

-- _event_lock_key: the advisory-lock objid of an (event, key) pair; equal
-- keys (42 and 42.0) give the same value.
CREATE FUNCTION pgflow._event_lock_key(event_name text, event_key jsonb)
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN hashtext(event_name || ':' || CASE jsonb_typeof(event_key)
        WHEN 'number' THEN 'n' || trim_scale(event_key::text::numeric)::text
        ELSE event_key::text END);
END;
$$;

COMMENT ON FUNCTION pgflow._event_lock_key(text, jsonb) IS
    'advisory lock objid (classid 1885824633) of an event name and key';

-- _check_event_key: raises unless key is a JSON string, number or boolean.
CREATE FUNCTION pgflow._check_event_key(key jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF key IS NULL OR jsonb_typeof(key) NOT IN ('string', 'number', 'boolean') THEN
        RAISE EXCEPTION 'an event key must be a JSON string, number or boolean, got %',
                coalesce(key::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass e.g. to_jsonb(42) or ''"order-42"''::jsonb';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_event_key(jsonb) IS
    'raise unless an event key is a JSON string, number or boolean';

-- _start_wait: starts a ready wait step of a run (its step_states row locked
-- by the caller, _start_ready_steps) with its input.  Its key is the value
-- at its key path: a missing or non-scalar key fails the run.  The oldest
-- kept event for it (unconsumed, emitted within the retention) completes it
-- at once ('completed'); else it waits ('waiting', step:<slug>:waiting).
-- Locks: the (event, key) advisory key, then the event row it consumes.
CREATE FUNCTION pgflow._start_wait(run_id uuid, flow_slug text, step_slug text, input jsonb)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_wait pgflow.step_waits;
    v_timeout integer;
    v_key jsonb;
    v_seq bigint;
    v_payload jsonb;
    v_retention interval := pgflow._event_retention();
BEGIN
    SELECT * INTO STRICT v_wait FROM pgflow.step_waits AS w
    WHERE w.flow_slug = _start_wait.flow_slug AND w.step_slug = _start_wait.step_slug;
    SELECT s.opt_timeout INTO v_timeout FROM pgflow.steps AS s
    WHERE s.flow_slug = _start_wait.flow_slug AND s.step_slug = _start_wait.step_slug;
    v_key := _start_wait.input #> v_wait.key_path;
    IF v_key IS NULL OR jsonb_typeof(v_key) NOT IN ('string', 'number', 'boolean') THEN
        PERFORM pgflow._fail_run(_start_wait.run_id, _start_wait.step_slug,
            format('wait step "%s": the key %s is %s, not a string, number or boolean',
                   _start_wait.step_slug, array_to_string(v_wait.key_path, '.'),
                   coalesce(v_key::text, 'missing')));
        RETURN 'failed';
    END IF;

    UPDATE pgflow.step_states AS ss
    SET status = 'started', started_at = now(), initial_tasks = 0, remaining_tasks = 0
    WHERE ss.run_id = _start_wait.run_id AND ss.step_slug = _start_wait.step_slug;

    PERFORM pg_advisory_xact_lock(1885824633, pgflow._event_lock_key(v_wait.event_name, v_key));
    SELECT e.event_seq, e.payload INTO v_seq, v_payload
    FROM pgflow.events AS e
    WHERE e.event_name = v_wait.event_name AND e.event_key = v_key
      AND e.consumed_at IS NULL
      AND e.emitted_at >= now() - v_retention
    ORDER BY e.event_seq
    LIMIT 1
    FOR UPDATE;
    IF v_seq IS NOT NULL THEN
        UPDATE pgflow.events AS e
        SET consumed_at = now(), completed_steps = e.completed_steps + 1
        WHERE e.event_seq = v_seq;
        DELETE FROM pgflow.waits AS w
        WHERE w.run_id = _start_wait.run_id AND w.step_slug = _start_wait.step_slug;
        PERFORM pgflow._complete_step(_start_wait.run_id, _start_wait.step_slug, v_payload);
        RETURN 'completed';
    END IF;

    -- a row left from before a retry_run is replaced
    INSERT INTO pgflow.waits AS w (run_id, step_slug, flow_slug, event_name, event_key, deadline)
    VALUES (_start_wait.run_id, _start_wait.step_slug, _start_wait.flow_slug, v_wait.event_name,
            v_key, now() + make_interval(secs => v_timeout))
    ON CONFLICT ON CONSTRAINT waits_pkey DO UPDATE
    SET event_name = excluded.event_name, event_key = excluded.event_key,
        deadline = excluded.deadline, created_at = now();
    PERFORM pgflow._emit_step(_start_wait.flow_slug, _start_wait.run_id, _start_wait.step_slug,
                              'waiting');
    RETURN 'waiting';
END;
$$;

COMMENT ON FUNCTION pgflow._start_wait(uuid, text, text, jsonb) IS
    'start a ready wait step: consume a kept event or wait for one';

-- emit_event: an event happened: completes every step waiting for event_name
-- and key (JSON equality of the key value; 42 = 42.0 <> "42") whose deadline
-- has not passed, with payload as its output, in the caller's transaction
-- (dependents start, runs complete as with complete_task).  Returns how many
-- steps it completed.  The event is kept for pgflow.event_retention: when no
-- step waited for it, the first one to become ready for it consumes it.  A
-- repeated non-NULL event_id (while the first is kept) is a no-op returning
-- 0, also when both emits race.
-- Locks: the (event, key) advisory key until commit, then per waiting step
-- the waits row, its step_states row and the runs row.
-- Errors: 22004 NULL event_name or payload; 22023 invalid event name or key.
CREATE FUNCTION pgflow.emit_event(event_name text, key jsonb, payload jsonb, event_id text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seq bigint;
    v_wait record;
    v_status text;
    v_n integer := 0;
BEGIN
    IF emit_event.event_name IS NULL OR emit_event.payload IS NULL THEN
        RAISE EXCEPTION 'event_name and payload must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass ''null''::jsonb (or ''{}'') for an event without payload';
    END IF;
    IF emit_event.event_name !~ '^[a-zA-Z][a-zA-Z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'invalid event name "%"', emit_event.event_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an event name starts with a letter, then letters, digits, _ . : or - (at most 128)';
    END IF;
    PERFORM pgflow._check_event_key(emit_event.key);

    PERFORM pg_advisory_xact_lock(1885824633, pgflow._event_lock_key(emit_event.event_name, emit_event.key));
    INSERT INTO pgflow.events AS e (event_name, event_key, payload, event_id)
    VALUES (emit_event.event_name, emit_event.key, emit_event.payload, emit_event.event_id)
    ON CONFLICT ON CONSTRAINT events_event_id_key DO NOTHING
    RETURNING e.event_seq INTO v_seq;
    IF v_seq IS NULL THEN
        RETURN 0;
    END IF;

    FOR v_wait IN
        SELECT w.run_id, w.step_slug
        FROM pgflow.waits AS w
        WHERE w.event_name = emit_event.event_name AND w.event_key = emit_event.key
          AND (w.deadline IS NULL OR w.deadline > now())
        ORDER BY w.run_id, w.step_slug
    LOOP
        -- expire_waits may have taken it meanwhile
        DELETE FROM pgflow.waits AS w
        WHERE w.run_id = v_wait.run_id AND w.step_slug = v_wait.step_slug
          AND w.event_name = emit_event.event_name AND w.event_key = emit_event.key;
        CONTINUE WHEN NOT FOUND;
        SELECT ss.status INTO v_status FROM pgflow.step_states AS ss
        WHERE ss.run_id = v_wait.run_id AND ss.step_slug = v_wait.step_slug
        FOR UPDATE;
        -- cancelled, skipped or failed with its run: the row was stale
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        IF pgflow._complete_step(v_wait.run_id, v_wait.step_slug, emit_event.payload) THEN
            PERFORM pgflow._start_ready_steps(v_wait.run_id);
        END IF;
        v_n := v_n + 1;
    END LOOP;

    IF v_n > 0 THEN
        UPDATE pgflow.events AS e
        SET consumed_at = now(), completed_steps = v_n
        WHERE e.event_seq = v_seq;
    END IF;
    RETURN v_n;
END;
$$;

COMMENT ON FUNCTION pgflow.emit_event(text, jsonb, jsonb, text) IS
    'complete every step waiting for this event and key with payload (kept for later waiters if none); returns how many';

-- _exhaust_wait: a wait step's deadline passed: its when_exhausted applies
-- (fail: the run fails; skip / skip-cascade: skipped with wait_timed_out),
-- with a message naming the event and key.
-- Locks: the step_states row (held by the caller), then as _fail_run /
-- _skip_steps.
CREATE FUNCTION pgflow._exhaust_wait(run_id uuid, step_slug text, event_name text, event_key jsonb)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode text;
    v_timeout integer;
    v_message text;
BEGIN
    SELECT s.when_exhausted, s.opt_timeout INTO v_mode, v_timeout
    FROM pgflow.step_states AS ss
    JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE ss.run_id = _exhaust_wait.run_id AND ss.step_slug = _exhaust_wait.step_slug;
    v_message := format('timed out after %s s waiting for event "%s" with key %s',
                        v_timeout, _exhaust_wait.event_name, _exhaust_wait.event_key::text);
    IF v_mode = 'fail' THEN
        PERFORM pgflow._fail_run(_exhaust_wait.run_id, _exhaust_wait.step_slug, v_message);
    ELSE
        UPDATE pgflow.step_states AS ss
        SET error_message = v_message
        WHERE ss.run_id = _exhaust_wait.run_id AND ss.step_slug = _exhaust_wait.step_slug;
        PERFORM pgflow._skip_steps(_exhaust_wait.run_id, _exhaust_wait.step_slug,
                                   'wait_timed_out', v_mode = 'skip-cascade');
        PERFORM pgflow._start_ready_steps(_exhaust_wait.run_id);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._exhaust_wait(uuid, text, text, jsonb) IS
    'apply a timed-out wait step''s when_exhausted mode';

-- expire_waits: the maintenance call (the reference worker makes it every
-- few seconds; any worker or a cron job may): exhausts up to max_rows wait
-- steps whose deadline has passed (when_exhausted applies), drops waits
-- rows of steps no longer waiting (cancelled, skipped, failed runs) and
-- deletes up to max_rows events emitted longer than pgflow.event_retention
-- ago.  Returns how many waits timed out.  Concurrent calls skip each
-- other's rows; a wait an emit_event is completing is left to it.
-- Locks: each due waits row (SKIP LOCKED), its step_states row, the runs
-- row; the old events rows.
-- Errors: 22004 NULL max_rows; 22023 max_rows < 1.
CREATE FUNCTION pgflow.expire_waits(max_rows integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_wait record;
    v_status text;
    v_n integer := 0;
BEGIN
    PERFORM pgflow._check_option('max_rows', expire_waits.max_rows, 1, false);
    FOR v_wait IN
        SELECT w.run_id, w.step_slug, w.event_name, w.event_key
        FROM pgflow.waits AS w
        WHERE w.deadline <= now()
        ORDER BY w.deadline
        LIMIT expire_waits.max_rows
        FOR UPDATE SKIP LOCKED
    LOOP
        DELETE FROM pgflow.waits AS w
        WHERE w.run_id = v_wait.run_id AND w.step_slug = v_wait.step_slug;
        SELECT ss.status INTO v_status FROM pgflow.step_states AS ss
        WHERE ss.run_id = v_wait.run_id AND ss.step_slug = v_wait.step_slug
        FOR UPDATE;
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        PERFORM pgflow._exhaust_wait(v_wait.run_id, v_wait.step_slug, v_wait.event_name,
                                     v_wait.event_key);
        v_n := v_n + 1;
    END LOOP;

    -- rows of steps that stopped waiting otherwise (cancel, skip, failed run)
    DELETE FROM pgflow.waits AS w
    WHERE w.ctid IN (
        SELECT w2.ctid FROM pgflow.waits AS w2
        WHERE NOT EXISTS (
            SELECT 1 FROM pgflow.step_states AS ss
            WHERE ss.run_id = w2.run_id AND ss.step_slug = w2.step_slug AND ss.status = 'started')
        LIMIT expire_waits.max_rows
        FOR UPDATE SKIP LOCKED);

    DELETE FROM pgflow.events AS e
    WHERE e.event_seq IN (
        SELECT e2.event_seq FROM pgflow.events AS e2
        WHERE e2.emitted_at < now() - pgflow._event_retention()
        ORDER BY e2.emitted_at
        LIMIT expire_waits.max_rows
        FOR UPDATE SKIP LOCKED);
    RETURN v_n;
END;
$$;

COMMENT ON FUNCTION pgflow.expire_waits(integer) IS
    'maintenance: time out waits past their deadline (when_exhausted applies), drop stale waits and old events';

-- ---- src/360_subflows.sql
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

-- ---- src/400_cancel_run.sql
-- cancel_run: cancels a started run: the run becomes cancelled (cancelled_at),
-- its queued and started tasks cancelled (never claimed again; a late
-- complete_task or fail_task of one changes nothing, as both only act on
-- started tasks), its started steps cancelled; steps still waiting stay
-- created (retry_run resumes from there).  Announces run:cancelled on
-- pgflow_events (and step:<slug>:cancelled when the flow opted in).
-- Cancelling a run that is already finished (completed, failed, cancelled)
-- changes nothing: a NOTICE says so and the run is returned as it is.
-- Locks, in the engine's order: the run's open task rows (by message_id),
-- its started step_states rows, then the runs row; a completion in flight
-- either commits first (and is kept) or finds its task cancelled.
-- Child runs (sub-flows): the running children of the run are cancelled
-- first (and theirs, recursively: a child's rows before its parent's, the
-- order in which a finishing child reports to its parent); a child run
-- cancelled by itself fails its parent task ("was cancelled").
-- Errors: 22004 NULL run_id; 42704 unknown run.
CREATE FUNCTION pgflow.cancel_run(run_id uuid)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
BEGIN
    IF cancel_run.run_id IS NULL THEN
        RAISE EXCEPTION 'run_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the run_id start_flow returned';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgflow.runs AS r WHERE r.run_id = cancel_run.run_id) THEN
        RAISE EXCEPTION 'run % does not exist', cancel_run.run_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'check the run_id (pgflow.runs lists the runs; pruned runs are gone)';
    END IF;
    RETURN pgflow._cancel_run(cancel_run.run_id, true);
END;
$$;

COMMENT ON FUNCTION pgflow.cancel_run(uuid) IS
    'cancel a started run (and its running child runs) and its open tasks and steps; a finished run is returned unchanged';

-- _cancel_run: the body of cancel_run.  notify_parent: a child run reports
-- its cancellation to its parent task (false when the parent is being
-- cancelled or failed itself).
-- Locks: the running child runs first (as _cancel_run), then as cancel_run.
CREATE FUNCTION pgflow._cancel_run(run_id uuid, notify_parent boolean)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_cancelled text[];
BEGIN
    SELECT * INTO STRICT v_run FROM pgflow.runs AS r WHERE r.run_id = _cancel_run.run_id;

    IF v_run.status = 'started' THEN
        -- children first: a child's rows are locked before its parent's
        PERFORM pgflow._cancel_children(_cancel_run.run_id, true);
        -- task -> step_state -> run, like complete_task and fail_task
        PERFORM 1 FROM pgflow.step_tasks AS t
        WHERE t.run_id = _cancel_run.run_id AND t.status IN ('queued', 'started')
        ORDER BY t.message_id
        FOR UPDATE;
        PERFORM 1 FROM pgflow.step_states AS ss
        WHERE ss.run_id = _cancel_run.run_id AND ss.status = 'started'
        ORDER BY ss.step_slug
        FOR UPDATE;
        SELECT * INTO STRICT v_run FROM pgflow.runs AS r
        WHERE r.run_id = _cancel_run.run_id
        FOR UPDATE;
    END IF;

    -- the run may have finished while we waited for the locks
    IF v_run.status <> 'started' THEN
        RAISE NOTICE 'run % is already %; nothing to cancel', v_run.run_id, v_run.status;
        RETURN v_run;
    END IF;

    -- tasks queued by a transaction that committed while we waited are
    -- caught here: every statement sees the latest committed rows
    UPDATE pgflow.step_tasks AS t
    SET status = 'cancelled'
    WHERE t.run_id = _cancel_run.run_id AND t.status IN ('queued', 'started');

    WITH cancelled AS (
        UPDATE pgflow.step_states AS ss
        SET status = 'cancelled'
        WHERE ss.run_id = _cancel_run.run_id AND ss.status = 'started'
        RETURNING ss.step_slug
    )
    SELECT coalesce(array_agg(c.step_slug ORDER BY c.step_slug), '{}') INTO v_cancelled
    FROM cancelled AS c;

    UPDATE pgflow.runs AS r
    SET status = 'cancelled', cancelled_at = now()
    WHERE r.run_id = _cancel_run.run_id
    RETURNING * INTO STRICT v_run;

    PERFORM pgflow._emit_step(v_run.flow_slug, v_run.run_id, s, 'cancelled')
    FROM unnest(v_cancelled) AS s;
    PERFORM pgflow._emit('run:cancelled', v_run.flow_slug, v_run.run_id, NULL, 'cancelled');
    -- children started while we waited for the locks
    PERFORM pgflow._cancel_children(_cancel_run.run_id, false);
    IF _cancel_run.notify_parent THEN
        PERFORM pgflow._child_finished(_cancel_run.run_id);
    END IF;
    RETURN v_run;
END;
$$;

COMMENT ON FUNCTION pgflow._cancel_run(uuid, boolean) IS
    'cancel a started run and its running children; notify_parent: a child run fails its parent task';

-- ---- src/410_retry_run.sql
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

-- ---- src/420_prune_runs.sql
-- prune_runs: deletes up to batch_size finished runs (completed, failed,
-- cancelled) that finished more than older_than ago, with every row of them
-- (step states, tasks, retry history: the foreign keys cascade); returns how
-- many runs it deleted.  Started runs are never touched.  Call it again
-- until it returns less than batch_size to prune everything due; small
-- batches keep each transaction (and its locks and WAL) short.
-- Finding candidates costs no write on the hot path: no index on finish time
-- exists (it would turn every run's final UPDATE into a non-HOT update with
-- one more index entry).  A run finishes after it starts, so every run due
-- has started_at < now() - older_than; the existing index
-- runs_flow_slug_started_at_idx is range-scanned per flow for that, and the
-- status and finish time are checked on the few rows it yields.
-- Child runs (sub-flows) are never pruned on their own: they go with their
-- parent run (the foreign key cascades through the parent's tasks), so no
-- child outlives its parent and no child of a kept parent goes; only
-- top-level runs count in batch_size and in the result.
-- Locks: the runs rows it deletes (FOR UPDATE SKIP LOCKED: a run being
-- retried or deleted concurrently is left for the next call), then through
-- the cascade their step_states, step_tasks and history rows.
-- Errors: 22004 NULL argument; 22023 negative older_than or batch_size < 1.
CREATE FUNCTION pgflow.prune_runs(older_than interval, batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_flow text;
    v_deleted bigint := 0;
    v_n bigint;
BEGIN
    IF prune_runs.older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass an interval, e.g. older_than => interval ''7 days''';
    END IF;
    IF prune_runs.older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, got %', prune_runs.older_than
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass an interval >= 0, e.g. older_than => interval ''7 days''';
    END IF;
    PERFORM pgflow._check_option('batch_size', prune_runs.batch_size, 1, false);
    -- an interval reaching before the first representable instant prunes nothing
    v_cutoff := CASE
        WHEN prune_runs.older_than > now() - '4713-01-01 00:00:00+00 BC'::timestamptz THEN '-infinity'
        ELSE now() - prune_runs.older_than
    END;

    FOR v_flow IN SELECT f.flow_slug FROM pgflow.flows AS f ORDER BY f.flow_slug LOOP
        WITH due AS (
            SELECT r.run_id
            FROM pgflow.runs AS r
            WHERE r.flow_slug = v_flow
              AND r.started_at < v_cutoff
              AND r.status IN ('completed', 'failed', 'cancelled')
              AND r.parent_run_id IS NULL
              AND coalesce(r.completed_at, r.failed_at, r.cancelled_at) < v_cutoff
            ORDER BY r.started_at
            LIMIT prune_runs.batch_size - v_deleted
            FOR UPDATE SKIP LOCKED
        )
        DELETE FROM pgflow.runs AS r
        USING due AS d
        WHERE r.run_id = d.run_id;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_deleted := v_deleted + v_n;
        EXIT WHEN v_deleted >= prune_runs.batch_size;
    END LOOP;
    RETURN v_deleted;
END;
$$;

COMMENT ON FUNCTION pgflow.prune_runs(interval, integer) IS
    'delete up to batch_size runs finished longer than older_than ago, with all their rows';

-- ---- src/430_get_run.sql
-- get_run: a run with its steps as one JSON document, for clients that
-- follow a run without privileges on the tables:
--   {"run_id", "flow_slug", "flow_name", "version", "status", "input", "output", "error_message",
--    "remaining_steps", "retries", "started_at", "completed_at", "failed_at",
--    "cancelled_at", "paused",
--    "steps": [{"step_slug", "step_type", "status", "attempts", "remaining_deps",
--               "initial_tasks", "remaining_tasks",
--               "tasks": {"queued", "started", "completed", "failed", "cancelled"},
--               "output", "error_message", "skip_reason", "created_at",
--               "started_at", "completed_at", "failed_at", "skipped_at",
--               "waiting_for", "subflow", "waiting_for_slot"}, ...],
--    "depth", "parent", "children"}
-- "waiting_for" is {"event", "key", "until"} for a wait step that waits
-- (until: its deadline, null for none), else null.  "paused" is true while
-- the run's flow is paused (pause_flow): its queued tasks wait for resume_flow.
-- "waiting_for_slot" lists, for a step whose tasks wait for a concurrency
-- slot, each gate they wait at: [{"limit_of": "step" | "flow", "key":
-- "run.customer_id" (null: no key), "value": 42, "tasks": waiting here,
-- "held": slots held now (by every run), "limit"}]; null when none waits.
-- Sub-flows: a step's "subflow" is the flow it runs (null for task steps);
-- "parent" is {"run_id", "step_slug", "task_index", "attempt"} for a child
-- run (null otherwise), "depth" how many sub-flows deep it is, "children"
-- the child runs [{"run_id", "flow_slug", "status", "step_slug",
-- "task_index", "attempt"}] by step, task and attempt.
-- Steps come in definition order.  flow_slug is the definition the run
-- uses (order@3), flow_name and version say which flow and version that is.
-- "attempts" counts the attempts of the step's tasks since the last retry; "retries" is how many times retry_run
-- resumed the run (earlier attempts are in pgflow.task_attempts).  Absent
-- values are JSON null.  Returns NULL for an unknown run.
-- Locks: none (reads a consistent snapshot).
CREATE FUNCTION pgflow.get_run(run_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'run_id', r.run_id,
        'flow_slug', r.flow_slug,
        'flow_name', (SELECT f.flow_name FROM pgflow.flows AS f WHERE f.flow_slug = r.flow_slug),
        'version', (SELECT f.version FROM pgflow.flows AS f WHERE f.flow_slug = r.flow_slug),
        'status', r.status,
        'input', r.input,
        'output', r.output,
        'error_message', r.error_message,
        'remaining_steps', r.remaining_steps,
        'retries', (SELECT count(*) FROM pgflow.run_retries AS rr WHERE rr.run_id = r.run_id),
        'started_at', r.started_at,
        'completed_at', r.completed_at,
        'failed_at', r.failed_at,
        'cancelled_at', r.cancelled_at,
        'paused', EXISTS (SELECT 1 FROM pgflow.paused_flows AS p WHERE p.flow_slug = r.flow_slug),
        'depth', r.depth,
        'parent', CASE WHEN r.parent_run_id IS NOT NULL THEN jsonb_build_object(
            'run_id', r.parent_run_id, 'step_slug', r.parent_step_slug,
            'task_index', r.parent_task_index, 'attempt', r.parent_attempt) END,
        'children', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'run_id', c.run_id, 'flow_slug', c.flow_slug, 'status', c.status,
                       'step_slug', c.parent_step_slug, 'task_index', c.parent_task_index,
                       'attempt', c.parent_attempt)
                   ORDER BY c.parent_step_slug, c.parent_task_index, c.parent_attempt)
            FROM pgflow.runs AS c
            WHERE c.parent_run_id = r.run_id), '[]'::jsonb),
        'steps', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'step_slug', ss.step_slug,
                       'step_type', s.step_type,
                       'status', ss.status,
                       'attempts', coalesce(tc.attempts, 0),
                       'remaining_deps', ss.remaining_deps,
                       'initial_tasks', ss.initial_tasks,
                       'remaining_tasks', ss.remaining_tasks,
                       'tasks', jsonb_build_object(
                           'queued', coalesce(tc.queued, 0),
                           'started', coalesce(tc.started, 0),
                           'completed', coalesce(tc.completed, 0),
                           'failed', coalesce(tc.failed, 0),
                           'cancelled', coalesce(tc.cancelled, 0)),
                       'output', ss.output,
                       'error_message', ss.error_message,
                       'skip_reason', ss.skip_reason,
                       'created_at', ss.created_at,
                       'started_at', ss.started_at,
                       'completed_at', ss.completed_at,
                       'failed_at', ss.failed_at,
                       'skipped_at', ss.skipped_at,
                       'waiting_for', (
                           SELECT jsonb_build_object('event', w.event_name, 'key', w.event_key,
                                                     'until', w.deadline)
                           FROM pgflow.waits AS w
                           WHERE w.run_id = ss.run_id AND w.step_slug = ss.step_slug
                             AND ss.status = 'started'),
                       'subflow', (
                           SELECT sf.subflow FROM pgflow.step_subflows AS sf
                           WHERE sf.flow_slug = ss.flow_slug AND sf.step_slug = ss.step_slug),
                       'waiting_for_slot', CASE WHEN tc.parked > 0 THEN (
                           SELECT jsonb_agg(jsonb_build_object(
                                      'limit_of', CASE WHEN g.scope = '*' THEN 'flow' ELSE 'step' END,
                                      'key', g.key, 'value', g.value, 'tasks', g.parked,
                                      'held', g.held, 'limit', g.lim) ORDER BY g.gate)
                           FROM (
                               SELECT p.gate, split_part(p.gate, '|', 1) AS scope, p.parked,
                                      nullif(substr(p.gate, strpos(p.gate, '|') + 1), '')::jsonb AS value,
                                      array_to_string(CASE WHEN split_part(p.gate, '|', 1) = '*'
                                                           THEN f.opt_concurrency_key
                                                           ELSE s.opt_concurrency_key END, '.') AS key,
                                      CASE WHEN split_part(p.gate, '|', 1) = '*'
                                           THEN f.opt_concurrency ELSE s.opt_concurrency END AS lim,
                                      (SELECT count(*) FROM pgflow.step_tasks AS h
                                       WHERE h.flow_slug = ss.flow_slug AND h.gate = p.gate
                                         AND h.status IN ('queued', 'started')
                                         AND h.vt < 'infinity') AS held
                               FROM (SELECT t.gate, count(*) AS parked
                                     FROM pgflow.step_tasks AS t
                                     WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug
                                       AND t.status = 'queued' AND t.vt = 'infinity'
                                       AND t.gate IS NOT NULL
                                     GROUP BY t.gate) AS p
                               JOIN pgflow.flows AS f ON f.flow_slug = ss.flow_slug
                           ) AS g) END)
                   ORDER BY s.step_index)
            FROM pgflow.step_states AS ss
            JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            LEFT JOIN (
                SELECT t.step_slug,
                       sum(t.attempts_count - t.retried_attempts) AS attempts,
                       count(*) FILTER (WHERE t.status = 'queued') AS queued,
                       count(*) FILTER (WHERE t.status = 'started') AS started,
                       count(*) FILTER (WHERE t.status = 'completed') AS completed,
                       count(*) FILTER (WHERE t.status = 'failed') AS failed,
                       count(*) FILTER (WHERE t.status = 'cancelled') AS cancelled,
                       count(*) FILTER (WHERE t.status = 'queued' AND t.vt = 'infinity'
                                          AND t.gate IS NOT NULL) AS parked
                FROM pgflow.step_tasks AS t
                WHERE t.run_id = r.run_id
                GROUP BY t.step_slug
            ) AS tc ON tc.step_slug = ss.step_slug
            WHERE ss.run_id = r.run_id
        ), '[]'::jsonb)
    )
    FROM pgflow.runs AS r
    WHERE r.run_id = get_run.run_id;
$$;

COMMENT ON FUNCTION pgflow.get_run(uuid) IS
    'a run with its steps (status, attempts, times, errors, outputs, task counts) as JSON; NULL if unknown';

-- ---- src/440_delete_flow.sql
-- delete_flow: removes a flow definition (its steps and dependencies); one
-- version of a versioned flow is named by its slug (order@2): delete a
-- drained version once its workers are gone.
-- While runs of the flow exist it refuses, unless force => true, which
-- deletes the runs too (running ones included: their workers' late
-- completions change nothing) with every row of them.  Returns how many runs
-- it deleted.  Owner-only (an operator action): not granted to any role.
-- A start_flow racing the deletion waits for it, then fails on the foreign
-- key (23503): no run is ever left without its definition.
-- Locks: the flows row (FOR UPDATE: blocks new runs of the flow), the runs
-- rows and through the cascade everything of them, the steps and deps rows.
-- Errors: 22004 NULL argument; 22023 invalid slug; 42704 unknown flow;
-- 55000 runs exist and force is false; 2BP01 a step of another flow runs
-- it as a sub-flow.
CREATE FUNCTION pgflow.delete_flow(flow_slug text, force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_runs bigint;
    v_parent_flow text;
    v_parent_step text;
BEGIN
    PERFORM pgflow._check_slug('flow slug', delete_flow.flow_slug);
    IF delete_flow.force IS NULL THEN
        RAISE EXCEPTION 'force must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass force => true to delete the flow''s runs too, or leave it out';
    END IF;

    PERFORM 1 FROM pgflow.flows AS f WHERE f.flow_slug = delete_flow.flow_slug FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', delete_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'check the slug: pgflow.flows lists the flows';
    END IF;

    SELECT sf.flow_slug, sf.step_slug INTO v_parent_flow, v_parent_step
    FROM pgflow.step_subflows AS sf
    WHERE sf.subflow = delete_flow.flow_slug
    ORDER BY sf.flow_slug, sf.step_slug
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'flow "%" is used as a sub-flow by step "%" of flow "%"',
                delete_flow.flow_slug, v_parent_step, v_parent_flow
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('delete flow "%s" first (or every flow using "%s")',
                                v_parent_flow, delete_flow.flow_slug);
    END IF;

    IF NOT delete_flow.force THEN
        IF EXISTS (SELECT 1 FROM pgflow.runs AS r WHERE r.flow_slug = delete_flow.flow_slug) THEN
            RAISE EXCEPTION 'flow "%" has runs', delete_flow.flow_slug
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'prune them first with pgflow.prune_runs(), or pass force => true to delete them with the flow';
        END IF;
        v_runs := 0;
    ELSE
        DELETE FROM pgflow.runs AS r WHERE r.flow_slug = delete_flow.flow_slug;
        GET DIAGNOSTICS v_runs = ROW_COUNT;
    END IF;

    -- steps and deps go with the flow (ON DELETE CASCADE)
    DELETE FROM pgflow.flows AS f WHERE f.flow_slug = delete_flow.flow_slug;
    RETURN v_runs;
END;
$$;

COMMENT ON FUNCTION pgflow.delete_flow(text, boolean) IS
    'delete a flow definition; with force => true also its runs (refused otherwise while runs exist)';

-- ---- src/450_views.sql
-- Operator views.  Like the tables they are readable only by the owner
-- (900_privileges revokes everything from PUBLIC); grant SELECT on them to a
-- monitoring role if wanted.  run_stats and step_stats aggregate over all
-- rows of the runtime tables: cheap while prune_runs keeps history bounded,
-- not meant for a tight polling loop.  active_tasks and stalled_tasks read
-- the partial index of open tasks only.

CREATE VIEW pgflow.run_stats AS
SELECT f.flow_slug,
       count(r.run_id) AS runs,
       count(r.run_id) FILTER (WHERE r.status = 'started') AS started,
       count(r.run_id) FILTER (WHERE r.status = 'completed') AS completed,
       count(r.run_id) FILTER (WHERE r.status = 'failed') AS failed,
       count(r.run_id) FILTER (WHERE r.status = 'cancelled') AS cancelled,
       count(r.run_id) FILTER (WHERE r.status = 'completed'
                                 AND r.completed_at >= now() - interval '24 hours')
           AS completed_24h,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.completed_at - r.started_at)
           FILTER (WHERE r.status = 'completed' AND r.completed_at >= now() - interval '24 hours')
           AS p50_duration_24h,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.completed_at - r.started_at)
           FILTER (WHERE r.status = 'completed' AND r.completed_at >= now() - interval '24 hours')
           AS p95_duration_24h
FROM pgflow.flows AS f
LEFT JOIN pgflow.runs AS r ON r.flow_slug = f.flow_slug
GROUP BY f.flow_slug;

COMMENT ON VIEW pgflow.run_stats IS
    'per flow: runs by status; p50/p95 duration (completed_at - started_at) of runs completed in the last 24 h';

CREATE VIEW pgflow.step_stats AS
SELECT s.flow_slug,
       s.step_slug,
       count(t.run_id) AS tasks,
       count(t.run_id) FILTER (WHERE t.status = 'completed') AS completed_tasks,
       count(t.run_id) FILTER (WHERE t.status = 'failed') AS failed_tasks,
       coalesce(sum(t.attempts_count), 0) AS attempts,
       round(count(t.run_id) FILTER (WHERE t.status = 'failed')::numeric
             / nullif(count(t.run_id) FILTER (WHERE t.status IN ('completed', 'failed')), 0), 4)
           AS failure_rate,
       avg(t.completed_at - t.started_at) FILTER (WHERE t.status = 'completed') AS mean_duration
FROM pgflow.steps AS s
LEFT JOIN pgflow.step_tasks AS t ON t.flow_slug = s.flow_slug AND t.step_slug = s.step_slug
GROUP BY s.flow_slug, s.step_slug, s.step_index
ORDER BY s.flow_slug, s.step_index;

COMMENT ON VIEW pgflow.step_stats IS
    'per step: tasks, attempts, failure rate (failed / finished tasks), mean duration of the successful attempt';

CREATE VIEW pgflow.active_tasks AS
SELECT t.flow_slug,
       t.run_id,
       t.step_slug,
       t.task_index,
       t.message_id,
       t.attempts_count,
       t.last_worker_id AS worker_id,
       t.started_at,
       t.vt AS lease_expires_at,
       now() - t.started_at AS running_for
FROM pgflow.step_tasks AS t
WHERE t.status = 'started' AND t.vt >= now();

COMMENT ON VIEW pgflow.active_tasks IS
    'tasks running now: started, lease not yet expired, with their worker';

CREATE VIEW pgflow.stalled_tasks AS
SELECT t.flow_slug,
       t.run_id,
       t.step_slug,
       t.task_index,
       t.message_id,
       t.attempts_count,
       t.last_worker_id AS worker_id,
       t.started_at,
       t.vt AS lease_expired_at,
       now() - t.vt AS stalled_for
FROM pgflow.step_tasks AS t
WHERE t.status = 'started' AND t.vt < now();

COMMENT ON VIEW pgflow.stalled_tasks IS
    'started tasks whose lease expired (worker died or overran) and that no worker has re-claimed yet';

-- ---- src/500_workers.sql
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

-- ---- src/510_list_runs.sql
-- list_runs: runs newest first (started_at DESC, run_id DESC), optionally of
-- one flow, one status, a time range and only the top-level ones, as small
-- JSON documents (ids, parent run, status, timestamps, remaining steps,
-- error; never inputs or outputs).  For dashboards and `pgflow runs`.
-- "waiting" lists the wait steps a started run waits in:
-- [{"step_slug", "event", "key", "until"}] (empty otherwise).
-- flow_slug: a flow name (every version of it) or one definition (order@3).
-- started_after / started_before: started_at >= / < these (NULL: open).
-- top_level: only the runs start_flow started (parent_run_id IS NULL), no
-- sub-flow children.
-- Keyset paging: cursor is a row this function returned (any object with
-- its "started_at" and "run_id"); direction 'older' (the default) returns
-- the max_rows runs that come after it in this order (the next page),
-- 'newer' the max_rows runs just before it (the previous page), still
-- newest first.  Rows with equal started_at are neither skipped nor
-- repeated (run_id breaks the tie).
-- Each page reads one bounded index range from the cursor on, however deep
-- and however long the history: runs_top_started_idx and
-- runs_child_started_idx (top-level runs / children, merged unless
-- top_level), runs_open_status_idx for status started / failed / cancelled,
-- runs_flow_slug_started_at_idx per version of flow_slug.  The filters the
-- chosen index does not hold (status completed, top_level with flow_slug or
-- a status) are checked on the rows of that range.
-- Locks nothing.  Errors: 22023 max_rows outside 1..10000, unknown status
-- or direction, a cursor that is not an object with a timestamp
-- "started_at" and a uuid "run_id"; 22004 direction or top_level NULL.
CREATE FUNCTION pgflow.list_runs(flow_slug text DEFAULT NULL, status text DEFAULT NULL,
                                 max_rows integer DEFAULT 20, cursor jsonb DEFAULT NULL,
                                 direction text DEFAULT 'older',
                                 started_after timestamptz DEFAULT NULL,
                                 started_before timestamptz DEFAULT NULL,
                                 top_level boolean DEFAULT false)
RETURNS SETOF jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- an ordered index range is the only plan wanted: without statistics (a
-- fresh or never analysed runs table) the planner takes status = 'completed'
-- for rare and would rather read every row of the range (a bitmap of a
-- million, or the whole table) and sort them: hundreds of ms
SET enable_bitmapscan = off
SET enable_seqscan = off
-- and with enable_seqscan off a read of the small flows table costs 1e10,
-- which is above jit_above_cost: compiling it took 35 ms of a 40 ms page
SET jit = off
AS $$
DECLARE
    v_slugs text[];
    v_at timestamptz;
    v_id uuid;
    v_where text := '';
    v_dir text;
    v_cols constant text := 'r.run_id, r.flow_slug, r.parent_run_id, r.status, r.remaining_steps,
                             r.error_message, r.started_at, r.completed_at, r.failed_at, r.cancelled_at';
    v_order text;
    v_source text;
BEGIN
    IF list_runs.status IS NOT NULL THEN
        PERFORM pgflow._check_choice('status', list_runs.status,
                                     ARRAY['started', 'completed', 'failed', 'cancelled']);
    END IF;
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000, got %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass max_rows => 20, for example';
    END IF;
    IF direction IS NULL OR top_level IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN direction IS NULL THEN 'direction' ELSE 'top_level' END
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'leave it out for the default (direction ''older'', top_level false)';
    END IF;
    PERFORM pgflow._check_choice('direction', direction, ARRAY['older', 'newer']);
    IF cursor IS NOT NULL THEN
        IF jsonb_typeof(cursor) <> 'object' OR jsonb_typeof(cursor -> 'started_at') IS DISTINCT FROM 'string'
           OR jsonb_typeof(cursor -> 'run_id') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'cursor must be an object with "started_at" and "run_id", got %',
                            left(cursor::text, 200)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass the last row list_runs returned (with direction => ''newer'', the first)';
        END IF;
        BEGIN
            v_at := (cursor ->> 'started_at')::timestamptz;
            v_id := (cursor ->> 'run_id')::uuid;
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'cursor has no valid started_at and run_id: %', left(cursor::text, 200)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'started_at is a timestamp with time zone, run_id a uuid, as list_runs returns them';
        END;
        v_where := v_where || CASE direction WHEN 'older' THEN ' AND (r.started_at, r.run_id) < ($4, $5)'
                                              ELSE ' AND (r.started_at, r.run_id) > ($4, $5)' END;
    END IF;
    -- the status is one of four words (checked above): a literal, so that the
    -- planner sees whether the partial index of open statuses applies
    IF list_runs.status IS NOT NULL THEN
        v_where := v_where || format(' AND r.status = %L', list_runs.status);
    END IF;
    IF started_after IS NOT NULL THEN
        v_where := v_where || ' AND r.started_at >= $6';
    END IF;
    IF started_before IS NOT NULL THEN
        v_where := v_where || ' AND r.started_at < $7';
    END IF;
    v_dir := CASE direction WHEN 'older' THEN 'DESC' ELSE 'ASC' END;
    v_order := format('ORDER BY r.started_at %s, r.run_id %s LIMIT $3', v_dir, v_dir);
    IF list_runs.flow_slug IS NOT NULL THEN
        SELECT array_agg(f.flow_slug ORDER BY f.flow_slug) INTO v_slugs
        FROM pgflow.flows AS f
        WHERE f.flow_slug = list_runs.flow_slug OR f.flow_name = list_runs.flow_slug;
        IF v_slugs IS NULL THEN
            RETURN;
        END IF;
        -- one range of runs_flow_slug_started_at_idx per version, merged
        v_source := format('SELECT r.* FROM unnest($1) AS s (slug) CROSS JOIN LATERAL (
                                SELECT %s FROM pgflow.runs AS r WHERE r.flow_slug = s.slug %s %s %s) AS r
                            %s',
                           v_cols, v_where,
                           CASE WHEN top_level THEN 'AND r.parent_run_id IS NULL' ELSE '' END,
                           v_order, v_order);
    ELSIF list_runs.status IN ('started', 'failed', 'cancelled') THEN
        -- one range of runs_open_status_idx
        v_source := format('SELECT %s FROM pgflow.runs AS r WHERE r.status <> %L %s %s %s',
                           v_cols, 'completed', v_where,
                           CASE WHEN top_level THEN 'AND r.parent_run_id IS NULL' ELSE '' END, v_order);
    ELSIF top_level THEN
        -- one range of runs_top_started_idx
        v_source := format('SELECT %s FROM pgflow.runs AS r WHERE r.parent_run_id IS NULL %s %s',
                           v_cols, v_where, v_order);
    ELSE
        -- a range of runs_top_started_idx and one of runs_child_started_idx, merged
        v_source := format('(SELECT %s FROM pgflow.runs AS r WHERE r.parent_run_id IS NULL %s %s)
                            UNION ALL
                            (SELECT %s FROM pgflow.runs AS r WHERE r.parent_run_id IS NOT NULL %s %s)',
                           v_cols, v_where, v_order, v_cols, v_where, v_order);
        v_source := format('SELECT r.* FROM (%s) AS r %s', v_source, v_order);
    END IF;
    RETURN QUERY EXECUTE format($q$
    SELECT jsonb_build_object(
        'run_id', r.run_id, 'flow_slug', r.flow_slug,
        'version', (SELECT f.version FROM pgflow.flows AS f WHERE f.flow_slug = r.flow_slug),
        'parent_run_id', r.parent_run_id,
        'status', r.status,
        'remaining_steps', r.remaining_steps, 'error_message', r.error_message,
        'started_at', r.started_at,
        'finished_at', coalesce(r.completed_at, r.failed_at, r.cancelled_at),
        'waiting', coalesce((
            SELECT jsonb_agg(jsonb_build_object('step_slug', w.step_slug, 'event', w.event_name,
                                                'key', w.event_key, 'until', w.deadline)
                             ORDER BY w.step_slug)
            FROM pgflow.waits AS w
            JOIN pgflow.step_states AS ss ON ss.run_id = w.run_id AND ss.step_slug = w.step_slug
            WHERE w.run_id = r.run_id AND r.status = 'started' AND ss.status = 'started'),
            '[]'::jsonb))
    FROM (%s) AS r
    ORDER BY r.started_at DESC, r.run_id DESC$q$, v_source)
    USING v_slugs, list_runs.status, max_rows, v_at, v_id, started_after, started_before;
END;
$$;

COMMENT ON FUNCTION pgflow.list_runs(text, text, integer, jsonb, text, timestamptz, timestamptz, boolean) IS
    'runs newest first (optionally of one flow / status / time range / top level only, keyset-paged after a cursor row) as small JSON documents';

-- The indexes of list_runs' pages.  Each run is in exactly one of the first
-- two (top-level runs, sub-flow children: parent_run_id never changes), so a
-- start writes one of them; together they list every run newest first.
-- The third holds the runs not completed, by status: completed ones, the
-- bulk of the history, stay out of it, so a page of failed runs never reads
-- past them.  Its cost: status is an indexed column now, so the one update
-- that changes a run's status (when it finishes, or retry_run) is not HOT;
-- the updates that count remaining_steps down still are.
CREATE INDEX runs_top_started_idx ON pgflow.runs (started_at, run_id)
    WHERE parent_run_id IS NULL;
CREATE INDEX runs_child_started_idx ON pgflow.runs (started_at, run_id)
    WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_open_status_idx ON pgflow.runs (status, started_at, run_id)
    WHERE status <> 'completed';
-- list_flows' counts of a flow's runs by status (those not completed; its
-- total comes from runs_flow_slug_started_at_idx).  A start writes one entry
-- in it; a run that completes leaves it.
CREATE INDEX runs_flow_open_idx ON pgflow.runs (flow_slug, status, started_at)
    WHERE status <> 'completed';

-- ---- src/520_dashboard.sql
-- dashboard_snapshot: what a dashboard or a metrics exporter shows besides
-- the runs themselves, as one JSON document of aggregates (ids, counts and
-- ages; never inputs, outputs or error texts):
--   {"workers": [{"worker_id", "flow_slugs", "host", "pid", "started_at",
--                 "last_heartbeat_at", "stopped_at", "alive", "running"}],
--    "queues":  [{"flow_slug", "step_slug", "ready", "delayed", "started",
--                 "stalled", "oldest_claimable_s"}],
--    "tasks":   [{"flow_slug", "step_slug", "status", "count"}],
--    "runs":    [{"flow_slug", "status", "count"}],
--    "at": now()}
-- workers: the 500 most recently heard from; alive as the workers table's
-- comment says (not stopped, heartbeat within 30 s); running: its started
-- tasks whose lease has not expired.  queues: per step with open tasks
-- (the partial index of queued/started tasks): ready = queued and claimable
-- now, delayed = queued for later (backoff, start_delay), started = leased,
-- stalled = lease expired and not yet re-claimed; oldest_claimable_s: age in
-- seconds of the oldest claimable task (null: none).  tasks and runs count
-- every row by status (a scan of the history: cheap while prune_runs bounds
-- it, meant for a scrape every few seconds, not a tight loop);
-- with_counts => false leaves them out (empty arrays): what the Workers and
-- Queues pages call, reading only the workers table and the open tasks.
-- Locks nothing.  Errors: 22004 NULL with_counts.
CREATE FUNCTION pgflow.dashboard_snapshot(with_counts boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF with_counts IS NULL THEN
        RAISE EXCEPTION 'with_counts must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass true or false';
    END IF;
    RETURN jsonb_build_object(
        'at', now(),
        'workers', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'worker_id', w.worker_id, 'flow_slugs', to_jsonb(w.flow_slugs),
                       'host', w.host, 'pid', w.pid, 'started_at', w.started_at,
                       'last_heartbeat_at', w.last_heartbeat_at, 'stopped_at', w.stopped_at,
                       'alive', w.stopped_at IS NULL
                                AND w.last_heartbeat_at > now() - interval '30 seconds',
                       'running', (SELECT count(*) FROM pgflow.step_tasks AS t
                                   WHERE t.status = 'started' AND t.vt >= now()
                                     AND t.last_worker_id = w.worker_id))
                   ORDER BY w.last_heartbeat_at DESC, w.worker_id)
            FROM (SELECT * FROM pgflow.workers
                  ORDER BY last_heartbeat_at DESC, worker_id LIMIT 500) AS w), '[]'::jsonb),
        'queues', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'flow_slug', q.flow_slug, 'step_slug', q.step_slug,
                       'ready', q.ready, 'delayed', q.delayed, 'started', q.started,
                       'stalled', q.stalled, 'oldest_claimable_s', q.oldest)
                   ORDER BY q.flow_slug, q.step_slug)
            FROM (SELECT t.flow_slug, t.step_slug,
                         count(*) FILTER (WHERE t.status = 'queued' AND t.vt <= now()) AS ready,
                         count(*) FILTER (WHERE t.status = 'queued' AND t.vt > now()) AS delayed,
                         count(*) FILTER (WHERE t.status = 'started' AND t.vt >= now()) AS started,
                         count(*) FILTER (WHERE t.status = 'started' AND t.vt < now()) AS stalled,
                         extract(epoch FROM now() - min(t.vt) FILTER (
                             WHERE (t.status = 'queued' AND t.vt <= now())
                                OR (t.status = 'started' AND t.vt < now())))::double precision
                             AS oldest
                  FROM pgflow.step_tasks AS t
                  WHERE t.status IN ('queued', 'started')
                  GROUP BY t.flow_slug, t.step_slug) AS q), '[]'::jsonb),
        'tasks', coalesce((
            SELECT jsonb_agg(jsonb_build_object('flow_slug', c.flow_slug, 'step_slug', c.step_slug,
                                                'status', c.status, 'count', c.n)
                   ORDER BY c.flow_slug, c.step_slug, c.status)
            FROM (SELECT t.flow_slug, t.step_slug, t.status, count(*) AS n
                  FROM pgflow.step_tasks AS t
                  WHERE dashboard_snapshot.with_counts
                  GROUP BY t.flow_slug, t.step_slug, t.status) AS c), '[]'::jsonb),
        'runs', coalesce((
            SELECT jsonb_agg(jsonb_build_object('flow_slug', c.flow_slug, 'status', c.status,
                                                'count', c.n)
                   ORDER BY c.flow_slug, c.status)
            FROM (SELECT r.flow_slug, r.status, count(*) AS n
                  FROM pgflow.runs AS r
                  WHERE dashboard_snapshot.with_counts
                  GROUP BY r.flow_slug, r.status) AS c), '[]'::jsonb));
END;
$$;

COMMENT ON FUNCTION pgflow.dashboard_snapshot(boolean) IS
    'workers, queue depths per step, tasks and runs by status as JSON (aggregates only; for dashboards and metrics)';

-- ---- src/800_grants.sql
-- Privileges: the extension creates no roles.  The protocol and client
-- functions are the only door: they run as the extension owner (SECURITY
-- DEFINER with a pinned search_path and schema-qualified names), so a worker
-- or application role needs EXECUTE on exactly those functions and no
-- privilege on any table.  Internals (_*) stay SECURITY INVOKER and are
-- executable by nobody but the owner.

-- _api_functions: the functions each kind of role is granted.
--   worker: the worker protocol (and expire_waits, its periodic maintenance
--   call); client: start, follow and cancel runs, emit events; dashboard:
--   the aggregates pgflow ui reads (grant_dashboard adds client's and flow_shape).
-- Operator functions (retry_run, prune_runs, delete_flow) are granted to
-- nobody: they run as their caller, i.e. the owner.
CREATE FUNCTION pgflow._api_functions(kind text)
RETURNS SETOF regprocedure
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f::regprocedure
    FROM unnest(CASE kind
        WHEN 'worker' THEN ARRAY[
            'pgflow.read_with_poll(text, integer, integer, integer, integer)',
            'pgflow.start_tasks(text, bigint[], uuid)',
            'pgflow.complete_task(uuid, text, integer, jsonb, integer)',
            'pgflow.fail_task(uuid, text, integer, text, integer, boolean, double precision)',
            'pgflow.claim_tasks(text, integer, uuid)',
            'pgflow.complete_tasks(uuid[], text[], integer[], jsonb[], integer[])',
            'pgflow.fail_tasks(uuid[], text[], integer[], text[], integer[], boolean[], double precision[])',
            'pgflow.extend_leases(uuid[], text[], integer[], integer[])',
            'pgflow.worker_idle(text[], boolean)',
            'pgflow.register_worker(uuid, text[], text, integer)',
            'pgflow.worker_heartbeat(uuid)',
            'pgflow.stop_worker(uuid)',
            'pgflow.flow_shape(text)',
            'pgflow.run_input(uuid)',
            'pgflow.trace_contexts(uuid[])',
            'pgflow.expire_waits(integer)']
        WHEN 'client' THEN ARRAY[
            'pgflow.start_flow(text, jsonb, uuid, integer, integer, text)',
            'pgflow.start_flows(text, jsonb[], uuid[], integer, integer, text)',
            'pgflow.list_flows()',
            'pgflow.get_run(uuid)',
            'pgflow.list_runs(text, text, integer, jsonb, text, timestamptz, timestamptz, boolean)',
            'pgflow.listen_events(boolean)',
            'pgflow.cancel_run(uuid)',
            'pgflow.emit_event(text, jsonb, jsonb, text)']
        WHEN 'dashboard' THEN ARRAY[
            'pgflow.dashboard_snapshot(boolean)']
    END) AS f;
$$;

COMMENT ON FUNCTION pgflow._api_functions(text) IS
    'the functions grant_worker (kind worker), grant_client (kind client) and grant_dashboard (kind dashboard, with client''s) grant';

-- _grant_api: grants USAGE on the schema and EXECUTE on the functions of
-- one kind to a role.  Errors: 22004 NULL role; 42704 unknown role.
CREATE FUNCTION pgflow._grant_api(kind text, role_name text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fn regprocedure;
BEGIN
    IF role_name IS NULL THEN
        RAISE EXCEPTION 'role_name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass the name of an existing role';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'create it first, e.g. CREATE ROLE pgflow_worker LOGIN';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA pgflow TO %I', role_name);
    FOR v_fn IN SELECT * FROM pgflow._api_functions(kind) LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn, role_name);
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow._grant_api(text, text) IS
    'grant schema usage and the functions of one kind (worker, client) to a role';

-- grant_worker: lets a role run workers: the protocol functions only.
CREATE FUNCTION pgflow.grant_worker(role_name text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgflow._grant_api('worker', role_name);
$$;

COMMENT ON FUNCTION pgflow.grant_worker(text) IS
    'grant a role exactly what a worker needs (the protocol functions; no table access)';

-- grant_client: lets a role start runs, follow them (get_run), cancel them
-- and emit events (emit_event completes wait steps).
CREATE FUNCTION pgflow.grant_client(role_name text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgflow._grant_api('client', role_name);
$$;

COMMENT ON FUNCTION pgflow.grant_client(text) IS
    'grant a role what an application needs to start, follow and cancel runs and emit events (no table access)';

-- ---- src/810_grant_dashboard.sql
-- grant_dashboard: lets a role run `pgflow ui` (and scrape its /metrics):
-- what grant_client gives, plus the read functions the dashboard's pages
-- need beyond it: dashboard_snapshot (workers, queues, counts) and
-- flow_shape (the DAG pictures).  No table access; cancel is grant_client's,
-- retry_run stays an operator function.  Errors as grant_client's.
CREATE FUNCTION pgflow.grant_dashboard(role_name text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._grant_api('client', role_name);
    PERFORM pgflow._grant_api('dashboard', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION pgflow.flow_shape(text) TO %I', role_name);
END;
$$;

COMMENT ON FUNCTION pgflow.grant_dashboard(text) IS
    'grant a role what pgflow ui needs: grant_client''s functions plus dashboard_snapshot and flow_shape (no table access)';

-- ---- src/900_privileges.sql
-- Privileges start from deny: CREATE FUNCTION grants EXECUTE to PUBLIC, so
-- take it back from every function of the extension.  Roles get exactly what
-- they need through pgflow.grant_worker() / pgflow.grant_client(); tables are
-- readable only by their owner unless granted.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgflow FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgflow FROM PUBLIC;
REVOKE ALL ON SCHEMA pgflow FROM PUBLIC;
