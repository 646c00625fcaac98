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
