BEGIN;
SELECT plan(10);

SELECT pgflow.create_flow('rootmap');
SELECT pgflow.add_step('rootmap', 'other');
SELECT pgflow.add_step('rootmap', 'm', step_type => 'map');
SELECT pgflow.create_flow('depmap');
SELECT pgflow.add_step('depmap', 'a');
SELECT pgflow.add_step('depmap', 'm', ARRAY['a'], step_type => 'map');

-- a root map over an object
SELECT is(
    (SELECT r.status FROM pgflow.start_flow('rootmap', '{"items": [1]}',
                                            run_id => '00000000-0000-0000-0000-000000000001') AS r),
    'failed',
    'a root map over a non-array flow input fails the run in start_flow'
);
SELECT is(
    (SELECT (r.error_message, r.failed_at = now())::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000001'),
    '("step ""m"" failed: map step ""m"" needs an array as input, got object",t)',
    'the error names the step and the JSON type it got'
);
SELECT is(
    (SELECT (ss.status, ss.failed_at = now(), ss.error_message)::text FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000001' AND ss.step_slug = 'm'),
    '(failed,t,"map step ""m"" needs an array as input, got object")',
    'the map step is failed'
);
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks WHERE run_id = '00000000-0000-0000-0000-000000000001'
                                              AND status IN ('queued', 'started')),
    0::bigint,
    'no task of the failed run stays open (the other root''s task is cancelled)'
);
SELECT is(
    (SELECT r.error_message FROM pgflow.start_flow('rootmap', '"text"',
                                                   run_id => '00000000-0000-0000-0000-000000000002') AS r),
    'step "m" failed: map step "m" needs an array as input, got string',
    'a string input is named as such'
);
SELECT is(
    (SELECT r.error_message FROM pgflow.start_flow('rootmap', 'null',
                                                   run_id => '00000000-0000-0000-0000-000000000003') AS r),
    'step "m" failed: map step "m" needs an array as input, got null',
    'a JSON null input is named as such'
);

-- a dependent map over a number
SELECT pgflow.start_flow('depmap', '{}', run_id => '00000000-0000-0000-0000-000000000004');
SELECT pgflow.start_tasks('depmap', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('depmap', 30, 10)),
                          gen_random_uuid());
SELECT is(pgflow.complete_task('00000000-0000-0000-0000-000000000004', 'a', 0, '42'), true,
          'the source step completes with a number');
SELECT is(
    (SELECT (r.status, r.error_message)::text FROM pgflow.runs AS r
     WHERE r.run_id = '00000000-0000-0000-0000-000000000004'),
    '(failed,"step ""m"" failed: map step ""m"" needs an array as input, got number")',
    'a map over a non-array dependency output fails the run, naming the step and the type'
);
SELECT is(
    (SELECT string_agg(ss.step_slug || '=' || ss.status, ',' ORDER BY ss.step_slug) FROM pgflow.step_states AS ss
     WHERE ss.run_id = '00000000-0000-0000-0000-000000000004'),
    'a=completed,m=failed',
    'the source stays completed and the map step is failed'
);
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks WHERE run_id = '00000000-0000-0000-0000-000000000004'
                                              AND step_slug = 'm'),
    0::bigint,
    'the failed map step gets no task'
);

SELECT * FROM finish();
ROLLBACK;
