BEGIN;
SELECT plan(9);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', ARRAY['a']);

SELECT pgflow.start_flow('f', '{"first": true}', run_id => '00000000-0000-0000-0000-000000000001');

SELECT is(
    (SELECT (r.run_id, r.status, r.input, r.remaining_steps)::text
     FROM pgflow.start_flow('f', '{"second": true}', run_id => '00000000-0000-0000-0000-000000000001') AS r),
    '(00000000-0000-0000-0000-000000000001,started,"{""first"": true}",2)',
    'starting an existing run again returns it unchanged (the new input is ignored)'
);
SELECT is((SELECT count(*) FROM pgflow.runs), 1::bigint, 'no second run is created');
SELECT is((SELECT count(*) FROM pgflow.step_states), 2::bigint, 'no step state is added');
SELECT is((SELECT count(*) FROM pgflow.step_tasks), 1::bigint, 'no task is queued again');

-- the run moves on; a late duplicate start must not rewind it
SELECT pgflow.start_tasks('f', ARRAY(SELECT message_id FROM pgflow.step_tasks), gen_random_uuid());
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'a', 0, '"A"');
SELECT is(
    (SELECT (r.status, r.remaining_steps)::text
     FROM pgflow.start_flow('f', '{"first": true}', run_id => '00000000-0000-0000-0000-000000000001') AS r),
    '(started,1)',
    'a duplicate start of a run in progress returns its current state'
);
SELECT results_eq(
    $$SELECT step_slug, status FROM pgflow.step_tasks ORDER BY step_slug$$,
    $$VALUES ('a', 'completed'), ('b', 'queued')$$,
    'the duplicate start re-queues nothing'
);

SELECT pgflow.start_tasks('f', ARRAY(SELECT message_id FROM pgflow.step_tasks WHERE step_slug = 'b'),
                          gen_random_uuid());
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'b', 0, '"B"');
SELECT is(
    (SELECT (r.status, r.output)::text
     FROM pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001') AS r),
    '(completed,"{""b"": ""B""}")',
    'a duplicate start of a completed run returns it completed'
);
SELECT is((SELECT count(*) FROM pgflow.step_tasks), 2::bigint, 'and queues nothing');
SELECT is(
    (SELECT r.status FROM pgflow.runs AS r),
    'completed',
    'the run stays completed'
);

SELECT * FROM finish();
ROLLBACK;
