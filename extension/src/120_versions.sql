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
