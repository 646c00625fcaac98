BEGIN;
SELECT plan(12);

-- a (two attempts), m maps over a's output, s is skipped, w waits for m
SELECT pgflow.create_flow('f', max_attempts => 3);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'm', ARRAY['a'], step_type => 'map');
SELECT pgflow.add_step('f', 's', required_input_pattern => '{"run": {"go": true}}');
SELECT pgflow.add_step('f', 'w', ARRAY['m']);

CREATE FUNCTION pg_temp.start_step(step text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
              WHERE t.step_slug = step AND t.status = 'queued'),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '{"go": false}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_step('a');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'a', 0, 'flaky');
UPDATE pgflow.step_tasks SET vt = now();
SELECT pg_temp.start_step('a');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '[1, null, 3]');
SELECT pgflow.start_tasks('f', ARRAY(SELECT message_id FROM pgflow.step_tasks
                                     WHERE step_slug = 'm' AND task_index = 0), NULL);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'm', 0, 'null');
SELECT pgflow.start_tasks('f', ARRAY(SELECT message_id FROM pgflow.step_tasks
                                     WHERE step_slug = 'm' AND task_index = 1), NULL);

CREATE TEMP TABLE doc AS SELECT pgflow.get_run('00000000-0000-0000-0000-000000000001') AS d;

SELECT is(
    (SELECT array_agg(k ORDER BY k) FROM doc, jsonb_object_keys(d) AS k),
    ARRAY['cancelled_at', 'children', 'completed_at', 'depth', 'error_message', 'failed_at', 'flow_name',
          'flow_slug', 'input', 'output', 'parent', 'paused', 'remaining_steps', 'retries', 'run_id', 'started_at', 'status', 'steps', 'version'],
    'the document has the run''s fields and its steps'
);
SELECT is(
    (SELECT d - 'steps' - 'started_at' FROM doc),
    jsonb_build_object(
        'run_id', '00000000-0000-0000-0000-000000000001', 'flow_slug', 'f', 'flow_name', 'f',
        'version', 1, 'status', 'started',
        'input', '{"go": false}'::jsonb, 'output', NULL, 'error_message', NULL,
        'remaining_steps', 2, 'retries', 0,
        'completed_at', NULL, 'failed_at', NULL, 'cancelled_at', NULL, 'paused', false,
        'depth', 0, 'parent', NULL, 'children', '[]'::jsonb),
    'run fields are as stored, absent ones JSON null'
);
SELECT is((SELECT (d ->> 'started_at')::timestamptz FROM doc), now(), 'timestamps are ISO 8601');
SELECT is(
    ARRAY(SELECT e ->> 'step_slug' FROM doc, jsonb_array_elements(d -> 'steps') AS e),
    ARRAY['a', 'm', 's', 'w'],
    'steps come in definition order'
);
SELECT is(
    (SELECT array_agg(k ORDER BY k) FROM doc, jsonb_object_keys(d -> 'steps' -> 0) AS k),
    ARRAY['attempts', 'completed_at', 'created_at', 'error_message', 'failed_at', 'initial_tasks',
          'output', 'remaining_deps', 'remaining_tasks', 'skip_reason', 'skipped_at', 'started_at',
          'status', 'step_slug', 'step_type', 'subflow', 'tasks', 'waiting_for', 'waiting_for_slot'],
    'each step has its state, counts, times and output'
);
SELECT is(
    (SELECT (d -> 'steps' -> 0) - 'created_at' - 'started_at' - 'completed_at' FROM doc),
    '{"step_slug": "a", "step_type": "single", "status": "completed", "attempts": 2,
      "remaining_deps": 0, "initial_tasks": 1, "remaining_tasks": 0,
      "tasks": {"queued": 0, "started": 0, "completed": 1, "failed": 0, "cancelled": 0},
      "output": [1, null, 3], "error_message": null, "skip_reason": null,
      "failed_at": null, "skipped_at": null, "waiting_for": null, "subflow": null, "waiting_for_slot": null}'::jsonb,
    'a completed step shows its attempts and its output (nulls inside outputs kept)'
);
SELECT is(
    (SELECT d -> 'steps' -> 1 -> 'tasks' FROM doc),
    '{"queued": 1, "started": 1, "completed": 1, "failed": 0, "cancelled": 0}'::jsonb,
    'a map step counts its tasks by status'
);
SELECT is(
    (SELECT (d -> 'steps' -> 1) - 'created_at' - 'started_at' - 'tasks' FROM doc),
    '{"step_slug": "m", "step_type": "map", "status": "started", "attempts": 2,
      "remaining_deps": 0, "initial_tasks": 3, "remaining_tasks": 2, "output": null,
      "error_message": null, "skip_reason": null, "completed_at": null, "failed_at": null,
      "skipped_at": null, "waiting_for": null, "subflow": null, "waiting_for_slot": null}'::jsonb,
    'a running map step shows its progress'
);
SELECT is(
    (SELECT (d -> 'steps' -> 2 ->> 'status', d -> 'steps' -> 2 ->> 'skip_reason',
             (d -> 'steps' -> 2 ->> 'skipped_at')::timestamptz = now())::text FROM doc),
    '(skipped,condition_unmet,t)',
    'a skipped step shows why and when'
);
SELECT is((SELECT d -> 'steps' -> 3 ->> 'status' FROM doc), 'created', 'a waiting step is created');

SELECT is(pgflow.get_run('00000000-0000-0000-0000-000000000009'), NULL, 'an unknown run gives NULL');
SELECT is(pgflow.get_run(NULL), NULL, 'so does NULL');

SELECT * FROM finish();
ROLLBACK;
