BEGIN;
SELECT plan(16);

-- f: a may be attempted twice and fails the run; o is another root
SELECT pgflow.create_flow('f', max_attempts => 2, timeout => 10);
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'o');
SELECT pgflow.add_step('f', 'after', ARRAY['a']);
-- g: x has one attempt and is skipped when exhausted; y depends on it
SELECT pgflow.create_flow('g', max_attempts => 1);
SELECT pgflow.add_step('g', 'x', when_exhausted => 'skip');
SELECT pgflow.add_step('g', 'y', ARRAY['x']);
-- h: two one-attempt roots whose leases expire together
SELECT pgflow.create_flow('h', max_attempts => 1);
SELECT pgflow.add_step('h', 'p');
SELECT pgflow.add_step('h', 'q');

CREATE FUNCTION pg_temp.start_all(flow text) RETURNS SETOF pgflow.step_task_record LANGUAGE sql AS $$
    SELECT * FROM pgflow.start_tasks(flow,
        ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll(flow, 30, 100) AS m),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pg_temp.start_all('f');

-- the first lease expires: a second attempt is still allowed
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'a';
SELECT is((SELECT count(*) FROM pg_temp.start_all('f')), 1::bigint,
          'a task whose lease expired with attempts left is started again');
SELECT is((SELECT attempts_count FROM pgflow.step_tasks WHERE step_slug = 'a'), 2,
          'that counts its second attempt');

-- the second (last) lease expires too
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'a';
SELECT is_empty($$SELECT * FROM pg_temp.start_all('f')$$,
    'a task whose lease expired on its last attempt is not started again');
SELECT is(
    (SELECT (t.status, t.attempts_count, t.failed_at = now())::text FROM pgflow.step_tasks AS t
     WHERE t.step_slug = 'a'),
    '(failed,2,t)',
    'it is failed instead, without a further attempt'
);
SELECT is(
    (SELECT t.error_message FROM pgflow.step_tasks AS t WHERE t.step_slug = 'a'),
    'lease expired on the last attempt (2): worker 00000000-0000-0000-0000-0000000000a1 stopped '
    'or the handler ran past the 10 s timeout',
    'its error message says the lease expired on the last attempt, naming the worker and the timeout'
);
SELECT is(
    (SELECT (ss.status, ss.failed_at = now())::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'a'),
    '(failed,t)',
    'its step fails (when_exhausted = fail)'
);
SELECT is(
    (SELECT (r.status, r.failed_at = now())::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '(failed,t)',
    'and so does the run'
);
SELECT matches(
    (SELECT r.error_message FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '^step "a" failed: lease expired on the last attempt',
    'the run''s error message names the step and the cause'
);
SELECT is(
    (SELECT t.status FROM pgflow.step_tasks AS t WHERE t.step_slug = 'o'),
    'cancelled',
    'the run''s other running task is cancelled'
);

-- g: when_exhausted = skip
SELECT pgflow.start_flow('g', '{"n": 1}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pg_temp.start_all('g');
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE step_slug = 'x';
SELECT is_empty($$SELECT * FROM pg_temp.start_all('g')$$,
    'with one attempt, an expired lease is not re-run');
SELECT is(
    (SELECT (ss.status, ss.skip_reason, ss.skipped_at = now(), ss.error_message LIKE 'lease expired%')::text
     FROM pgflow.step_states AS ss WHERE ss.step_slug = 'x'),
    '(skipped,handler_failed,t,t)',
    'when_exhausted = skip applies: the step is skipped with handler_failed and the error'
);
SELECT is(
    (SELECT (ss.status, ss.remaining_deps)::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'y'),
    '(started,0)',
    'its dependent starts'
);
SELECT is(
    (SELECT s.input FROM pg_temp.start_all('g') AS s),
    '{"run": {"n": 1}}'::jsonb,
    'without the skipped step in its input'
);

-- h: both exhausted tasks come back in one batch; the first fails the run,
-- which cancels the second: it must stay cancelled
SELECT pgflow.start_flow('h', '{}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT pg_temp.start_all('h');
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE flow_slug = 'h';
SELECT is_empty($$SELECT * FROM pg_temp.start_all('h')$$,
    'two tasks whose last leases expired are not started again');
SELECT is(
    (SELECT (r.status, r.error_message LIKE 'step "p" failed: lease expired%')::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000003'),
    '(failed,t)',
    'the first of them fails the run'
);
SELECT is(
    (SELECT (t.status, t.error_message, ss.status)::text
     FROM pgflow.step_tasks AS t JOIN pgflow.step_states AS ss USING (run_id, step_slug)
     WHERE t.run_id = '00000000-0000-0000-0000-000000000003' AND t.step_slug = 'q'),
    '(cancelled,,cancelled)',
    'the second, cancelled with the run, stays cancelled like its step'
);

SELECT * FROM finish();
ROLLBACK;
