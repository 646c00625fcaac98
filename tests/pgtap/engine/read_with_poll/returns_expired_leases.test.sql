BEGIN;
SELECT plan(13);

SELECT pgflow.create_flow('f', max_attempts => 3, timeout => 10);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b');
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');

-- both tasks start; then a's worker dies: its lease expires
SELECT pgflow.start_tasks('f', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('f', 30, 10)),
                          '00000000-0000-0000-0000-0000000000a1');
SELECT is_empty($$SELECT * FROM pgflow.read_with_poll('f', 30, 10)$$,
    'started tasks are not returned while their lease lasts');

UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'a';
CREATE TEMP TABLE reread AS SELECT * FROM pgflow.read_with_poll('f', 30, 10);

SELECT is(
    (SELECT m.message ->> 'step_slug' FROM reread AS m),
    'a',
    'a started task whose lease expired is returned again (and only it)'
);
SELECT is((SELECT m.read_ct FROM reread AS m), 2, 'read_ct counts the second read');
SELECT is(
    (SELECT (t.status, t.attempts_count, t.read_ct)::text FROM pgflow.step_tasks AS t
     WHERE t.step_slug = 'a'),
    '(queued,1,2)',
    'the re-read task is leased again (queued) and keeps its attempt count'
);
SELECT ok(
    (SELECT t.vt >= now() + interval '30 seconds' FROM pgflow.step_tasks AS t WHERE t.step_slug = 'a'),
    'the re-read task gets a fresh lease'
);
SELECT is(
    pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"late"'),
    false,
    'a late completion by the dead worker after the re-read changes nothing'
);

-- a second worker starts it: a new attempt
CREATE TEMP TABLE restarted AS
SELECT * FROM pgflow.start_tasks('f', ARRAY(SELECT msg_id FROM reread),
                                 '00000000-0000-0000-0000-0000000000a2');
SELECT is((SELECT count(*) FROM restarted), 1::bigint, 'the re-claimed task is started again');
SELECT is((SELECT attempt FROM restarted), 2, 'the record says it is attempt 2');
SELECT is(
    (SELECT (t.status, t.attempts_count, t.last_worker_id, t.vt = now() + interval '12 seconds')::text
     FROM pgflow.step_tasks AS t WHERE t.step_slug = 'a'),
    '(started,2,00000000-0000-0000-0000-0000000000a2,t)',
    'the re-claim counts as a new attempt by the new worker with a new lease'
);
SELECT is(
    (SELECT (t.status, t.attempts_count)::text FROM pgflow.step_tasks AS t WHERE t.step_slug = 'b'),
    '(started,1)',
    'the other task is unaffected'
);
SELECT is(
    (SELECT (ss.status, ss.remaining_tasks)::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'a'),
    '(started,1)',
    'the step stays started with its task still to do'
);

SELECT is(
    pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"A"'),
    true,
    'the new attempt completes'
);
SELECT is(
    (SELECT (ss.status, ss.output)::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'a'),
    '(completed,"""A""")',
    'the step completes with the new attempt''s output'
);

SELECT * FROM finish();
ROLLBACK;
