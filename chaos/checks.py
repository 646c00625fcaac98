"""The invariants, as SQL over pgflow's tables and the chaos audit schema.

Each check is a query that returns one row per violation (empty: it holds);
``FIGURES`` returns the numbers the harness prints.  Nothing here looks at the
harness's memory or the worker logs: what PostgreSQL recorded is the verdict.
"""

from __future__ import annotations

from typing import Final

#: kills with the worker id the killed process had registered (NULL: it was
#: killed before it registered, so it held nothing)
_KILLS: Final = """
    kills AS (
        SELECT k.kill_no, k.killed_at, w.worker_id
        FROM chaos.kills AS k
        LEFT JOIN LATERAL (
            SELECT w.worker_id FROM pgflow.workers AS w
            WHERE w.pid = k.pid
              AND w.started_at BETWEEN k.spawned_at - interval '1 second' AND k.killed_at
            ORDER BY w.started_at DESC LIMIT 1) AS w ON true
    )"""

#: task events with the previous event of the same task beside them
_EVENTS: Final = """
    ev AS (
        SELECT e.*,
               lag(e.new_status) OVER w AS prev_status,
               lag(e.worker_id) OVER w AS prev_worker,
               lag(e.at) OVER w AS prev_at
        FROM chaos.task_events AS e
        WINDOW w AS (PARTITION BY e.run_id, e.step_slug, e.task_index ORDER BY e.id)
    )"""

#: attempts lost without a report: an expired lease claimed again, or failed
#: on the last attempt.  Explained when the holder was killed before the loss
#: (a claim the worker sent just before its kill may commit just after it: the
#: server finishes the statement of a client that died), or when the server
#: restarted between the start of that attempt and its loss.
_LOST: Final = f"""
    WITH {_KILLS}, {_EVENTS},
    lost AS (
        SELECT ev.*,
               EXISTS (SELECT 1 FROM kills AS k
                       WHERE k.worker_id = ev.prev_worker AND k.killed_at <= ev.at)
               OR EXISTS (SELECT 1 FROM chaos.restarts AS r
                          WHERE r.began_at BETWEEN ev.prev_at - interval '1 second' AND ev.at)
                   AS explained
        FROM ev
        WHERE ev.prev_status = 'started'
          -- (a sub-flow task goes from one attempt to the next when its child
          -- run fails: a new child, not a lost attempt)
          AND ((ev.new_status = 'started'
                AND coalesce(ev.error_message, '') NOT LIKE 'sub-flow run %')
               OR (ev.new_status = 'failed'
                   AND ev.error_message LIKE 'lease expired on the last attempt%'))
    )"""

CHECKS: Final[dict[str, str]] = {
    "every run the harness started exists (lost runs)": """
        SELECT s.run_id FROM chaos.started AS s
        LEFT JOIN pgflow.runs AS r USING (run_id) WHERE r.run_id IS NULL""",
    "every run finished (completed or failed)": """
        SELECT r.run_id, r.status FROM pgflow.runs AS r
        WHERE r.status NOT IN ('completed', 'failed')
          -- a child run still running when its parent failed is cancelled
          AND NOT (r.status = 'cancelled' AND EXISTS (
                       SELECT 1 FROM pgflow.runs AS p
                       WHERE p.run_id = r.parent_run_id AND p.status = 'failed'))""",
    "no task left queued or started (and none with an expired lease)": """
        SELECT t.run_id, t.step_slug, t.task_index, t.status, t.vt FROM pgflow.step_tasks AS t
        WHERE t.status IN ('queued', 'started')
        UNION ALL
        SELECT s.run_id, s.step_slug, s.task_index, 'stalled', s.lease_expired_at
        FROM pgflow.stalled_tasks AS s""",
    "runs end as scripted (status; output when completed)": """
        SELECT r.run_id, r.flow_slug, e.status AS expected, r.status, r.error_message,
               e.output AS expected_output, chaos.strip_attempts(r.output) AS output
        FROM chaos.expected AS e JOIN pgflow.runs AS r USING (run_id)
        WHERE NOT EXISTS (
                SELECT 1 FROM chaos.task_events AS te JOIN chaos.scripts AS sc
                  USING (run_id, step_slug, task_index)
                WHERE te.run_id = r.run_id
                  AND te.error_message LIKE 'lease expired on the last attempt%'
                  AND NOT sc.behaviour ? 'fail')
          AND r.status IN ('completed', 'failed')
          AND (r.status <> e.status
               OR (r.status = 'completed'
                   AND chaos.strip_attempts(r.output) IS DISTINCT FROM e.output)
               OR (r.status = 'failed' AND NOT EXISTS (
                       SELECT 1 FROM pgflow.step_states AS ss
                       WHERE ss.run_id = r.run_id AND ss.status = 'failed'
                         AND ss.step_slug = ANY (e.fatal_steps))))""",
    "every recorded failure is one the script asked for, from the attempt that held the task": """
        SELECT te.run_id, te.step_slug, te.task_index, te.attempts_count, te.error_message,
               sc.behaviour
        FROM chaos.task_events AS te
        LEFT JOIN chaos.scripts AS sc USING (run_id, step_slug, task_index)
        WHERE te.old_status = 'started' AND te.new_status IN ('queued', 'failed')
          AND te.error_message NOT LIKE 'lease expired on the last attempt%'
          AND NOT coalesce(CASE
                WHEN te.error_message LIKE 'ScriptedError: scripted failure %' THEN
                    sc.behaviour ? 'fail'
                    AND substring(te.error_message FROM 'attempt=(\\d+)')::int = te.attempts_count
                WHEN te.error_message LIKE 'ScriptedError: scripted raise %' THEN
                    substring(te.error_message FROM 'attempt=(\\d+)')::int = te.attempts_count
                    AND te.attempts_count <= (sc.behaviour ->> 'raise')::int
                WHEN te.error_message LIKE 'timeout:%' THEN
                    sc.behaviour ? 'overrun' AND te.attempts_count = 1
                -- a sub-flow task's attempt fails with its child run (checked
                -- as a run of its own)
                WHEN te.error_message LIKE 'sub-flow run % (chaos_chain) failed: %' THEN
                    EXISTS (SELECT 1 FROM pgflow.runs AS c
                            WHERE c.parent_run_id = te.run_id AND c.parent_step_slug = te.step_slug
                              AND c.parent_task_index = te.task_index AND c.status = 'failed')
                ELSE false
              END, false)""",
    "every lost attempt is explained by a kill of its worker or a server restart": f"""
        {_LOST}
        SELECT lost.run_id, lost.step_slug, lost.task_index, lost.attempts_count,
               lost.prev_worker, lost.prev_at, lost.at
        FROM lost WHERE NOT lost.explained""",
    "no task, step or run reaches a final state twice or leaves one (duplicates)": """
        SELECT 'task' AS what, run_id::text || '/' || step_slug || '/' || task_index AS id,
               count(*) FILTER (WHERE new_status = 'completed') AS completions,
               count(*) FILTER (WHERE old_status IN ('completed', 'failed')) AS reopened
        FROM chaos.task_events GROUP BY run_id, step_slug, task_index
        HAVING count(*) FILTER (WHERE new_status = 'completed') > 1
            OR count(*) FILTER (WHERE old_status IN ('completed', 'failed')) > 0
        UNION ALL
        SELECT 'step', run_id::text || '/' || step_slug,
               count(*) FILTER (WHERE new_status = 'completed'),
               count(*) FILTER (WHERE old_status IN ('completed', 'failed', 'skipped'))
        FROM chaos.step_events GROUP BY run_id, step_slug
        HAVING count(*) FILTER (WHERE new_status = 'completed') > 1
            OR count(*) FILTER (WHERE old_status IN ('completed', 'failed', 'skipped')) > 0
        UNION ALL
        SELECT 'run', run_id::text,
               count(*) FILTER (WHERE new_status = 'completed'),
               count(*) FILTER (WHERE old_status IN ('completed', 'failed'))
        FROM chaos.run_events GROUP BY run_id
        HAVING count(*) FILTER (WHERE new_status IN ('completed', 'failed')) > 1
            OR count(*) FILTER (WHERE old_status IN ('completed', 'failed')) > 0""",
    "every completed output was produced by a handler execution of that attempt": """
        SELECT t.run_id, t.step_slug, t.task_index, t.output -> 'a' AS attempt
        FROM pgflow.step_tasks AS t
        WHERE t.status = 'completed' AND jsonb_typeof(t.output) = 'object'
          -- (a sub-flow task's output is its child run's: checked below)
          AND NOT EXISTS (SELECT 1 FROM pgflow.step_subflows AS sf
                          WHERE sf.flow_slug = t.flow_slug AND sf.step_slug = t.step_slug)
          AND NOT EXISTS (
              SELECT 1 FROM chaos.executions AS x
              WHERE x.run_id = t.run_id AND x.step_slug = t.step_slug
                AND x.task_index = t.task_index AND x.attempt = (t.output ->> 'a')::int)""",
    "sub-flows: a task's output is its child run's, no orphan child, one child per attempt": """
        SELECT 'output' AS what, t.run_id, t.step_slug, t.task_index, t.attempts_count
        FROM pgflow.step_tasks AS t
        JOIN pgflow.step_subflows AS sf USING (flow_slug, step_slug)
        WHERE t.status = 'completed'
          AND t.output IS DISTINCT FROM (
              SELECT c.output FROM pgflow.runs AS c
              WHERE c.parent_run_id = t.run_id AND c.parent_step_slug = t.step_slug
                AND c.parent_task_index = t.task_index AND c.parent_attempt = t.attempts_count
                AND c.status = 'completed')
        UNION ALL
        SELECT 'orphan', c.run_id, c.parent_step_slug, c.parent_task_index, c.parent_attempt
        FROM pgflow.runs AS c
        WHERE c.parent_run_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pgflow.step_tasks AS t
                          WHERE t.run_id = c.parent_run_id AND t.step_slug = c.parent_step_slug
                            AND t.task_index = c.parent_task_index
                            AND t.attempts_count >= c.parent_attempt)
        UNION ALL
        SELECT 'duplicate', c.parent_run_id, c.parent_step_slug, c.parent_task_index,
               c.parent_attempt
        FROM pgflow.runs AS c WHERE c.parent_run_id IS NOT NULL
        GROUP BY c.parent_run_id, c.parent_step_slug, c.parent_task_index, c.parent_attempt
        HAVING count(*) > 1""",
    "attempts_count <= max_attempts": """
        SELECT t.run_id, t.step_slug, t.task_index, t.attempts_count,
               coalesce(s.opt_max_attempts, f.opt_max_attempts) AS max_attempts
        FROM pgflow.step_tasks AS t
        JOIN pgflow.steps AS s USING (flow_slug, step_slug)
        JOIN pgflow.flows AS f USING (flow_slug)
        WHERE t.attempts_count > coalesce(s.opt_max_attempts, f.opt_max_attempts)""",
    "a completed run's output is {leaf: output} over its completed leaf steps": """
        SELECT r.run_id, r.output, l.leaves
        FROM pgflow.runs AS r
        CROSS JOIN LATERAL (
            SELECT coalesce(jsonb_object_agg(ss.step_slug, ss.output), '{}'::jsonb) AS leaves
            FROM pgflow.step_states AS ss
            WHERE ss.run_id = r.run_id AND ss.status = 'completed'
              AND NOT EXISTS (SELECT 1 FROM pgflow.deps AS d
                              WHERE d.flow_slug = ss.flow_slug AND d.dep_slug = ss.step_slug))
            AS l
        WHERE r.status = 'completed' AND r.output IS DISTINCT FROM l.leaves""",
    "step counters agree with the tasks and the dependencies": """
        WITH tasks AS (
            SELECT run_id, step_slug, count(*)::int AS n,
                   count(*) FILTER (WHERE status = 'completed')::int AS done,
                   jsonb_agg(output ORDER BY task_index) AS outputs
            FROM pgflow.step_tasks GROUP BY run_id, step_slug
        ), deps AS (
            SELECT ss.run_id, ss.step_slug,
                   count(dss.step_slug) FILTER (
                       WHERE dss.status NOT IN ('completed', 'skipped'))::int AS open_deps
            FROM pgflow.step_states AS ss
            LEFT JOIN pgflow.deps AS d
              ON d.flow_slug = ss.flow_slug AND d.step_slug = ss.step_slug
            LEFT JOIN pgflow.step_states AS dss
              ON dss.run_id = ss.run_id AND dss.step_slug = d.dep_slug
            GROUP BY ss.run_id, ss.step_slug
        )
        SELECT ss.run_id, ss.step_slug, ss.status, ss.remaining_deps, d.open_deps,
               ss.initial_tasks, ss.remaining_tasks, t.n, t.done
        FROM pgflow.step_states AS ss
        JOIN pgflow.steps AS s USING (flow_slug, step_slug)
        JOIN deps AS d USING (run_id, step_slug)
        LEFT JOIN tasks AS t USING (run_id, step_slug)
        WHERE (ss.status <> 'skipped' AND ss.remaining_deps <> d.open_deps)
           OR (ss.status IN ('started', 'completed') AND ss.remaining_deps <> 0)
           OR (ss.initial_tasks IS NOT NULL
               AND (ss.initial_tasks <> coalesce(t.n, 0)
                    OR ss.remaining_tasks <> ss.initial_tasks - coalesce(t.done, 0)))
           OR (ss.status = 'completed' AND (ss.remaining_tasks <> 0
               OR ss.output IS DISTINCT FROM CASE
                   WHEN s.step_type = 'map' THEN coalesce(t.outputs, '[]'::jsonb)
                   ELSE t.outputs -> 0 END))
           OR (ss.status IN ('created', 'skipped') AND coalesce(t.n, 0) > 0
               AND t.done > 0)
        UNION ALL
        SELECT r.run_id, 'run.remaining_steps', r.status, r.remaining_steps,
               count(ss.step_slug) FILTER (WHERE ss.status NOT IN ('completed', 'skipped'))::int,
               NULL, NULL, NULL, NULL
        FROM pgflow.runs AS r JOIN pgflow.step_states AS ss USING (run_id)
        GROUP BY r.run_id
        HAVING r.remaining_steps
            <> count(ss.step_slug) FILTER (WHERE ss.status NOT IN ('completed', 'skipped'))
            OR (r.status = 'completed' AND bool_or(ss.status NOT IN ('completed', 'skipped')))""",
    "recovery after each kill <= step timeout + 5 s": f"""
        WITH {_KILLS}, held AS (
            SELECT k.kill_no, k.killed_at, s.run_id, s.step_slug, s.task_index, s.id,
                   coalesce(st.opt_timeout, f.opt_timeout) AS timeout,
                   (SELECT min(n.at) FROM chaos.task_events AS n
                    WHERE n.run_id = s.run_id AND n.step_slug = s.step_slug
                      AND n.task_index = s.task_index AND n.id > s.id) AS next_at
            FROM kills AS k
            JOIN chaos.task_events AS s
              ON s.worker_id = k.worker_id AND s.new_status = 'started'
            JOIN pgflow.runs AS r ON r.run_id = s.run_id
            JOIN pgflow.steps AS st ON st.flow_slug = r.flow_slug AND st.step_slug = s.step_slug
            JOIN pgflow.flows AS f ON f.flow_slug = r.flow_slug
        )
        SELECT kill_no, run_id, step_slug, task_index, killed_at, next_at,
               next_at - killed_at AS recovery
        FROM held
        WHERE (next_at IS NULL OR next_at > killed_at)
          AND (next_at IS NULL OR next_at - killed_at > make_interval(secs => timeout + 5))""",
}

FIGURES: Final = f"""
    WITH {_KILLS}, held AS (
        SELECT k.kill_no,
               (SELECT min(n.at) FROM chaos.task_events AS n
                WHERE n.run_id = s.run_id AND n.step_slug = s.step_slug
                  AND n.task_index = s.task_index AND n.id > s.id) - k.killed_at AS recovery
        FROM kills AS k
        JOIN chaos.task_events AS s
          ON s.worker_id = k.worker_id AND s.new_status = 'started'
    ), recoveries AS (
        SELECT kill_no, max(recovery) AS recovery, count(*) AS held
        FROM held WHERE recovery IS NULL OR recovery > interval '0' GROUP BY kill_no
    ), {_EVENTS.strip()}
    SELECT
        (SELECT count(*) FROM pgflow.runs) AS runs,
        (SELECT count(*) FROM pgflow.runs WHERE status = 'completed') AS completed,
        (SELECT count(*) FROM pgflow.runs WHERE status = 'failed') AS failed,
        (SELECT count(*) FROM pgflow.step_tasks) AS tasks,
        (SELECT coalesce(sum(attempts_count), 0) FROM pgflow.step_tasks) AS attempts,
        (SELECT count(*) FROM chaos.executions) AS executions,
        (SELECT count(*) FROM chaos.kills) AS kills,
        (SELECT count(*) FROM recoveries) AS kills_holding_tasks,
        (SELECT coalesce(sum(held), 0) FROM recoveries) AS tasks_held_at_kills,
        (SELECT count(*) FROM chaos.restarts) AS restarts,
        (SELECT count(*) FROM chaos.started AS s LEFT JOIN pgflow.runs AS r USING (run_id)
         WHERE r.run_id IS NULL OR r.status NOT IN ('completed', 'failed')) AS lost_runs,
        (SELECT count(*) FROM pgflow.step_tasks WHERE status IN ('queued', 'started'))
            AS lost_tasks,
        (SELECT count(*) FROM (
            SELECT 1 FROM chaos.task_events GROUP BY run_id, step_slug, task_index
            HAVING count(*) FILTER (WHERE new_status = 'completed') > 1
                OR count(*) FILTER (WHERE old_status IN ('completed', 'failed')) > 0) AS d)
            AS duplicates,
        (SELECT extract(epoch FROM max(recovery)) FROM recoveries) AS worst_recovery_s,
        (SELECT count(*) FROM recoveries WHERE recovery IS NULL) AS never_recovered,
        (SELECT count(*) FROM ev WHERE prev_status = 'started'
            AND ((new_status = 'started'
                  AND coalesce(error_message, '') NOT LIKE 'sub-flow run %')
                 OR (new_status = 'failed'
                     AND error_message LIKE 'lease expired on the last attempt%')))
            AS lost_attempts,
        (SELECT count(*) FROM pgflow.runs WHERE parent_run_id IS NOT NULL) AS child_runs,
        (SELECT count(*) FROM pgflow.runs WHERE parent_attempt > 1) AS child_retries,
        (SELECT count(DISTINCT te.run_id) FROM chaos.task_events AS te
         JOIN chaos.scripts AS sc USING (run_id, step_slug, task_index)
         WHERE te.error_message LIKE 'lease expired on the last attempt%'
           AND NOT sc.behaviour ? 'fail') AS kill_exhausted_runs,
        (SELECT count(*) FROM chaos.task_events
         WHERE new_status = 'completed' AND old_status = 'started'
           AND attempts_count > 0 AND EXISTS (
               SELECT 1 FROM pgflow.step_tasks AS t
               WHERE t.run_id = task_events.run_id AND t.step_slug = task_events.step_slug
                 AND t.task_index = task_events.task_index
                 AND jsonb_typeof(t.output) = 'object'
                 AND (t.output ->> 'a')::int < task_events.attempts_count))
            AS late_completions
"""
