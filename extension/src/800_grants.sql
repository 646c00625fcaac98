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
