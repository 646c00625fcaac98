BEGIN;
SELECT plan(15);

-- flow timeout 10 s; b overrides it with 20 s
SELECT pgflow.create_flow('f', timeout => 10);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', timeout => 20);
SELECT pgflow.add_step('f', 'c', ARRAY['a']);
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'a');
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000002');

CREATE TEMP TABLE leased AS SELECT * FROM pgflow.read_with_poll('f', 30, 10);
CREATE TEMP TABLE started AS
SELECT * FROM pgflow.start_tasks('f', ARRAY(SELECT msg_id FROM leased),
                                 '00000000-0000-0000-0000-0000000000a1');

SELECT results_eq(
    $$SELECT s.flow_slug, s.run_id, s.step_slug, s.task_index, s.msg_id FROM started AS s
      ORDER BY s.msg_id$$,
    $$SELECT t.flow_slug, t.run_id, t.step_slug, t.task_index, t.message_id FROM pgflow.step_tasks AS t
      WHERE t.flow_slug = 'f' ORDER BY t.message_id$$,
    'start_tasks returns one record per leased task, naming it'
);
SELECT results_eq(
    $$SELECT t.step_slug, t.status, t.attempts_count, t.last_worker_id FROM pgflow.step_tasks AS t
      WHERE t.flow_slug = 'f' ORDER BY t.step_slug$$,
    $$VALUES ('a', 'started', 1, '00000000-0000-0000-0000-0000000000a1'::uuid),
             ('b', 'started', 1, '00000000-0000-0000-0000-0000000000a1'::uuid)$$,
    'the tasks are started: an attempt is counted and the worker recorded'
);
SELECT ok((SELECT bool_and(s.attempt = 1) FROM started AS s), 'the record says it is attempt 1');
SELECT ok(
    (SELECT bool_and(t.started_at = now()) FROM pgflow.step_tasks AS t WHERE t.flow_slug = 'f'),
    'started_at is now'
);
SELECT is(
    (SELECT t.vt FROM pgflow.step_tasks AS t WHERE t.step_slug = 'a' AND t.flow_slug = 'f'),
    now() + interval '12 seconds',
    'the lease is now + the flow timeout + 2 s'
);
SELECT is(
    (SELECT t.vt FROM pgflow.step_tasks AS t WHERE t.step_slug = 'b'),
    now() + interval '22 seconds',
    'a step-level timeout overrides the flow''s'
);
SELECT is(
    (SELECT (ss.status, ss.remaining_tasks)::text FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug = 'a'),
    '(started,1)',
    'starting a task does not change its step''s counters'
);

-- already started: left out, nothing changes
SELECT is_empty(
    $$SELECT * FROM pgflow.start_tasks('f', ARRAY(SELECT msg_id FROM leased),
                                       '00000000-0000-0000-0000-0000000000a2')$$,
    'tasks already started are left out'
);
SELECT results_eq(
    $$SELECT t.attempts_count, t.last_worker_id FROM pgflow.step_tasks AS t
      WHERE t.flow_slug = 'f' ORDER BY t.step_slug$$,
    $$VALUES (1, '00000000-0000-0000-0000-0000000000a1'::uuid),
             (1, '00000000-0000-0000-0000-0000000000a1'::uuid)$$,
    'a second start changes neither the attempts nor the worker'
);

-- ids of another flow, unknown ids, an empty list
SELECT is_empty(
    $$SELECT * FROM pgflow.start_tasks('f', ARRAY(SELECT message_id FROM pgflow.step_tasks
                                                  WHERE flow_slug = 'g'), gen_random_uuid())$$,
    'a message id of another flow is left out'
);
SELECT is(
    (SELECT t.status FROM pgflow.step_tasks AS t WHERE t.flow_slug = 'g'),
    'queued',
    'and that task stays queued'
);
SELECT is_empty($$SELECT * FROM pgflow.start_tasks('f', ARRAY[-1, 999999]::bigint[], gen_random_uuid())$$,
    'unknown message ids are left out');
SELECT is_empty($$SELECT * FROM pgflow.start_tasks('f', '{}', gen_random_uuid())$$,
    'an empty list starts nothing');
SELECT throws_ok($$SELECT * FROM pgflow.start_tasks('f', NULL, gen_random_uuid())$$, '22004',
    'msg_ids must not be NULL', 'a NULL list is refused');
SELECT throws_ok($$SELECT * FROM pgflow.start_tasks(NULL, '{}', gen_random_uuid())$$, '22004',
    'flow slug must not be NULL', 'a NULL flow slug is refused');

SELECT * FROM finish();
ROLLBACK;
