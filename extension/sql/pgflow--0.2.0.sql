-- pgflow 0.2.0: frozen by `make release` from extension/src/; never edit (checksum in SHA256SUMS).
\echo Use "CREATE EXTENSION pgflow" to load this file. \quit

-- ---- src/000_schema.sql
-- pgflow schema: created by CREATE EXTENSION (schema = pgflow in the control
-- file).  Nothing in it is usable by PUBLIC: see 900_privileges.sql and
-- pgflow.grant_worker() / pgflow.grant_client().

COMMENT ON SCHEMA pgflow IS 'pgflow: durable DAG workflows (definitions, runs, task queue)';

-- ---- src/010_definition_tables.sql
-- Definition tables: flows, their steps and the dependency edges between them.
-- A definition is immutable in structure once created; only tunables change.

CREATE TABLE pgflow.flows (
    flow_slug        text        NOT NULL,
    opt_max_attempts integer     NOT NULL DEFAULT 3,
    opt_base_delay   integer     NOT NULL DEFAULT 1,
    opt_timeout      integer     NOT NULL DEFAULT 60,
    opt_step_events  boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT flows_pkey PRIMARY KEY (flow_slug),
    CONSTRAINT flows_flow_slug_check
        CHECK (flow_slug ~ '^[a-zA-Z][a-zA-Z0-9_]{0,127}$' AND flow_slug <> 'run'),
    CONSTRAINT flows_opt_max_attempts_check CHECK (opt_max_attempts >= 1),
    CONSTRAINT flows_opt_base_delay_check CHECK (opt_base_delay >= 1),
    CONSTRAINT flows_opt_timeout_check CHECK (opt_timeout >= 3)
);

COMMENT ON TABLE pgflow.flows IS 'flow definitions with their default tunables';
COMMENT ON COLUMN pgflow.flows.opt_step_events IS
    'when true, step status changes are announced on the pgflow_events channel';

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
    CONSTRAINT steps_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT steps_flow_slug_step_index_key UNIQUE (flow_slug, step_index),
    CONSTRAINT steps_flow_slug_fkey FOREIGN KEY (flow_slug)
        REFERENCES pgflow.flows (flow_slug) ON DELETE CASCADE,
    CONSTRAINT steps_step_slug_check
        CHECK (step_slug ~ '^[a-zA-Z][a-zA-Z0-9_]{0,127}$' AND step_slug <> 'run'),
    CONSTRAINT steps_step_type_check CHECK (step_type IN ('single', 'map')),
    CONSTRAINT steps_step_index_check CHECK (step_index >= 0),
    CONSTRAINT steps_deps_count_check
        CHECK (deps_count >= 0 AND (step_type = 'single' OR deps_count <= 1)),
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
        CHECK (when_exhausted IN ('fail', 'skip', 'skip-cascade'))
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

SELECT pg_catalog.pg_extension_config_dump('pgflow.flows', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.steps', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.deps', '');

-- ---- src/020_validation.sql
-- Argument validation shared by the definition functions.  Each helper raises
-- a clear error (SQLSTATE 22004 for NULL, 22023 for a bad value) naming the
-- argument, the offending value and how to fix it.

-- _check_slug: raises unless slug is a valid flow or step slug.
-- Rule (same in the Python tool): 1-128 chars, a letter then letters, digits
-- or underscores; "run" is reserved.  Locks nothing.
CREATE FUNCTION pgflow._check_slug(kind text, slug text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_problem text;
BEGIN
    IF slug IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', kind
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass a slug such as ''my_flow''';
    END IF;
    v_problem := CASE
        WHEN slug = '' THEN 'it is empty'
        WHEN length(slug) > 128 THEN format('it is %s characters long (at most 128)', length(slug))
        WHEN slug = 'run' THEN '"run" is reserved (it names the flow input in step inputs)'
        WHEN slug !~ '^[a-zA-Z]' THEN 'it must start with a letter'
        WHEN slug !~ '^[a-zA-Z][a-zA-Z0-9_]*$' THEN format(
            'character "%s" is not allowed',
            substring(slug FROM '[^a-zA-Z0-9_]'))
    END;
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
-- Locks: the flows row (insert or update).
-- Errors: 22004 NULL slug or option; 22023 invalid slug or option below its minimum.
CREATE FUNCTION pgflow.create_flow(
    flow_slug text,
    max_attempts integer DEFAULT 3,
    base_delay integer DEFAULT 1,
    timeout integer DEFAULT 60,
    step_events boolean DEFAULT false
)
RETURNS pgflow.flows
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow pgflow.flows;
BEGIN
    PERFORM pgflow._check_slug('flow slug', create_flow.flow_slug);
    PERFORM pgflow._check_option('max_attempts', create_flow.max_attempts, 1, false);
    PERFORM pgflow._check_option('base_delay', create_flow.base_delay, 1, false);
    PERFORM pgflow._check_option('timeout', create_flow.timeout, 3, false);
    IF create_flow.step_events IS NULL THEN
        RAISE EXCEPTION 'step_events must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass true or false';
    END IF;

    INSERT INTO pgflow.flows AS f
        (flow_slug, opt_max_attempts, opt_base_delay, opt_timeout, opt_step_events)
    VALUES
        (create_flow.flow_slug, create_flow.max_attempts, create_flow.base_delay,
         create_flow.timeout, create_flow.step_events)
    ON CONFLICT ON CONSTRAINT flows_pkey DO UPDATE
        SET opt_max_attempts = excluded.opt_max_attempts,
            opt_base_delay = excluded.opt_base_delay,
            opt_timeout = excluded.opt_timeout,
            opt_step_events = excluded.opt_step_events
        -- an identical re-run writes nothing
        WHERE (f.opt_max_attempts, f.opt_base_delay, f.opt_timeout, f.opt_step_events)
              IS DISTINCT FROM
              (excluded.opt_max_attempts, excluded.opt_base_delay, excluded.opt_timeout,
               excluded.opt_step_events)
    RETURNING * INTO v_flow;

    IF v_flow.flow_slug IS NULL THEN
        SELECT * INTO STRICT v_flow FROM pgflow.flows AS f WHERE f.flow_slug = create_flow.flow_slug;
    END IF;
    RETURN v_flow;
END;
$$;

COMMENT ON FUNCTION pgflow.create_flow(text, integer, integer, integer, boolean) IS
    'create a flow definition, or update the tunables of an existing one (idempotent)';

-- ---- src/110_add_step.sql
-- add_step: adds a step to a flow, after its dependencies (topological order).
-- Re-running the same call is a no-op returning the existing row; a call with
-- a different structure (dependencies, step type, conditions or modes) for an
-- existing step is refused; differing tunables are updated in place (NULL
-- means: inherit the flow's).  New steps are refused once the flow has runs.
-- Locks: the flows row FOR UPDATE (serialises definition changes of a flow
-- and step_index allocation), the steps row.
-- Errors: 22004 NULL argument; 22023 invalid slug, option, mode, pattern,
-- dependency list; 42704 unknown flow or dependency; 42P17 structure differs
-- from the existing step; 55000 the flow already has runs.
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
    when_exhausted text DEFAULT 'fail'
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
BEGIN
    PERFORM pgflow._check_slug('flow slug', add_step.flow_slug);
    PERFORM pgflow._check_slug('step slug', add_step.step_slug);
    PERFORM pgflow._check_option('max_attempts', add_step.max_attempts, 1, true);
    PERFORM pgflow._check_option('base_delay', add_step.base_delay, 1, true);
    PERFORM pgflow._check_option('timeout', add_step.timeout, 3, true);
    PERFORM pgflow._check_option('start_delay', add_step.start_delay, 0, true);
    PERFORM pgflow._check_choice('step_type', add_step.step_type, ARRAY['single', 'map']);
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
                      HINT = format('a flow''s structure is fixed once it has run; define a new flow slug, e.g. "%s_v2"',
                                    left(add_step.flow_slug, 125));
        END IF;

        INSERT INTO pgflow.steps AS s (
            flow_slug, step_slug, step_type, step_index, deps_count,
            opt_max_attempts, opt_base_delay, opt_timeout, opt_start_delay,
            required_input_pattern, forbidden_input_pattern, when_unmet, when_exhausted)
        SELECT add_step.flow_slug, add_step.step_slug, add_step.step_type,
               (SELECT count(*) FROM pgflow.steps AS s2 WHERE s2.flow_slug = add_step.flow_slug),
               cardinality(v_deps),
               add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay,
               add_step.required_input_pattern, add_step.forbidden_input_pattern,
               add_step.when_unmet, add_step.when_exhausted
        RETURNING * INTO v_step;

        INSERT INTO pgflow.deps (flow_slug, dep_slug, step_slug)
        SELECT add_step.flow_slug, d, add_step.step_slug FROM unnest(v_deps) AS d;
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
    IF cardinality(v_diffs) > 0 THEN
        RAISE EXCEPTION 'step "%" of flow "%" already exists with a different definition: %',
                add_step.step_slug, add_step.flow_slug, array_to_string(v_diffs, '; ')
            USING ERRCODE = 'invalid_object_definition',
                  HINT = format('a definition cannot change structure once created; use a new flow slug, e.g. "%s_v2"',
                                left(add_step.flow_slug, 125));
    END IF;

    -- Same structure: tunables may change in place; an identical call writes nothing.
    UPDATE pgflow.steps AS s
    SET opt_max_attempts = add_step.max_attempts,
        opt_base_delay = add_step.base_delay,
        opt_timeout = add_step.timeout,
        opt_start_delay = add_step.start_delay
    WHERE s.flow_slug = add_step.flow_slug
      AND s.step_slug = add_step.step_slug
      AND (s.opt_max_attempts, s.opt_base_delay, s.opt_timeout, s.opt_start_delay)
          IS DISTINCT FROM
          (add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay)
    RETURNING * INTO v_step;
    IF v_step.step_slug IS NULL THEN
        RETURN v_existing;
    END IF;
    RETURN v_step;
END;
$$;

COMMENT ON FUNCTION pgflow.add_step(text, text, text[], integer, integer, integer, integer, text, jsonb, jsonb, text, text) IS
    'add a step to a flow after its dependencies (idempotent; tunables update in place)';

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
    CONSTRAINT runs_pkey PRIMARY KEY (run_id),
    CONSTRAINT runs_flow_slug_fkey FOREIGN KEY (flow_slug) REFERENCES pgflow.flows (flow_slug),
    CONSTRAINT runs_status_check CHECK (status IN ('started', 'completed', 'failed', 'cancelled')),
    CONSTRAINT runs_remaining_steps_check CHECK (remaining_steps >= 0)
)
-- room on each page for the updated versions of a run: its updates change no
-- indexed column, so they can be HOT (no index writes)
WITH (fillfactor = 80);

COMMENT ON TABLE pgflow.runs IS 'one row per run of a flow; output is {leaf_step: output}';

CREATE INDEX runs_flow_slug_started_at_idx ON pgflow.runs (flow_slug, started_at);

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
        CHECK (skip_reason IN ('condition_unmet', 'dependency_skipped', 'handler_failed'))
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
    CONSTRAINT step_tasks_pkey PRIMARY KEY (run_id, step_slug, task_index),
    CONSTRAINT step_tasks_message_id_key UNIQUE (message_id),
    CONSTRAINT step_tasks_step_fkey FOREIGN KEY (run_id, step_slug)
        REFERENCES pgflow.step_states (run_id, step_slug) ON DELETE CASCADE,
    CONSTRAINT step_tasks_status_check
        CHECK (status IN ('queued', 'started', 'completed', 'failed', 'cancelled')),
    CONSTRAINT step_tasks_task_index_check CHECK (task_index >= 0),
    CONSTRAINT step_tasks_attempts_count_check CHECK (attempts_count >= 0)
);

COMMENT ON TABLE pgflow.step_tasks IS
    'the task queue: one row per task; status + attempts_count + vt (lease) are the whole claim';
COMMENT ON COLUMN pgflow.step_tasks.vt IS
    'queued: claimable from this instant; started: lease end, claimable again after it';

-- Claimable work of a flow, oldest first: queued tasks whose vt has passed and
-- started tasks whose lease expired.
CREATE INDEX step_tasks_ready_idx ON pgflow.step_tasks (flow_slug, vt)
    WHERE status IN ('queued', 'started');

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
-- worker_idle), so a free exclusive try-lock means nobody waits and the
-- NOTIFY (and the commit serialisation it brings) is skipped.  Busy workers
-- find the work on their next claim.
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
    -- (a session's own marks never conflict with its own try-lock, hence the
    -- second test for a session that both listens and produces)
    IF pg_try_advisory_lock(1885824631, v_key) THEN
        PERFORM pg_advisory_unlock(1885824631, v_key);
        IF 'pgflow_tasks' = ANY (ARRAY(SELECT pg_listening_channels())) THEN
            PERFORM pg_notify('pgflow_tasks', flow_slug);
        END IF;
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

-- _emit: announces a run or step event on channel pgflow_events as a small
-- JSON object (ids and status, never outputs: NOTIFY payloads are < 8 kB),
-- but only while some session subscribes (listen_events holds a shared
-- advisory lock on (1885824632, 0)) or this session LISTENs itself: an
-- event nobody waits for would still serialise the commit.
-- Locks: the events advisory key for an instant (try, then released).
CREATE FUNCTION pgflow._emit(event text, flow_slug text, run_id uuid, step_slug text, status text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_try_advisory_lock(1885824632, 0) THEN
        PERFORM pg_advisory_unlock(1885824632, 0);
        IF NOT 'pgflow_events' = ANY (ARRAY(SELECT pg_listening_channels())) THEN
            RETURN;
        END IF;
    END IF;
    PERFORM pg_notify('pgflow_events', jsonb_strip_nulls(
        jsonb_build_object(
            'event', event, 'flow_slug', flow_slug, 'run_id', run_id,
            'step_slug', step_slug, 'status', status))::text);
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
-- nothing any more and is "simple" (a single step without conditions) is
-- started by that same UPDATE and its task queued; the others are left for
-- _start_ready_steps.  Workers are woken once per flow.  Returns the runs
-- (in run_id order) that have such a dependent left.
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
        SELECT r.remaining_steps, r.status, r.flow_slug INTO v_remaining, v_status, v_flow_slug
        FROM pgflow.runs AS r
        WHERE r.run_id = v_run
        FOR UPDATE;
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        IF v_remaining <> v_n THEN
            UPDATE pgflow.runs AS r
            SET remaining_steps = r.remaining_steps - v_n
            WHERE r.run_id = v_run;
            v_live := v_live || v_run;
        ELSE
            UPDATE pgflow.runs AS r
            SET remaining_steps = 0, status = 'completed', completed_at = now(),
                output = pgflow._run_output(r.run_id)
            WHERE r.run_id = v_run;
            PERFORM pgflow._emit('run:completed', v_flow_slug, v_run, NULL, 'completed');
        END IF;
    END LOOP;

    IF cardinality(v_live) = 0 THEN
        RETURN '{}';
    END IF;

    WITH fin AS (
        SELECT DISTINCT f.run_id, f.step_slug, ss.flow_slug
        FROM unnest(_steps_finished.run_ids, _steps_finished.step_slugs) AS f(run_id, step_slug)
        JOIN pgflow.step_states AS ss ON ss.run_id = f.run_id AND ss.step_slug = f.step_slug
        WHERE f.run_id = ANY (v_live)
    ), waiting AS (
        SELECT fin.run_id, d.step_slug, count(*)::integer AS n,
               bool_and(s.step_type = 'single' AND s.required_input_pattern IS NULL
                        AND s.forbidden_input_pattern IS NULL) AS simple,
               max(coalesce(s.opt_start_delay, 0)) AS start_delay
        FROM fin
        JOIN pgflow.deps AS d ON d.flow_slug = fin.flow_slug AND d.dep_slug = fin.step_slug
        JOIN pgflow.steps AS s ON s.flow_slug = d.flow_slug AND s.step_slug = d.step_slug
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
        INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt)
        SELECT u.run_id, u.step_slug, 0, u.flow_slug, now() + make_interval(secs => u.start_delay)
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
--   * otherwise its tasks are queued (vt = now() + start_delay) and workers
--     are woken when they are claimable at once.
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
BEGIN
    SELECT * INTO v_run FROM pgflow.runs AS r WHERE r.run_id = _start_ready_steps.run_id;
    IF v_run.status IS DISTINCT FROM 'started' THEN
        RETURN;
    END IF;
    SELECT f.opt_step_events INTO v_step_events FROM pgflow.flows AS f WHERE f.flow_slug = v_run.flow_slug;
    LOOP
        v_progress := false;

        FOR v_step IN
            SELECT ss.step_slug, s.step_type, s.deps_count, s.when_unmet,
                   s.required_input_pattern, s.forbidden_input_pattern,
                   coalesce(s.opt_start_delay, 0) AS start_delay
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

            INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt)
            SELECT _start_ready_steps.run_id, v_step.step_slug, i, v_run.flow_slug,
                   now() + make_interval(secs => v_step.start_delay)
            FROM generate_series(0, v_count - 1) AS i;
            v_wake := v_wake OR v_step.start_delay = 0;
        END LOOP;

        EXIT WHEN NOT v_progress;
    END LOOP;

    IF v_wake THEN
        PERFORM pgflow._wake_workers(v_run.flow_slug);
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

-- ---- src/300_start_flow.sql
-- start_flow: starts a run of a flow with the given input: creates the run
-- (remaining_steps = number of steps), one step_states row per step, and
-- starts the root steps (their tasks become claimable and workers are woken).
-- With run_id given, the call is idempotent: an existing run of the same flow
-- is returned unchanged.
-- Locks: the new runs row (and the flows row KEY SHARE through the foreign key).
-- Errors: 22004 NULL flow_slug or input; 22023 invalid slug; 42704 unknown
-- flow; 23505 run_id already used by a run of another flow.
CREATE FUNCTION pgflow.start_flow(flow_slug text, input jsonb, run_id uuid DEFAULT NULL)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_steps integer;
    v_pending boolean;
    v_started text[];
    v_wake boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', start_flow.flow_slug);
    IF start_flow.input IS NULL THEN
        RAISE EXCEPTION 'input must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass a JSON value, e.g. ''{}''::jsonb';
    END IF;

    SELECT count(s.step_slug) INTO v_steps
    FROM pgflow.flows AS f
    LEFT JOIN pgflow.steps AS s ON s.flow_slug = f.flow_slug
    WHERE f.flow_slug = start_flow.flow_slug
    GROUP BY f.flow_slug;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', start_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'apply the flow''s migration (pgflow-build writes it) before starting runs';
    END IF;

    INSERT INTO pgflow.runs AS r (run_id, flow_slug, input, remaining_steps)
    VALUES (coalesce(start_flow.run_id, pgflow._uuid_v7()), start_flow.flow_slug,
            start_flow.input, v_steps)
    ON CONFLICT ON CONSTRAINT runs_pkey DO NOTHING
    RETURNING * INTO v_run;

    IF v_run.run_id IS NULL THEN
        SELECT * INTO STRICT v_run FROM pgflow.runs AS r WHERE r.run_id = start_flow.run_id;
        IF v_run.flow_slug <> start_flow.flow_slug THEN
            RAISE EXCEPTION 'run % already exists for flow "%", not "%"',
                    start_flow.run_id, v_run.flow_slug, start_flow.flow_slug
                USING ERRCODE = 'unique_violation',
                      HINT = 'pass a new run_id, or NULL to have one generated';
        END IF;
        RETURN v_run;
    END IF;

    -- Root steps that are "simple" (single, no conditions) start right here,
    -- in the same INSERT; maps and conditional roots go through
    -- _start_ready_steps.
    WITH states AS (
        INSERT INTO pgflow.step_states AS ss (run_id, step_slug, flow_slug, remaining_deps, status,
                                              started_at, initial_tasks, remaining_tasks)
        SELECT v_run.run_id, s.step_slug, s.flow_slug, s.deps_count,
               CASE WHEN simple THEN 'started' ELSE 'created' END,
               CASE WHEN simple THEN now() END,
               CASE WHEN simple THEN 1 END,
               CASE WHEN simple THEN 1 END
        FROM pgflow.steps AS s,
             LATERAL (SELECT s.deps_count = 0 AND s.step_type = 'single'
                             AND s.required_input_pattern IS NULL
                             AND s.forbidden_input_pattern IS NULL AS simple) AS k
        WHERE s.flow_slug = start_flow.flow_slug
        RETURNING ss.step_slug, ss.status, ss.remaining_deps
    ), queued AS (
        INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, vt)
        SELECT v_run.run_id, st.step_slug, 0, start_flow.flow_slug,
               now() + make_interval(secs => coalesce(s.opt_start_delay, 0))
        FROM states AS st
        JOIN pgflow.steps AS s ON s.flow_slug = start_flow.flow_slug AND s.step_slug = st.step_slug
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
       AND (SELECT f.opt_step_events FROM pgflow.flows AS f WHERE f.flow_slug = start_flow.flow_slug) THEN
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

COMMENT ON FUNCTION pgflow.start_flow(text, jsonb, uuid) IS
    'start a run of a flow (idempotent when run_id is given); queues its root steps';

-- ---- src/310_read_with_poll.sql
-- read_with_poll: leases up to qty claimable tasks of a flow for vt seconds:
-- queued tasks whose vt has passed, and started tasks whose lease expired
-- (their worker died or overran; the next start counts a new attempt).
-- Returns pgmq-shaped rows; message = {"run_id", "step_slug", "task_index"}.
-- With max_poll_seconds = 0 (what workers should use: they wait on NOTIFY
-- pgflow_tasks, not in SQL) it returns at once; otherwise it retries every
-- poll_interval_ms until something is claimable or the time is up.
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
AS $$
DECLARE
    v_now timestamptz;
    v_deadline timestamptz;
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

    LOOP
        v_now := clock_timestamp();
        RETURN QUERY
        WITH claimable AS (
            SELECT t.run_id, t.step_slug, t.task_index
            FROM pgflow.step_tasks AS t
            WHERE t.flow_slug = read_with_poll.flow_slug
              AND t.status IN ('queued', 'started')
              AND t.vt <= v_now
            ORDER BY t.vt
            LIMIT read_with_poll.qty
            FOR UPDATE SKIP LOCKED
        )
        UPDATE pgflow.step_tasks AS t
        SET status = 'queued',
            vt = v_now + make_interval(secs => read_with_poll.vt),
            read_ct = t.read_ct + 1
        FROM claimable AS c
        WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index
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
-- timeout + 2 s and records the worker; returns what its handler needs.
-- Handler input: a single step gets {"run": <flow input>, "<dep>": <output>,
-- ...} over its completed dependencies; a map task gets its array element.
-- A leased task whose attempts are already used up (its lease expired on the
-- last attempt) is failed instead of returned (when_exhausted applies).
-- Tasks not queued any more (started by another worker, cancelled) are
-- silently left out: the caller only runs what is returned.
-- Locks: the task rows; for exhausted ones also as fail_task.
-- Errors: 22004 NULL flow_slug or msg_ids; 22023 invalid slug.
CREATE FUNCTION pgflow.start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
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
    FOR v_id IN
        SELECT t.message_id
        FROM unnest(start_tasks.msg_ids) AS m(id)
        JOIN pgflow.step_tasks AS t ON t.message_id = m.id
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.flow_slug = start_tasks.flow_slug
          AND t.status = 'queued'
          AND t.attempts_count >= coalesce(s.opt_max_attempts, f.opt_max_attempts)
        ORDER BY t.message_id
        FOR UPDATE OF t
    LOOP
        PERFORM pgflow._expire_lease(v_id);
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
-- one of the given statuses: started, attempt counted, lease = now() + step timeout + 2 s,
-- worker recorded; returns what their handlers need (see start_tasks).
-- count_read: also count the claim in read_ct (claim_tasks, which leases and
-- starts in one call; after read_with_poll, which counts it, start_tasks does not).
-- The UPDATE is driven from the id list alone (an index probe per id, then
-- the rows by ctid) and looks the step's timeout up per row, so no plan the
-- planner may pick on missing statistics scans the queue.  Generic plans only
-- (plan_cache_mode): a custom plan knows the statuses, which imply the
-- predicate of the claimable-tasks index, and may read the rows through it
-- instead: every queued and started task of the flow.
-- Locks: the task rows.
CREATE FUNCTION pgflow._start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid, statuses text[],
                                    count_read boolean)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
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
                SELECT coalesce(s.opt_timeout, f.opt_timeout)
                FROM pgflow.steps AS s
                JOIN pgflow.flows AS f ON f.flow_slug = s.flow_slug
                WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug)::double precision + 2),
            last_worker_id = _start_tasks.worker_id
        -- by ctid, looked up through the message_id index: a plain
        -- `message_id = ANY (...)` next to the status test may be planned
        -- through the claimable-tasks index, reading every claimable task
        WHERE t.ctid = ANY (ARRAY(
                  SELECT t0.ctid
                  FROM unnest(_start_tasks.msg_ids) AS m(id)
                  JOIN pgflow.step_tasks AS t0 ON t0.message_id = m.id))
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
-- read_ct (as read_with_poll counts it) and a lease of the step timeout + 2 s.  Tasks out of attempts are failed instead of returned.
-- Locks: the claimed task rows (FOR UPDATE SKIP LOCKED: concurrent claimers
-- never wait for each other nor get the same task).
-- Errors: 22004 NULL argument; 22023 invalid slug or qty < 1.
CREATE FUNCTION pgflow.claim_tasks(flow_slug text, qty integer, worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids bigint[];
    v_exhausted bigint[];
    v_id bigint;
BEGIN
    PERFORM pgflow._check_slug('flow slug', claim_tasks.flow_slug);
    PERFORM pgflow._check_option('qty', claim_tasks.qty, 1, false);
    -- A claim need not wait for its WAL flush: lost in a crash, it leaves the
    -- task claimable again (at-least-once already allows the re-run), and the
    -- task's completion, committed synchronously later, flushes it anyway.
    -- This makes the rest of the caller's transaction asynchronous too: call
    -- claim_tasks in a transaction of its own.
    PERFORM set_config('synchronous_commit', 'off', true);

    SELECT array_agg(c.message_id) FILTER (WHERE NOT c.exhausted),
           array_agg(c.message_id) FILTER (WHERE c.exhausted)
    INTO v_ids, v_exhausted
    FROM (
        SELECT t.message_id,
               t.attempts_count >= coalesce(s.opt_max_attempts, f.opt_max_attempts) AS exhausted
        FROM pgflow.step_tasks AS t
        JOIN pgflow.steps AS s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
        WHERE t.flow_slug = claim_tasks.flow_slug
          AND t.status IN ('queued', 'started')
          AND t.vt <= clock_timestamp()
        ORDER BY t.vt
        LIMIT claim_tasks.qty
        FOR UPDATE OF t SKIP LOCKED
    ) AS c;

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

-- _complete_tasks: the body of complete_task / complete_tasks.  Completes the
-- given tasks that are started (others are left alone), decrements their
-- steps' remaining_tasks once per step, completes the steps that reach zero
-- (a map step's output: its task outputs in task_index order), then starts
-- what became ready.  Returns how many tasks it completed.
-- Locks: the task rows (in key order as the input, sorted, drives the
-- UPDATE), then the rows of map steps in key order; then as
-- _steps_finished (the runs rows, then dependent step_states rows).  Two
-- calls reporting the same tasks in another order may deadlock; PostgreSQL
-- aborts one (40P01) and the reference worker sends its batch again.
-- Generic plans only (plan_cache_mode): a custom plan that knows a batch of
-- 100 may, on tables without statistics, read the task rows through the
-- claimable-tasks index (every queued and started task) instead of the
-- primary key.
CREATE FUNCTION pgflow._complete_tasks(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                       outputs jsonb[])
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_runs uuid[];
    v_steps text[];
    v_counts integer[];
    v_total integer;
    v_done_runs uuid[];
    v_done_steps text[];
    v_done_flows text[];
    v_run uuid;
BEGIN
    WITH input AS (
        SELECT DISTINCT ON (i.run_id, i.step_slug, i.task_index)
               i.run_id, i.step_slug, i.task_index, i.output
        FROM unnest(_complete_tasks.run_ids, _complete_tasks.step_slugs,
                    _complete_tasks.task_indexes, _complete_tasks.outputs)
             AS i(run_id, step_slug, task_index, output)
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
          AND t.status = 'started'
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

    -- Lock the rows of map steps first, in key order, in a statement of their
    -- own: the UPDATE below then runs on a snapshot taken after any sibling
    -- completion it waited for has committed, so a map's aggregate sees the
    -- sibling's task output (in the same statement it would still read NULL).
    -- A single step has one task, whose row lock is held: no other
    -- transaction completes it.
    PERFORM 1
    FROM unnest(v_runs, v_steps) AS c(run_id, step_slug)
    JOIN pgflow.step_states AS ss ON ss.run_id = c.run_id AND ss.step_slug = c.step_slug
    JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE s.step_type = 'map'
    ORDER BY ss.run_id, ss.step_slug
    FOR UPDATE OF ss;

    -- one UPDATE per step: the decrement, and for a step whose last task this
    -- was, its completion with its output (a map's: every task output in
    -- task_index order)
    WITH c AS (
        SELECT * FROM unnest(v_runs, v_steps, v_counts) AS c(run_id, step_slug, n)
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
        RETURN v_total;
    END IF;

    -- (the join spares the call for flows without step events)
    PERFORM pgflow._emit_step(d.flow_slug, d.run_id, d.step_slug, 'completed')
    FROM unnest(v_done_runs, v_done_steps, v_done_flows) AS d(run_id, step_slug, flow_slug)
    JOIN pgflow.flows AS f ON f.flow_slug = d.flow_slug AND f.opt_step_events;

    -- the runs and the dependents of every step that completed, in one pass
    FOREACH v_run IN ARRAY pgflow._steps_finished(v_done_runs, v_done_steps) LOOP
        PERFORM pgflow._start_ready_steps(v_run);
    END LOOP;
    RETURN v_total;
END;
$$;

COMMENT ON FUNCTION pgflow._complete_tasks(uuid[], text[], integer[], jsonb[]) IS
    'complete started tasks in one transaction and advance their runs; returns how many counted';

-- complete_tasks: complete_task for many tasks in one transaction: element i
-- of each array describes one task.  Tasks that are not started are left
-- alone (late and duplicate reports are normal).  Returns how many tasks it
-- completed.
-- Locks: as _complete_tasks.
-- Errors: 22004 NULL array; 22023 arrays of different lengths.
CREATE FUNCTION pgflow.complete_tasks(run_ids uuid[], step_slugs text[], task_indexes integer[],
                                      outputs jsonb[])
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
       OR cardinality(run_ids) <> cardinality(outputs) THEN
        RAISE EXCEPTION 'run_ids, step_slugs, task_indexes and outputs must have the same length (got %, %, %, %)',
                cardinality(run_ids), cardinality(step_slugs), cardinality(task_indexes),
                cardinality(outputs)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'element i of each array describes task i';
    END IF;
    RETURN pgflow._complete_tasks(run_ids, step_slugs, task_indexes, outputs);
END;
$$;

COMMENT ON FUNCTION pgflow.complete_tasks(uuid[], text[], integer[], jsonb[]) IS
    'complete many started tasks in one transaction; returns how many counted';

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
-- Errors: 22004 NULL run_id; 42704 unknown run.
CREATE FUNCTION pgflow.cancel_run(run_id uuid)
RETURNS pgflow.runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run pgflow.runs;
    v_cancelled text[];
BEGIN
    IF cancel_run.run_id IS NULL THEN
        RAISE EXCEPTION 'run_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the run_id start_flow returned';
    END IF;

    SELECT * INTO v_run FROM pgflow.runs AS r WHERE r.run_id = cancel_run.run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', cancel_run.run_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'check the run_id (pgflow.runs lists the runs; pruned runs are gone)';
    END IF;

    IF v_run.status = 'started' THEN
        -- task -> step_state -> run, like complete_task and fail_task
        PERFORM 1 FROM pgflow.step_tasks AS t
        WHERE t.run_id = cancel_run.run_id AND t.status IN ('queued', 'started')
        ORDER BY t.message_id
        FOR UPDATE;
        PERFORM 1 FROM pgflow.step_states AS ss
        WHERE ss.run_id = cancel_run.run_id AND ss.status = 'started'
        ORDER BY ss.step_slug
        FOR UPDATE;
        SELECT * INTO STRICT v_run FROM pgflow.runs AS r
        WHERE r.run_id = cancel_run.run_id
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
    WHERE t.run_id = cancel_run.run_id AND t.status IN ('queued', 'started');

    WITH cancelled AS (
        UPDATE pgflow.step_states AS ss
        SET status = 'cancelled'
        WHERE ss.run_id = cancel_run.run_id AND ss.status = 'started'
        RETURNING ss.step_slug
    )
    SELECT coalesce(array_agg(c.step_slug ORDER BY c.step_slug), '{}') INTO v_cancelled
    FROM cancelled AS c;

    UPDATE pgflow.runs AS r
    SET status = 'cancelled', cancelled_at = now()
    WHERE r.run_id = cancel_run.run_id
    RETURNING * INTO STRICT v_run;

    PERFORM pgflow._emit_step(v_run.flow_slug, v_run.run_id, s, 'cancelled')
    FROM unnest(v_cancelled) AS s;
    PERFORM pgflow._emit('run:cancelled', v_run.flow_slug, v_run.run_id, NULL, 'cancelled');
    RETURN v_run;
END;
$$;

COMMENT ON FUNCTION pgflow.cancel_run(uuid) IS
    'cancel a started run and its open tasks and steps; a finished run is returned unchanged';

-- ---- src/410_retry_run.sql
-- Retrying runs, and the history retries leave behind.
--
-- retry_run resets failed and cancelled work in place (same run_id, same task
-- rows, fresh attempt counts), so the earlier attempts would be overwritten.
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
--     its failed and cancelled tasks re-queued (claimable at once, attempts
--     0); the completed tasks of a map step keep their outputs;
--   * a step that failed before it had tasks (a condition with
--     when_unmet = fail, a map over a non-array) goes back to created and is
--     evaluated again like any ready step;
--   * steps still created start as their dependencies complete.
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
        attempts_count = 0,
        read_ct = 0,
        vt = now(),
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
--   {"run_id", "flow_slug", "status", "input", "output", "error_message",
--    "remaining_steps", "retries", "started_at", "completed_at", "failed_at",
--    "cancelled_at",
--    "steps": [{"step_slug", "step_type", "status", "attempts", "remaining_deps",
--               "initial_tasks", "remaining_tasks",
--               "tasks": {"queued", "started", "completed", "failed", "cancelled"},
--               "output", "error_message", "skip_reason", "created_at",
--               "started_at", "completed_at", "failed_at", "skipped_at"}, ...]}
-- Steps come in definition order.  "attempts" counts the attempts of the
-- step's tasks since the last retry; "retries" is how many times retry_run
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
                       'skipped_at', ss.skipped_at)
                   ORDER BY s.step_index)
            FROM pgflow.step_states AS ss
            JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            LEFT JOIN (
                SELECT t.step_slug,
                       sum(t.attempts_count) AS attempts,
                       count(*) FILTER (WHERE t.status = 'queued') AS queued,
                       count(*) FILTER (WHERE t.status = 'started') AS started,
                       count(*) FILTER (WHERE t.status = 'completed') AS completed,
                       count(*) FILTER (WHERE t.status = 'failed') AS failed,
                       count(*) FILTER (WHERE t.status = 'cancelled') AS cancelled
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
-- delete_flow: removes a flow definition (its steps and dependencies).
-- While runs of the flow exist it refuses, unless force => true, which
-- deletes the runs too (running ones included: their workers' late
-- completions change nothing) with every row of them.  Returns how many runs
-- it deleted.  Owner-only (an operator action): not granted to any role.
-- A start_flow racing the deletion waits for it, then fails on the foreign
-- key (23503): no run is ever left without its definition.
-- Locks: the flows row (FOR UPDATE: blocks new runs of the flow), the runs
-- rows and through the cascade everything of them, the steps and deps rows.
-- Errors: 22004 NULL argument; 22023 invalid slug; 42704 unknown flow;
-- 55000 runs exist and force is false.
CREATE FUNCTION pgflow.delete_flow(flow_slug text, force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_runs bigint;
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
-- dependencies, conditions and modes, plus the effective tunables.  NULL for
-- an unknown flow.  Locks nothing.
CREATE FUNCTION pgflow.flow_shape(flow_slug text)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'flow_slug', f.flow_slug,
        'max_attempts', f.opt_max_attempts,
        'base_delay', f.opt_base_delay,
        'timeout', f.opt_timeout,
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
                'timeout', coalesce(s.opt_timeout, f.opt_timeout),
                'start_delay', coalesce(s.opt_start_delay, 0)) ORDER BY s.step_index)
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
-- list_runs: the most recent runs, newest first, optionally of one flow and
-- one status, as small JSON documents (ids, status, timestamps, remaining
-- steps, error; never inputs or outputs).  For dashboards and `pgflow runs`.
-- Locks nothing.  Errors: 22023 max_rows outside 1..10000 or unknown status.
CREATE FUNCTION pgflow.list_runs(flow_slug text DEFAULT NULL, status text DEFAULT NULL,
                                 max_rows integer DEFAULT 20)
RETURNS SETOF jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF list_runs.status IS NOT NULL THEN
        PERFORM pgflow._check_choice('status', list_runs.status,
                                     ARRAY['started', 'completed', 'failed', 'cancelled']);
    END IF;
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000, got %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass max_rows => 20, for example';
    END IF;
    RETURN QUERY
    SELECT jsonb_build_object(
        'run_id', r.run_id, 'flow_slug', r.flow_slug, 'status', r.status,
        'remaining_steps', r.remaining_steps, 'error_message', r.error_message,
        'started_at', r.started_at,
        'finished_at', coalesce(r.completed_at, r.failed_at, r.cancelled_at))
    FROM pgflow.runs AS r
    WHERE (list_runs.flow_slug IS NULL OR r.flow_slug = list_runs.flow_slug)
      AND (list_runs.status IS NULL OR r.status = list_runs.status)
    ORDER BY r.started_at DESC, r.run_id
    LIMIT list_runs.max_rows;
END;
$$;

COMMENT ON FUNCTION pgflow.list_runs(text, text, integer) IS
    'the most recent runs (optionally of one flow / status) as small JSON documents';

-- ---- src/800_grants.sql
-- Privileges: the extension creates no roles.  The protocol and client
-- functions are the only door: they run as the extension owner (SECURITY
-- DEFINER with a pinned search_path and schema-qualified names), so a worker
-- or application role needs EXECUTE on exactly those functions and no
-- privilege on any table.  Internals (_*) stay SECURITY INVOKER and are
-- executable by nobody but the owner.

-- _api_functions: the functions each kind of role is granted.
--   worker: the worker protocol; client: start, follow and cancel runs.
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
            'pgflow.complete_task(uuid, text, integer, jsonb)',
            'pgflow.fail_task(uuid, text, integer, text)',
            'pgflow.claim_tasks(text, integer, uuid)',
            'pgflow.complete_tasks(uuid[], text[], integer[], jsonb[])',
            'pgflow.worker_idle(text[], boolean)',
            'pgflow.register_worker(uuid, text[], text, integer)',
            'pgflow.worker_heartbeat(uuid)',
            'pgflow.stop_worker(uuid)',
            'pgflow.flow_shape(text)',
            'pgflow.run_input(uuid)']
        WHEN 'client' THEN ARRAY[
            'pgflow.start_flow(text, jsonb, uuid)',
            'pgflow.get_run(uuid)',
            'pgflow.list_runs(text, text, integer)',
            'pgflow.listen_events(boolean)',
            'pgflow.cancel_run(uuid)']
    END) AS f;
$$;

COMMENT ON FUNCTION pgflow._api_functions(text) IS
    'the functions grant_worker (kind worker) and grant_client (kind client) grant';

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

-- grant_client: lets a role start runs, follow them (get_run) and cancel them.
CREATE FUNCTION pgflow.grant_client(role_name text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgflow._grant_api('client', role_name);
$$;

COMMENT ON FUNCTION pgflow.grant_client(text) IS
    'grant a role what an application needs to start, follow and cancel runs (no table access)';

-- ---- src/900_privileges.sql
-- Privileges start from deny: CREATE FUNCTION grants EXECUTE to PUBLIC, so
-- take it back from every function of the extension.  Roles get exactly what
-- they need through pgflow.grant_worker() / pgflow.grant_client(); tables are
-- readable only by their owner unless granted.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgflow FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgflow FROM PUBLIC;
REVOKE ALL ON SCHEMA pgflow FROM PUBLIC;
