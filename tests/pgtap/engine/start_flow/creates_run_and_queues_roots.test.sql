BEGIN;
SELECT plan(14);

-- a and b are roots, c waits for both
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b');
SELECT pgflow.add_step('f', 'c', ARRAY['a', 'b']);

SELECT is(
    (SELECT (r.run_id, r.flow_slug, r.status, r.remaining_steps, r.input, r.output)::text
     FROM pgflow.start_flow('f', '{"x": 1}', run_id => '00000000-0000-0000-0000-000000000001') AS r),
    '(00000000-0000-0000-0000-000000000001,f,started,3,"{""x"": 1}",)',
    'start_flow returns the new run: started, one remaining step per step, no output yet'
);
SELECT is(
    (SELECT (r.started_at = now(), r.completed_at, r.failed_at)::text FROM pgflow.runs AS r),
    '(t,,)',
    'the run is started now and neither completed nor failed'
);
SELECT results_eq(
    $$SELECT step_slug, flow_slug, status, remaining_deps, initial_tasks, remaining_tasks
      FROM pgflow.step_states ORDER BY step_slug$$,
    $$VALUES ('a', 'f', 'started', 0, 1, 1), ('b', 'f', 'started', 0, 1, 1),
             ('c', 'f', 'created', 2, NULL::integer, NULL::integer)$$,
    'each step gets a state: roots started with one task, the others wait on their dependencies'
);
SELECT results_eq(
    $$SELECT step_slug, started_at = now() FROM pgflow.step_states ORDER BY step_slug$$,
    $$VALUES ('a', true), ('b', true), ('c', NULL::boolean)$$,
    'root steps are started now; a waiting step has no started_at'
);
SELECT ok(
    (SELECT bool_and(ss.created_at = now() AND ss.output IS NULL AND ss.completed_at IS NULL
                     AND ss.failed_at IS NULL AND ss.skipped_at IS NULL AND ss.skip_reason IS NULL)
     FROM pgflow.step_states AS ss),
    'step states are created now with no output and no end timestamps'
);
SELECT results_eq(
    $$SELECT step_slug, task_index, flow_slug, status, attempts_count, read_ct
      FROM pgflow.step_tasks ORDER BY step_slug$$,
    $$VALUES ('a', 0, 'f', 'queued', 0, 0), ('b', 0, 'f', 'queued', 0, 0)$$,
    'each root step gets one queued task with no attempt yet; waiting steps get none'
);
SELECT ok(
    (SELECT bool_and(t.vt = now() AND t.queued_at = now() AND t.started_at IS NULL
                     AND t.last_worker_id IS NULL AND t.output IS NULL)
     FROM pgflow.step_tasks AS t),
    'root tasks are claimable now'
);
SELECT is(
    (SELECT count(DISTINCT t.message_id) FROM pgflow.step_tasks AS t WHERE t.message_id IS NOT NULL),
    2::bigint,
    'each task has its own message id'
);

-- without run_id, one is generated
SELECT isnt(
    (SELECT r.run_id FROM pgflow.start_flow('f', '[]') AS r),
    NULL,
    'start_flow without run_id generates one'
);
SELECT is((SELECT count(*) FROM pgflow.runs), 2::bigint, 'every call without run_id starts a new run');
SELECT is((SELECT count(*) FROM pgflow.step_states), 6::bigint, 'the second run gets its own step states');
SELECT is((SELECT count(*) FROM pgflow.step_tasks), 4::bigint, 'the second run gets its own root tasks');
SELECT is(
    (SELECT r.input FROM pgflow.runs AS r WHERE r.run_id <> '00000000-0000-0000-0000-000000000001'),
    '[]'::jsonb,
    'any JSON value is a valid input'
);
SELECT is(
    (SELECT r.status FROM pgflow.start_flow('f', 'null') AS r),
    'started',
    'a JSON null input is accepted (only SQL NULL is refused)'
);

SELECT * FROM finish();
ROLLBACK;
