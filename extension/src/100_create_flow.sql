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
