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
