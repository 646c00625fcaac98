BEGIN;
SELECT plan(11);

-- m maps over the input with one attempt per task; after it, j
SELECT pgflow.create_flow('f', max_attempts => 1);
SELECT pgflow.add_step('f', 'm', step_type => 'map');
SELECT pgflow.add_step('f', 'j', ARRAY['m']);

CREATE FUNCTION pg_temp.start(idx integer) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgflow.start_tasks('f',
        ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
              WHERE t.step_slug = 'm' AND t.task_index = idx AND t.status = 'queued'),
        '00000000-0000-0000-0000-0000000000a1');
$$;

SELECT pgflow.start_flow('f', '[10, 20, 30, 40]', run_id => '00000000-0000-0000-0000-000000000001');
-- task 0 completes, task 1 fails for good, task 2 was running, task 3 queued
SELECT pg_temp.start(0), pg_temp.start(1), pg_temp.start(2);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'm', 0, '"ten"');
SELECT pgflow.fail_task('00000000-0000-0000-0000-000000000001', 'm', 1, 'boom');
SELECT is(
    ARRAY(SELECT (t.task_index, t.status)::text FROM pgflow.step_tasks AS t ORDER BY t.task_index),
    ARRAY['(0,completed)', '(1,failed)', '(2,cancelled)', '(3,cancelled)'],
    'the map failed with one task completed'
);
CREATE TEMP TABLE task0 AS SELECT * FROM pgflow.step_tasks WHERE task_index = 0;

SELECT is((SELECT status FROM pgflow.retry_run('00000000-0000-0000-0000-000000000001')), 'started',
          'the run is retried');
SELECT is(
    ARRAY(SELECT (t.task_index, t.status, t.attempts_count, t.error_message)::text
          FROM pgflow.step_tasks AS t ORDER BY t.task_index),
    ARRAY['(0,completed,1,)', '(1,queued,1,)', '(2,queued,1,)', '(3,queued,0,)'],
    'only the failed and cancelled tasks are re-queued; attempt numbers go on (fencing)'
);
SELECT results_eq('SELECT * FROM pgflow.step_tasks WHERE task_index = 0', 'SELECT * FROM task0',
    'the completed task is untouched, output included');
SELECT is(
    (SELECT (ss.status, ss.initial_tasks, ss.remaining_tasks)::text FROM pgflow.step_states AS ss
     WHERE ss.step_slug = 'm'),
    '(started,4,3)',
    'the map step waits for the three re-queued tasks'
);
SELECT is(
    ARRAY(SELECT (ta.task_index, ta.status)::text FROM pgflow.task_attempts AS ta ORDER BY 1),
    ARRAY['(1,failed)', '(2,cancelled)', '(3,cancelled)'],
    'the replaced tasks are kept in task_attempts'
);

SELECT is(
    ARRAY(SELECT s.input FROM pgflow.start_tasks('f',
              ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 10) AS m),
              '00000000-0000-0000-0000-0000000000a2') AS s ORDER BY s.task_index),
    ARRAY['20', '30', '40']::jsonb[],
    'the re-queued tasks get their elements again'
);
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'm', 1, '"twenty"');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'm', 3, '"forty"');
SELECT is((SELECT status FROM pgflow.step_states WHERE step_slug = 'm'), 'started',
          'the map waits while a re-queued task runs');
SELECT pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'm', 2, '"thirty"');
SELECT is(
    (SELECT (ss.status, ss.output)::text FROM pgflow.step_states AS ss WHERE ss.step_slug = 'm'),
    '(completed,"[""ten"", ""twenty"", ""thirty"", ""forty""]")',
    'the map completes with the kept and the new outputs in element order'
);
SELECT pgflow.start_tasks('f', ARRAY(SELECT m.msg_id FROM pgflow.read_with_poll('f', 30, 10) AS m),
                          '00000000-0000-0000-0000-0000000000a2');
SELECT ok(pgflow.complete_task('00000000-0000-0000-0000-000000000001', 'j', 0, '"J"'),
          'its dependent runs');
SELECT is((SELECT (status, output)::text FROM pgflow.runs), '(completed,"{""j"": ""J""}")',
          'and the run completes');

SELECT * FROM finish();
ROLLBACK;
