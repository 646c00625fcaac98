BEGIN;
SELECT plan(10);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', ARRAY['a']);

SELECT pgflow.start_flow('f', '{"old": true}', run_id => '00000000-0000-0000-0000-000000000001');
UPDATE pgflow.runs SET priority = 3 WHERE run_id = '00000000-0000-0000-0000-000000000001';

CREATE TEMP TABLE got AS
SELECT row_number() OVER () AS ord, r.*
FROM pgflow.start_flows('f', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[],
                        ARRAY['00000000-0000-0000-0000-000000000001', NULL,
                              '00000000-0000-0000-0000-000000000002',
                              '00000000-0000-0000-0000-000000000002']::uuid[]) AS r;

SELECT is((SELECT count(*)::integer FROM got), 4, 'one row per input');
SELECT is((SELECT (input, priority)::text FROM got WHERE ord = 1), '("{""old"": true}",3)',
          'an existing run of the flow is returned unchanged');
SELECT ok((SELECT run_id IS NOT NULL AND run_id <> '00000000-0000-0000-0000-000000000001'
           AND run_id <> '00000000-0000-0000-0000-000000000002' FROM got WHERE ord = 2),
          'a NULL id gets a new one');
SELECT is((SELECT array_agg(run_id::text ORDER BY ord) FROM got WHERE ord >= 3),
          ARRAY['00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000002'],
          'an id given twice names one run, returned for both positions');
SELECT is((SELECT input FROM pgflow.runs WHERE run_id = '00000000-0000-0000-0000-000000000002'),
          '{"n": 3}'::jsonb, 'started with the first of its inputs');
SELECT is((SELECT count(*)::integer FROM pgflow.runs), 3, 'three runs in all');
SELECT is((SELECT count(*)::integer FROM pgflow.step_states), 6, 'each with its two step states');
SELECT is((SELECT count(*)::integer FROM pgflow.step_tasks), 3, 'and one root task');

-- again: nothing new
SELECT is((SELECT array_agg(r.run_id::text) FROM pgflow.start_flows(
               'f', ARRAY['{}', '{}']::jsonb[],
               ARRAY['00000000-0000-0000-0000-000000000002',
                     '00000000-0000-0000-0000-000000000001']::uuid[]) AS r),
          ARRAY['00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001'],
          'a batch of known ids returns their runs');
SELECT is((SELECT (count(*), sum(remaining_steps))::text FROM pgflow.runs), '(3,6)',
          'and starts nothing');

SELECT * FROM finish();
ROLLBACK;
