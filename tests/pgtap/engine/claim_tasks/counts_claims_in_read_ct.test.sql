BEGIN;
SELECT plan(5);

-- read_ct counts how many times a task was leased, whichever protocol leased
-- it: claim_tasks (one call) or read_with_poll + start_tasks (two calls).
SELECT pgflow.create_flow('f', max_attempts => 3, timeout => 10);
SELECT pgflow.add_step('f', 'only');
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000002');

SELECT is((SELECT count(*) FROM pgflow.claim_tasks('f', 1, gen_random_uuid())), 1::bigint,
          'claim_tasks claims a task');
SELECT is((SELECT read_ct FROM pgflow.step_tasks WHERE status = 'started'), 1,
          'claim_tasks counts the claim in read_ct');

-- the lease expires: the second claim is counted too
UPDATE pgflow.step_tasks SET vt = now() - interval '1 hour' WHERE status = 'started';
SELECT is(
    (SELECT run_id::text FROM pgflow.claim_tasks('f', 1, gen_random_uuid())),
    '00000000-0000-0000-0000-000000000001',
    'the expired lease is claimed again'
);
SELECT is(
    (SELECT (read_ct, attempts_count)::text FROM pgflow.step_tasks
     WHERE run_id = '00000000-0000-0000-0000-000000000001'),
    '(2,2)',
    'a claim after an expired lease counts as a second read and a second attempt'
);

-- the two-call protocol counts the read once (in read_with_poll), not twice
SELECT pgflow.start_tasks('f', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('f', 30, 5)),
                          gen_random_uuid());
SELECT is(
    (SELECT read_ct FROM pgflow.step_tasks
     WHERE run_id = '00000000-0000-0000-0000-000000000002'),
    1,
    'read_with_poll + start_tasks count one read'
);

SELECT * FROM finish();
ROLLBACK;
