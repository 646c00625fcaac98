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
