-- Every statement the Python package sends at run time, by name.
--
-- The worker, the client API, the CLI and install/upgrade call these through
-- pgflow.db.queries.Queries and nothing else: this file is the whole boundary
-- between the package and the database, for a reviewer to read in one go.
-- Each entry is "-- name: <name>", comment lines saying what it does, and one
-- statement.  Parameters are psycopg's %(name)s; a {name} is an identifier
-- filled in with psycopg.sql (LISTEN channels).  Apart from install/upgrade,
-- which read the system catalogs, statements call pgflow's SQL API only
-- (functions and the operator views), never its tables.


-- ---------------------------------------------------------------- worker protocol

-- name: claim_tasks
-- Lease and start up to qty ready tasks of a flow in one call (the batch
-- protocol); the input comes as text so that the worker parses it per task.
SELECT run_id, step_slug, task_index, input::text AS input, attempt
FROM pgflow.claim_tasks(%(flow_slug)s, %(qty)s, %(worker_id)s);

-- name: trace_contexts
-- The W3C traceparents runs were started with (runs without one left out);
-- a tracing worker asks once per claimed batch for the runs it has not cached.
SELECT run_id::text, trace_context FROM pgflow.trace_contexts(%(run_ids)s::uuid[]);

-- name: complete_tasks
-- Complete many started tasks in one transaction, each fenced by the attempt
-- its claim returned; returns how many changed.
SELECT pgflow.complete_tasks(
    %(run_ids)s::uuid[], %(step_slugs)s::text[], %(task_indexes)s::int[],
    %(outputs)s::text[]::jsonb[], %(attempts)s::int[]);

-- name: fail_task
-- Record a failed attempt: retried after its backoff, or the step's
-- when_exhausted once attempts are used up.
SELECT pgflow.fail_task(%(run_id)s, %(step_slug)s, %(task_index)s, %(error_message)s,
                        attempt => %(attempt)s, retry => %(retry)s, retry_delay => %(retry_delay)s);

-- name: fail_tasks
-- Record failed attempts of many tasks in one transaction (fenced; per task:
-- retry or fail now, and an optional retry delay); returns how many counted.
SELECT pgflow.fail_tasks(
    %(run_ids)s::uuid[], %(step_slugs)s::text[], %(task_indexes)s::int[],
    %(error_messages)s::text[], %(attempts)s::int[], %(retries)s::boolean[],
    %(retry_delays)s::double precision[]);

-- name: extend_leases
-- Renew the leases of the tasks this worker runs (heartbeats); the rows are
-- the tasks whose lease it still holds.
SELECT run_id::text, step_slug, task_index, lease_until
FROM pgflow.extend_leases(%(run_ids)s::uuid[], %(step_slugs)s::text[], %(task_indexes)s::int[],
                          %(attempts)s::int[]);

-- name: register_worker
-- Register (or re-register) a worker in pgflow.workers.
SELECT pgflow.register_worker(%(worker_id)s, %(flows)s, %(hostname)s, %(pid)s);

-- name: worker_heartbeat
-- Mark a worker alive; false when it is not registered (any more).
SELECT pgflow.worker_heartbeat(%(worker_id)s);

-- name: stop_worker
-- Mark a worker stopped.
SELECT pgflow.stop_worker(%(worker_id)s);

-- name: worker_idle
-- Say that the session waits (idle true) for wake-ups of these flows, or no
-- longer waits (idle false); producers NOTIFY only while someone waits.
SELECT pgflow.worker_idle(%(flows)s, %(idle)s);

-- name: flow_shape
-- The structure and tunables of a flow as the database has it (NULL: unknown).
SELECT pgflow.flow_shape(%(flow_slug)s);

-- name: list_flows
-- Every flow definition with its version, whether it is current, its runs in flight.
SELECT pgflow.list_flows();

-- name: set_current_version
-- Pin the version start_flow(flow_name) starts (NULL: the highest); the version now current.
SELECT pgflow.set_current_version(%(flow_name)s, %(version)s);

-- name: pause_flow
-- Stop claims of a flow's tasks until resume_flow; true when it was not paused.
SELECT pgflow.pause_flow(%(flow_slug)s);

-- name: resume_flow
-- Let claims take a paused flow's tasks again; true when it was paused.
SELECT pgflow.resume_flow(%(flow_slug)s);

-- name: run_input
-- The input of a run (a map task's context needs it); NULL for an unknown run.
SELECT pgflow.run_input(%(run_id)s);

-- name: listen_tasks
-- Wake-ups: the payload is the flow whose tasks became ready.
LISTEN pgflow_tasks;

-- name: listen_channel
-- LISTEN on a channel of the caller's (the worker's LISTEN probe).
LISTEN {channel};

-- name: unlisten_channel
UNLISTEN {channel};

-- name: notify_channel
-- Send a notification on a channel (the LISTEN probe, from another session).
SELECT pg_notify(%(channel)s, %(payload)s);


-- ---------------------------------------------------------------- runs

-- name: start_flow
-- Start a run (idempotent with a run_id); the run row as JSON.
SELECT to_jsonb(r) FROM pgflow.start_flow(%(flow_slug)s, %(input)s::jsonb, %(run_id)s, %(version)s,
                                          priority => %(priority)s,
                                          trace_context => %(trace_context)s) AS r;

-- name: start_flows
-- Start one run per input in one set-based call (idempotent per run id); the
-- run rows as JSON, in the order of the inputs.
SELECT to_jsonb(r) FROM pgflow.start_flows(%(flow_slug)s, %(inputs)s::jsonb[], %(run_ids)s::uuid[],
                                           %(version)s, priority => %(priority)s,
                                           trace_context => %(trace_context)s) AS r;

-- name: get_run
-- A run with its steps as one JSON document; NULL for an unknown run.
SELECT pgflow.get_run(%(run_id)s);

-- name: get_run_text
-- get_run as JSON text, for printing as it is (no round trip through Python
-- values, whatever its depth).
SELECT pgflow.get_run(%(run_id)s)::text;

-- name: run_summary
-- get_run without the run's input and output and the steps' outputs: what
-- `pgflow status` shows of a run whose values are nested too deeply for
-- Python's json module.
SELECT d - 'input' - 'output' || jsonb_build_object('steps', coalesce(
           (SELECT jsonb_agg(s.step - 'output' ORDER BY s.n)
            FROM jsonb_array_elements(d -> 'steps') WITH ORDINALITY AS s(step, n)),
           '[]'::jsonb))
FROM pgflow.get_run(%(run_id)s) AS d;

-- name: list_runs
-- A page of runs, newest first (ids, status, times; never inputs or
-- outputs): after (direction older) or before (newer) the cursor row.
SELECT pgflow.list_runs(%(flow_slug)s, %(status)s, %(max_rows)s, cursor => %(cursor)s::jsonb,
                        direction => %(direction)s, started_after => %(started_after)s,
                        started_before => %(started_before)s, top_level => %(top_level)s);

-- name: flow_exists
-- Whether a flow of this name exists (flow_shape is NULL for an unknown
-- flow; the owner and roles given grant_worker may call it).
SELECT pgflow.flow_shape(%(flow_slug)s) IS NOT NULL;

-- name: listen_events
LISTEN pgflow_events;

-- name: unlisten_events
UNLISTEN pgflow_events;

-- name: subscribe_events
-- Ask for run (and opted-in step) events on pgflow_events while this session
-- subscribes (on) or no longer (off).
SELECT pgflow.listen_events(%(listening)s);


-- ---------------------------------------------------------------- operations

-- name: cancel_run
-- Cancel a running run (a NOTICE says when it had already finished).
SELECT to_jsonb(r) FROM pgflow.cancel_run(%(run_id)s) AS r;

-- name: retry_run
-- Queue a failed or cancelled run's failed tasks again.
SELECT to_jsonb(r) FROM pgflow.retry_run(%(run_id)s) AS r;

-- name: emit_event
-- An event happened: complete the steps waiting for it and its key (else keep it); how many.
SELECT pgflow.emit_event(%(event_name)s, %(key)s::jsonb, %(payload)s::jsonb, %(event_id)s);

-- name: expire_waits
-- The maintenance call: time out waits past their deadline, drop old events; how many timed out.
SELECT pgflow.expire_waits(%(max_rows)s);

-- name: prune_runs
-- Delete up to batch_size runs that finished longer ago than older_than.
SELECT pgflow.prune_runs(older_than => %(older_than)s, batch_size => %(batch_size)s);

-- name: run_stats
-- Runs per flow by status, with the 24-hour duration percentiles.
SELECT flow_slug, runs, started, completed, failed, cancelled, completed_24h,
       p50_duration_24h, p95_duration_24h
FROM pgflow.run_stats
WHERE %(flow_slug)s::text IS NULL OR flow_slug = %(flow_slug)s::text
ORDER BY flow_slug;

-- name: step_stats
-- Tasks per step: attempts, failure rate, mean duration.
SELECT flow_slug, step_slug, tasks, completed_tasks, failed_tasks, attempts, failure_rate,
       mean_duration
FROM pgflow.step_stats
WHERE %(flow_slug)s::text IS NULL OR flow_slug = %(flow_slug)s::text;

-- name: task_counts
-- How many tasks run now and how many are stalled (lease expired).
SELECT (SELECT count(*) FROM pgflow.active_tasks
        WHERE %(flow_slug)s::text IS NULL OR flow_slug = %(flow_slug)s::text) AS active_tasks,
       (SELECT count(*) FROM pgflow.stalled_tasks
        WHERE %(flow_slug)s::text IS NULL OR flow_slug = %(flow_slug)s::text) AS stalled_tasks;


-- ---------------------------------------------------------------- install / upgrade

-- name: extension_version
-- The version of the pgflow extension, when it is installed as one.
SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgflow';

-- name: has_version_table
-- Whether a plain install recorded its versions.
SELECT to_regclass('pgflow.schema_version') IS NOT NULL;

-- name: plain_version
-- The latest version a plain install recorded.
SELECT version FROM pgflow.schema_version ORDER BY applied_at DESC, version DESC LIMIT 1;

-- name: available_versions
-- Versions of the extension whose files the server has.
SELECT version FROM pg_catalog.pg_available_extension_versions WHERE name = 'pgflow';

-- name: schema_relations
-- How many relations schema pgflow holds (a plain install refuses a used schema).
SELECT count(*) FROM pg_catalog.pg_class
WHERE relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgflow');

-- name: update_path
-- The extension's update path between two versions (NULL: none).
SELECT path FROM pg_catalog.pg_extension_update_paths('pgflow')
WHERE source = %(source)s AND target = %(target)s;

-- name: catalog_search_path
-- Names in catalog reads qualified whatever the session's search_path.
SET LOCAL search_path = pg_catalog, pg_temp;

-- name: schema_objects
-- What schema pgflow holds, one row per object: (kind, name, what it is);
-- run after catalog_search_path, so that every name is qualified.
-- `pgflow upgrade --dry-run` compares it before and after a rolled-back
-- upgrade; a changed third column is a changed object.
SELECT 'function', p.oid::regprocedure::text,
       pg_catalog.md5(pg_catalog.concat_ws(E'\n', pg_catalog.pg_get_function_result(p.oid),
                                           p.prosrc, p.provolatile, p.prosecdef::text,
                                           pg_catalog.array_to_string(p.proconfig, ',')))
FROM pg_catalog.pg_proc AS p
WHERE p.pronamespace = 'pgflow'::regnamespace
UNION ALL
SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' ELSE 'table' END,
       'pgflow.' || c.relname, ''
FROM pg_catalog.pg_class AS c
WHERE c.relnamespace = 'pgflow'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
UNION ALL
SELECT 'column', 'pgflow.' || c.relname || '.' || a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || COALESCE(' DEFAULT ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relnamespace = 'pgflow'::regnamespace AND c.relkind IN ('r', 'p')
UNION ALL
SELECT 'index', 'pgflow.' || c.relname, pg_catalog.pg_get_indexdef(c.oid)
FROM pg_catalog.pg_class AS c
WHERE c.relnamespace = 'pgflow'::regnamespace AND c.relkind = 'i'
UNION ALL
SELECT 'constraint', 'pgflow.' || t.relname || '.' || k.conname, pg_catalog.pg_get_constraintdef(k.oid)
FROM pg_catalog.pg_constraint AS k
JOIN pg_catalog.pg_class AS t ON t.oid = k.conrelid
WHERE k.connamespace = 'pgflow'::regnamespace;

-- name: install_lock
-- Serialises concurrent plain installs and upgrades of one database ("pgfl").
SELECT pg_catalog.pg_advisory_xact_lock(1885824620);

-- name: no_function_body_checks
-- A plain install runs its script as CREATE EXTENSION does (bodies refer to
-- functions created later in the script).
SET LOCAL check_function_bodies = off;

-- name: quiet_notices
SET LOCAL client_min_messages = warning;

-- name: plain_search_path
SET LOCAL search_path = pgflow;

-- name: create_version_table
CREATE TABLE IF NOT EXISTS pgflow.schema_version (
    version    text        PRIMARY KEY,
    script     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- name: comment_version_table
COMMENT ON TABLE pgflow.schema_version IS
    'versions applied by pgflow install / upgrade / downgrade without CREATE EXTENSION (latest: current)';

-- name: grant_version_table
GRANT SELECT ON pgflow.schema_version TO PUBLIC;

-- name: record_version
-- A version reached again (upgraded after a downgrade) becomes the latest.
INSERT INTO pgflow.schema_version AS v (version, script) VALUES (%(version)s, %(script)s)
ON CONFLICT (version) DO UPDATE SET script = excluded.script, applied_at = clock_timestamp();
