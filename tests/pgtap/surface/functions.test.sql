BEGIN;
SELECT plan(8);

SELECT is(
    ARRAY(SELECT p.proname::text FROM pg_proc AS p
          WHERE p.pronamespace = 'pgflow'::regnamespace AND p.proname !~ '^_'
          ORDER BY 1),
    ARRAY['add_step', 'add_subflow_step', 'cancel_run', 'check_flow_steps', 'claim_tasks', 'complete_task', 'complete_tasks', 'create_flow', 'dashboard_snapshot', 'delete_flow',
          'emit_event', 'expire_waits', 'extend_leases', 'fail_task', 'fail_tasks', 'flow_shape', 'get_run', 'grant_client', 'grant_dashboard', 'grant_worker', 'list_flows', 'list_runs', 'listen_events', 'pause_flow', 'prune_runs', 'read_with_poll',
          'register_worker', 'resume_flow', 'retry_run', 'run_input', 'set_current_version', 'start_flow', 'start_flows', 'start_tasks', 'stop_worker',
          'trace_contexts', 'worker_heartbeat', 'worker_idle'],
    'the public functions are exactly these'
);

SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
      WHERE p.pronamespace = 'pgflow'::regnamespace
        AND (coalesce(p.proconfig, '{}'))[1] IS DISTINCT FROM 'search_path=pg_catalog, pg_temp'$$,
    'every function pins search_path = pg_catalog, pg_temp'
);

SELECT is(
    ARRAY(SELECT p.oid::regprocedure::text || ': ' || array_to_string(p.proconfig[2:], ', ')
          FROM pg_proc AS p
          WHERE p.pronamespace = 'pgflow'::regnamespace AND cardinality(p.proconfig) > 1
          ORDER BY 1),
    ARRAY['pgflow._complete_tasks(uuid[],text[],integer[],jsonb[],integer[]): plan_cache_mode=force_generic_plan, enable_seqscan=off',
          'pgflow._fail_tasks(uuid[],text[],integer[],text[],integer[],boolean[],double precision[]): plan_cache_mode=force_generic_plan',
          'pgflow._start_tasks(text,bigint[],uuid,text[],boolean): plan_cache_mode=force_generic_plan, enable_seqscan=off',
          'pgflow._tasks_completed(uuid[],text[],integer[]): plan_cache_mode=force_generic_plan',
          'pgflow.claim_tasks(text,integer,uuid): plan_cache_mode=force_generic_plan',
          'pgflow.extend_leases(uuid[],text[],integer[],integer[]): plan_cache_mode=force_generic_plan',
          'pgflow.list_flows(): enable_bitmapscan=off, jit=off',
          'pgflow.list_runs(text,text,integer,jsonb,text,timestamp with time zone,timestamp with time zone,boolean): enable_bitmapscan=off, enable_seqscan=off, jit=off',
          'pgflow.read_with_poll(text,integer,integer,integer,integer): plan_cache_mode=force_generic_plan',
          'pgflow.start_tasks(text,bigint[],uuid): plan_cache_mode=force_generic_plan'],
    'no other setting but generic plans for the batch bodies (_complete_tasks, _tasks_completed, _fail_tasks, _start_tasks, extend_leases) and the claims (read_with_poll, start_tasks, claim_tasks: planned once, not per call; no seq scan in _complete_tasks and _start_tasks) and ordered index ranges without JIT for list_runs and list_flows'
);

SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
      WHERE p.pronamespace = 'pgflow'::regnamespace
        AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''$$,
    'every function has a comment'
);

SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p,
             aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
      WHERE p.pronamespace = 'pgflow'::regnamespace AND a.grantee = 0$$,
    'PUBLIC can execute no function (internals never; the API only when granted)'
);

SELECT is(
    ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc AS p
          WHERE p.pronamespace = 'pgflow'::regnamespace AND p.prosecdef ORDER BY 1),
    ARRAY(SELECT f::text FROM pgflow._api_functions('worker') AS f
          UNION SELECT f::text FROM pgflow._api_functions('client') AS f
          UNION SELECT f::text FROM pgflow._api_functions('dashboard') AS f ORDER BY 1),
    'the SECURITY DEFINER functions are exactly those grant_worker, grant_client and grant_dashboard grant'
);

SELECT is_empty(
    $$SELECT c.relname::text FROM pg_class AS c,
             aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS a
      WHERE c.relnamespace = 'pgflow'::regnamespace AND c.relkind IN ('r', 'S', 'v')
        AND a.grantee = 0$$,
    'PUBLIC has no privilege on any table, sequence or view'
);

SELECT is(
    ARRAY(SELECT c.relname::text FROM pg_extension AS e, unnest(e.extconfig) AS cfg(oid)
          JOIN pg_class AS c ON c.oid = cfg.oid
          WHERE e.extname = 'pgflow' ORDER BY 1),
    ARRAY['current_versions', 'deps', 'events', 'events_event_seq_seq', 'flows', 'paused_flows', 'run_retries', 'runs',
          'step_states', 'step_subflows', 'step_tasks', 'step_tasks_message_id_seq', 'step_waits', 'steps', 'task_attempts',
          'waits', 'workers'],
    'every user-data table and sequence is dumped by pg_dump'
);

SELECT * FROM finish();
ROLLBACK;
