BEGIN;
SELECT plan(14);

SELECT pgflow.create_flow('idle');
SELECT pgflow.add_step('idle', 'a');
SELECT pgflow.add_step('idle', 'b', ARRAY['a']);
SELECT pgflow.create_flow('busy', max_attempts => 1);
SELECT pgflow.add_step('busy', 'a');
SELECT pgflow.add_step('busy', 'b', ARRAY['a']);
SELECT pgflow.create_flow('other');
SELECT pgflow.add_step('other', 'a');

SELECT pgflow.start_flow('busy', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('busy', '{}', run_id => '00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_tasks('busy', ARRAY(SELECT message_id FROM pgflow.step_tasks
                                        WHERE run_id = '00000000-0000-0000-0000-000000000002'), NULL);
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000002', 'a', 0, 'boom');
SELECT pgflow.retry_run('00000000-0000-0000-0000-000000000002');
SELECT pgflow.start_flow('other', '{}', run_id => '00000000-0000-0000-0000-000000000003');

-- a flow without runs
SELECT is(pgflow.delete_flow('idle'), 0::bigint, 'a flow without runs is deleted (no runs deleted)');
SELECT is_empty($$SELECT 1 FROM pgflow.flows WHERE flow_slug = 'idle'
                  UNION ALL SELECT 1 FROM pgflow.steps WHERE flow_slug = 'idle'
                  UNION ALL SELECT 1 FROM pgflow.deps WHERE flow_slug = 'idle'$$,
    'with its steps and dependencies');
SELECT lives_ok($$SELECT pgflow.create_flow('idle')$$, 'its slug can be used again');

-- a flow with runs
SELECT throws_ok($$SELECT pgflow.delete_flow('busy')$$,
    '55000', 'flow "busy" has runs', 'a flow with runs is not deleted without force');
SELECT is((SELECT count(*) FROM pgflow.steps WHERE flow_slug = 'busy'), 2::bigint,
          'and stays as it was');
SELECT is(pgflow.delete_flow('busy', force => true), 2::bigint,
          'with force it is deleted with its runs, returning how many');
SELECT is_empty($$SELECT 1 FROM pgflow.flows WHERE flow_slug = 'busy'
                  UNION ALL SELECT 1 FROM pgflow.steps WHERE flow_slug = 'busy'
                  UNION ALL SELECT 1 FROM pgflow.deps WHERE flow_slug = 'busy'
                  UNION ALL SELECT 1 FROM pgflow.runs WHERE flow_slug = 'busy'
                  UNION ALL SELECT 1 FROM pgflow.step_states WHERE flow_slug = 'busy'
                  UNION ALL SELECT 1 FROM pgflow.step_tasks WHERE flow_slug = 'busy'
                  UNION ALL SELECT 1 FROM pgflow.run_retries WHERE flow_slug = 'busy'
                  UNION ALL SELECT 1 FROM pgflow.task_attempts WHERE flow_slug = 'busy'$$,
    'nothing of the flow or its runs is left');
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000002', 'a', 0, '1'), false,
          'a late completion of a deleted run changes nothing');
SELECT is(
    (SELECT (count(*), min(status))::text FROM pgflow.runs), '(1,started)',
    'the other flow''s run is untouched'
);
SELECT is((SELECT count(*) FROM pgflow.step_tasks), 1::bigint, 'and so are its tasks');
SELECT is(pgflow.delete_flow('idle', force => true), 0::bigint, 'force on a flow without runs is fine');

-- errors
SELECT throws_ok($$SELECT pgflow.delete_flow('nope')$$,
    '42704', 'flow "nope" does not exist', 'an unknown flow is an error');
SELECT throws_ok($$SELECT pgflow.delete_flow('1x')$$,
    '22023', 'invalid flow slug "1x": it must start with a letter', 'an invalid slug is refused');
SELECT throws_ok($$SELECT pgflow.delete_flow(NULL)$$,
    '22004', 'flow slug must not be NULL', 'a NULL slug is refused');

SELECT * FROM finish();
ROLLBACK;
