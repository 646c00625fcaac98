BEGIN;
SELECT plan(17);

SELECT pgflow.create_flow('tap_pause');
SELECT pgflow.add_step('tap_pause', 'a');
SELECT pgflow.create_flow('tap_other');
SELECT pgflow.add_step('tap_other', 'a');
SELECT pgflow.start_flow('tap_pause', '{}') FROM generate_series(1, 2);
SELECT pgflow.start_flow('tap_other', '{}');
-- one task started before the pause
SELECT pgflow.claim_tasks('tap_pause', 1, '00000000-0000-0000-0000-00000000000a');

SELECT is(pgflow.pause_flow('tap_pause'), true, 'pause_flow pauses a running flow');
SELECT is(pgflow.pause_flow('tap_pause'), false, 'pausing a paused flow says it already was');
SELECT is((SELECT count(*)::int FROM pgflow.claim_tasks('tap_pause', 10, '00000000-0000-0000-0000-00000000000a')),
          0, 'claim_tasks returns nothing for a paused flow');
SELECT is((SELECT count(*)::int FROM pgflow.read_with_poll('tap_pause', 30, 10)),
          0, 'read_with_poll returns nothing for a paused flow');
SELECT is((SELECT count(*)::int FROM pgflow.start_tasks('tap_pause',
              (SELECT array_agg(t.message_id) FROM pgflow.step_tasks AS t
               WHERE t.flow_slug = 'tap_pause' AND t.status = 'queued'),
              '00000000-0000-0000-0000-00000000000a')),
          0, 'start_tasks starts nothing of a paused flow');
SELECT is((SELECT count(*)::int FROM pgflow.claim_tasks('tap_other', 10, '00000000-0000-0000-0000-00000000000a')),
          1, 'other flows are claimed as before');
SELECT lives_ok($$SELECT pgflow.start_flow('tap_pause', '{}')$$, 'a paused flow still starts runs');
SELECT is((SELECT count(*)::int FROM pgflow.step_tasks WHERE flow_slug = 'tap_pause' AND status = 'queued'),
          2, 'their tasks queue');
SELECT is((SELECT pgflow.complete_task(t.run_id, t.step_slug, t.task_index, '1', t.attempts_count)
           FROM pgflow.step_tasks AS t WHERE t.flow_slug = 'tap_pause' AND t.status = 'started'),
          true, 'a task started before the pause completes');
SELECT is((SELECT count(*)::int FROM pgflow.runs WHERE flow_slug = 'tap_pause' AND status = 'completed'),
          1, 'and its run completes');
SELECT is((SELECT pgflow.get_run(r.run_id) -> 'paused' FROM pgflow.runs AS r
           WHERE r.flow_slug = 'tap_pause' AND r.status = 'started' LIMIT 1),
          'true'::jsonb, 'get_run says the run''s flow is paused');
SELECT is((SELECT jsonb_object_agg(f ->> 'flow_slug', f -> 'paused') FROM pgflow.list_flows() AS f
           WHERE f ->> 'flow_slug' LIKE 'tap_%'),
          '{"tap_pause": true, "tap_other": false}'::jsonb, 'list_flows says which flow is paused');

SELECT is(pgflow.resume_flow('tap_pause'), true, 'resume_flow resumes a paused flow');
SELECT is(pgflow.resume_flow('tap_pause'), false, 'resuming a running flow says it was not paused');
SELECT is((SELECT count(*)::int FROM pgflow.claim_tasks('tap_pause', 10, '00000000-0000-0000-0000-00000000000a')),
          2, 'after resume_flow the queued tasks are claimed');

SELECT throws_ok($$SELECT pgflow.pause_flow('tap_nope')$$, '42704', NULL, 'pausing an unknown flow is refused');
SELECT throws_ok($$SELECT pgflow.resume_flow(NULL)$$, '22004', NULL, 'a NULL slug is refused');

SELECT * FROM finish();
ROLLBACK;
