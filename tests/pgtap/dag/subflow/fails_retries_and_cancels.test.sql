BEGIN;
SELECT plan(19);

SELECT pgflow.create_flow('child', max_attempts => 1);
SELECT pgflow.add_step('child', 'work');
SELECT pgflow.create_flow('parent');
SELECT pgflow.add_subflow_step('parent', 'sub', 'child', max_attempts => 2);

CREATE FUNCTION pg_temp.child_of(p uuid, attempt integer) RETURNS uuid LANGUAGE sql AS
$$ SELECT pgflow._subflow_child_id(p, 'sub', 0, attempt) $$;
-- (everything here is one transaction: the children are made to look started
-- by an earlier one, as they are for real; a child failing in the very
-- transaction that started it is not retried)
CREATE FUNCTION pg_temp.fail_children() RETURNS integer LANGUAGE sql AS $$
    UPDATE pgflow.runs SET started_at = now() - interval '1 second'
    WHERE flow_slug = 'child' AND started_at = now();
    SELECT count(pgflow.fail_task(t.run_id, t.step_slug, t.task_index, 'boom', t.attempt))::integer
    FROM pgflow.claim_tasks('child', 100, gen_random_uuid()) AS t $$;

-- a failed child fails the attempt; the next attempt is a new child run
SELECT pgflow.start_flow('parent', '{}', '00000000-0000-7000-8000-000000000001');
SELECT pg_temp.fail_children();
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = pg_temp.child_of('00000000-0000-7000-8000-000000000001', 1)),
          'failed', 'the first child failed');
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = pg_temp.child_of('00000000-0000-7000-8000-000000000001', 2)),
          'started', 'a retry attempt of the parent task starts a new child run');
SELECT is((SELECT t.attempts_count FROM pgflow.step_tasks AS t
           WHERE t.run_id = '00000000-0000-7000-8000-000000000001' AND t.step_slug = 'sub'),
          2, 'the parent task is in its second attempt');
SELECT pg_temp.fail_children();
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000001'),
          'failed', 'out of attempts, when_exhausted = fail fails the parent run');
SELECT matches((SELECT r.error_message FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000001'),
               '^step "sub" failed: sub-flow run .* \(child\) failed: step "work" failed: boom$',
               'the parent''s error names the child run and its error');

-- retry_run of the failed parent: a new child for the failed task
SELECT pgflow.retry_run('00000000-0000-7000-8000-000000000001');
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = pg_temp.child_of('00000000-0000-7000-8000-000000000001', 3)),
          'started', 'retry_run starts a new child run for the failed sub-flow task');
SELECT is((SELECT count(*)::integer FROM pgflow.claim_tasks('parent', 10, gen_random_uuid())), 0,
          'the retried sub-flow task is still not claimable');
SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, '1', t.attempt)
FROM pgflow.claim_tasks('child', 10, gen_random_uuid()) AS t;
SELECT is((SELECT r.status || ' ' || r.output::text FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000001'),
          'completed {"sub": {"work": 1}}', 'the retried parent completes with the new child''s output');

-- a child cancelled by itself fails its parent task at once (no retry)
SELECT pgflow.start_flow('parent', '{}', '00000000-0000-7000-8000-000000000002');
SELECT pgflow.cancel_run(pg_temp.child_of('00000000-0000-7000-8000-000000000002', 1));
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000002'),
          'failed', 'a cancelled child fails its parent task without a retry');
SELECT matches((SELECT r.error_message FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000002'),
               'was cancelled$', 'the parent''s error says the child was cancelled');

-- cancel_run of a parent cancels its running children, and theirs
SELECT pgflow.create_flow('top');
SELECT pgflow.add_subflow_step('top', 'mid', 'parent');
SELECT pgflow.start_flow('top', '{}', '00000000-0000-7000-8000-000000000003');
SELECT is((SELECT count(*)::integer FROM pgflow.runs AS r WHERE r.depth = 2 AND r.status = 'started'), 1,
          'a grandchild run runs two sub-flows deep');
SELECT pgflow.cancel_run('00000000-0000-7000-8000-000000000003');
SELECT is(ARRAY(SELECT r.status FROM pgflow.runs AS r
                WHERE r.run_id = '00000000-0000-7000-8000-000000000003'
                   OR r.parent_run_id = '00000000-0000-7000-8000-000000000003'
                   OR r.parent_run_id IN (SELECT c.run_id FROM pgflow.runs AS c
                                          WHERE c.parent_run_id = '00000000-0000-7000-8000-000000000003')
                ORDER BY r.depth),
          ARRAY['cancelled', 'cancelled', 'cancelled'], 'cancel_run cancels the children recursively');
SELECT is((SELECT count(*)::integer FROM pgflow.claim_tasks('child', 10, gen_random_uuid())), 0,
          'nothing of the cancelled tree is claimable');

-- prune_runs never prunes a child alone and takes children with the parent
UPDATE pgflow.runs SET started_at = started_at - interval '2 days',
                       cancelled_at = cancelled_at - interval '1 day',
                       failed_at = failed_at - interval '1 day',
                       completed_at = completed_at - interval '1 day';
UPDATE pgflow.runs SET status = 'started', cancelled_at = NULL
WHERE run_id = '00000000-0000-7000-8000-000000000003';
SELECT pgflow.prune_runs(interval '1 hour');
SELECT is((SELECT count(*)::integer FROM pgflow.runs AS r WHERE r.depth > 0 AND r.flow_slug = 'parent'), 1,
          'the finished child of a kept (running) parent is kept');
SELECT is((SELECT count(*)::integer FROM pgflow.runs AS r
           WHERE r.parent_run_id IN ('00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-000000000002')),
          0, 'children go with their pruned parents');
SELECT is((SELECT count(*)::integer FROM pgflow.runs AS c
           WHERE c.parent_run_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM pgflow.runs AS p WHERE p.run_id = c.parent_run_id)),
          0, 'no child is left without its parent');

-- the depth limit
SELECT pgflow.create_flow('d' || i) FROM generate_series(0, 9) AS i;
SELECT pgflow.add_step('d9', 'leaf');
SELECT pgflow.add_subflow_step('d' || i, 's', 'd' || (i + 1)) FROM generate_series(8, 0, -1) AS i;
SELECT pgflow.start_flow('d0', '{}', '00000000-0000-7000-8000-000000000004');
SELECT is((SELECT max(r.depth) FROM pgflow.runs AS r WHERE r.flow_slug LIKE 'd%'), 8,
          'no run is more than 8 sub-flows deep');
SELECT is((SELECT r.status FROM pgflow.runs AS r WHERE r.run_id = '00000000-0000-7000-8000-000000000004'),
          'failed', 'a sub-flow past the depth limit fails its task, and so the chain');
SELECT matches((SELECT r.error_message FROM pgflow.runs AS r WHERE r.flow_slug = 'd8'),
               'not started: run .* is already 8 sub-flows deep \(the limit\)$',
               'the deepest run says why');

SELECT * FROM finish();
ROLLBACK;
