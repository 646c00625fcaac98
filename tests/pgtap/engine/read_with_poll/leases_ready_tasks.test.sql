BEGIN;
SELECT plan(16);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b');
SELECT pgflow.add_step('f', 'c');
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'a');

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000002');

CREATE TEMP TABLE first_read AS SELECT * FROM pgflow.read_with_poll('f', 30, 2);

SELECT is((SELECT count(*) FROM first_read), 2::bigint, 'read_with_poll leases at most qty tasks');
SELECT ok(
    (SELECT bool_and(m.vt >= now() + interval '30 seconds'
                     AND m.vt <= clock_timestamp() + interval '30 seconds')
     FROM first_read AS m),
    'the lease lasts vt seconds from the read'
);
SELECT ok((SELECT bool_and(m.read_ct = 1) FROM first_read AS m), 'read_ct counts the first read');
SELECT ok((SELECT bool_and(m.enqueued_at = now()) FROM first_read AS m),
          'enqueued_at is when the task was queued');
SELECT results_eq(
    $$SELECT m.message FROM first_read AS m JOIN pgflow.step_tasks AS t ON t.message_id = m.msg_id
      ORDER BY m.msg_id$$,
    $$SELECT jsonb_build_object('run_id', t.run_id, 'step_slug', t.step_slug, 'task_index', t.task_index)
      FROM pgflow.step_tasks AS t JOIN first_read AS m ON t.message_id = m.msg_id ORDER BY m.msg_id$$,
    'the message names the task by run_id, step_slug and task_index'
);
SELECT is(
    (SELECT m.message FROM first_read AS m ORDER BY m.msg_id LIMIT 1),
    '{"run_id": "00000000-0000-0000-0000-000000000001", "step_slug": "a", "task_index": 0}'::jsonb,
    'the message has exactly those keys'
);
SELECT results_eq(
    $$SELECT t.status, t.read_ct, t.attempts_count, t.vt FROM pgflow.step_tasks AS t
      JOIN first_read AS m ON t.message_id = m.msg_id ORDER BY m.msg_id$$,
    $$SELECT 'queued'::text, 1, 0, m.vt FROM first_read AS m ORDER BY m.msg_id$$,
    'a leased task stays queued (no attempt yet) with the lease as its vt'
);
SELECT is(
    (SELECT (t.read_ct, t.vt = now())::text FROM pgflow.step_tasks AS t
     WHERE t.flow_slug = 'f' AND t.message_id NOT IN (SELECT msg_id FROM first_read)),
    '(0,t)',
    'the task left over is untouched'
);

CREATE TEMP TABLE second_read AS SELECT * FROM pgflow.read_with_poll('f', 30, 10);
SELECT is(
    (SELECT count(*) FROM second_read),
    1::bigint,
    'a second read gets only the task not leased yet'
);
SELECT is(
    (SELECT count(*) FROM second_read WHERE msg_id IN (SELECT msg_id FROM first_read)),
    0::bigint,
    'leased tasks are not returned while their lease lasts'
);
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('f', 30, 10)$$,
    'nothing is left to read');
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('f', 30, 10, max_poll_seconds => 1, poll_interval_ms => 200)$$,
    'with max_poll_seconds it polls, and returns nothing when nothing comes');

-- a task with a future vt (a retry or a start delay) is not claimable yet
UPDATE pgflow.step_tasks SET vt = clock_timestamp() + interval '5 seconds' WHERE flow_slug = 'g';
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('g', 30, 10)$$,
    'a task whose vt is in the future is not returned');
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE flow_slug = 'g';
SELECT is(
    (SELECT m.message ->> 'run_id' FROM pgflow.read_with_poll('g', 30, 10) AS m),
    '00000000-0000-0000-0000-000000000002',
    'a read returns only tasks of the flow asked for'
);
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('nosuchflow', 30, 10)$$,
    'reading an unknown flow returns nothing');

-- the oldest claimable task comes first
SELECT pgflow.create_flow('h');
SELECT pgflow.add_step('h', 'a');
SELECT pgflow.add_step('h', 'b');
SELECT pgflow.start_flow('h', '{}');
UPDATE pgflow.step_tasks SET vt = now() - interval '10 seconds' WHERE flow_slug = 'h' AND step_slug = 'b';
SELECT is(
    (SELECT m.message ->> 'step_slug' FROM pgflow.read_with_poll('h', 30, 1) AS m),
    'b',
    'the task claimable for longest is leased first'
);

SELECT * FROM finish();
ROLLBACK;
