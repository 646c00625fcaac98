BEGIN;
SELECT plan(12);

SELECT pgflow.create_flow('f', max_attempts => 2, timeout => 10);
SELECT pgflow.add_step('f', 'each', step_type => 'map');
SELECT pgflow.start_flow('f', '[10, 20, 30]', run_id => '00000000-0000-0000-0000-000000000001');
UPDATE pgflow.step_tasks SET vt = now() - (task_index || ' seconds')::interval * -1 - interval '1 hour'
WHERE run_id = '00000000-0000-0000-0000-000000000001';

SELECT results_eq(
    $$SELECT task_index, input, attempt
      FROM pgflow.claim_tasks('f', 2, '00000000-0000-0000-0000-00000000000a')$$,
    $$VALUES (0, '10'::jsonb, 1), (1, '20'::jsonb, 1)$$,
    'claim_tasks starts up to qty tasks, oldest first, and returns their inputs'
);
SELECT results_eq(
    $$SELECT status, attempts_count, vt = now() + interval '12 seconds', last_worker_id::text
      FROM pgflow.step_tasks WHERE task_index < 2 ORDER BY task_index$$,
    $$VALUES ('started', 1, true, '00000000-0000-0000-0000-00000000000a'),
             ('started', 1, true, '00000000-0000-0000-0000-00000000000a')$$,
    'claimed tasks are started with the attempt counted and a lease of timeout + 2 s'
);
SELECT is((SELECT count(*) FROM pgflow.claim_tasks('f', 5, gen_random_uuid())), 1::bigint,
          'a second claim gets only the task left');
SELECT is_empty($$SELECT * FROM pgflow.claim_tasks('f', 5, gen_random_uuid())$$,
                'nothing is claimable while the leases run');

-- an expired lease is claimed again as a new attempt
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE task_index = 0;
SELECT results_eq(
    $$SELECT task_index, attempt FROM pgflow.claim_tasks('f', 5, gen_random_uuid())$$,
    $$VALUES (0, 2)$$,
    'a started task whose lease expired is claimed again, as attempt 2'
);
-- out of attempts: failed instead of claimed
UPDATE pgflow.step_tasks SET vt = now() - interval '1 second' WHERE task_index = 0;
SELECT is_empty($$SELECT * FROM pgflow.claim_tasks('f', 5, gen_random_uuid())$$,
                'a task whose lease expired on its last attempt is not claimed');
SELECT is(
    (SELECT (status, error_message LIKE 'lease expired on the last attempt (2):%')::text
     FROM pgflow.step_tasks WHERE task_index = 0),
    '(failed,t)',
    'it is failed, saying the lease expired'
);
SELECT is((SELECT status FROM pgflow.runs), 'failed', 'when_exhausted = fail fails the run');
SELECT is(
    (SELECT string_agg(status, ',' ORDER BY task_index) FROM pgflow.step_tasks),
    'failed,cancelled,cancelled',
    'the run''s other tasks are cancelled'
);

SELECT throws_ok($$SELECT * FROM pgflow.claim_tasks('f', 0, gen_random_uuid())$$, '22023',
    'qty must be >= 1, got 0', 'qty below 1 is rejected');
SELECT throws_ok($$SELECT * FROM pgflow.claim_tasks(NULL, 1, gen_random_uuid())$$, '22004',
    'flow slug must not be NULL', 'a NULL flow slug is rejected');
SELECT is_empty($$SELECT * FROM pgflow.claim_tasks('nothing_here', 1, NULL)$$,
                'an unknown flow has nothing to claim');

SELECT * FROM finish();
ROLLBACK;
