BEGIN;
SELECT plan(4);

SELECT pgflow.create_flow('empty');

SELECT is(
    (SELECT (r.status, r.remaining_steps, r.output, r.input)::text
     FROM pgflow.start_flow('empty', '{"x": 1}') AS r),
    '(completed,0,{},"{""x"": 1}")',
    'a flow without steps completes at once with output {}'
);
SELECT is(
    (SELECT (r.completed_at = now(), r.failed_at)::text FROM pgflow.runs AS r),
    '(t,)',
    'its run is completed now'
);
SELECT is((SELECT count(*) FROM pgflow.step_states), 0::bigint, 'it has no step state');
SELECT is((SELECT count(*) FROM pgflow.step_tasks), 0::bigint, 'it queues no task');

SELECT * FROM finish();
ROLLBACK;
