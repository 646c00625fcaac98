BEGIN;
SELECT plan(5);

SELECT pgflow.create_flow('leaf');
SELECT pgflow.add_step('leaf', 'work');
SELECT pgflow.create_flow('mid');
SELECT pgflow.add_subflow_step('mid', 'sub', 'leaf');
SELECT pgflow.create_flow('top');
SELECT pgflow.add_subflow_step('top', 'sub', 'mid');
SELECT pgflow.start_flow('top', '{}', '00000000-0000-7000-8000-000000000001');
SELECT pgflow.start_flow('mid', '{}', '00000000-0000-7000-8000-000000000002');

SELECT is((SELECT count(*)::integer FROM pgflow.runs), 5,
          'two top-level runs (top, mid) and their children (mid, leaf, leaf)');
SELECT throws_ok($$SELECT pgflow.delete_flow('mid', force => true)$$, '2BP01', NULL,
                 'a flow used as a sub-flow is not deleted, even with force');
SELECT is(pgflow.delete_flow('top', force => true), 1::bigint,
          'delete_flow(force) counts the top-level runs it deleted');
SELECT is(ARRAY(SELECT r.run_id FROM pgflow.runs AS r ORDER BY r.depth, r.run_id),
          ARRAY['00000000-0000-7000-8000-000000000002'::uuid,
                pgflow._subflow_child_id('00000000-0000-7000-8000-000000000002', 'sub', 0, 1)],
          'the deleted flow''s runs took their children and grandchildren (of other flows) with them');
SELECT lives_ok($$SELECT pgflow.delete_flow('mid', force => true)$$,
                'once no flow uses it, the sub-flow can be deleted');

SELECT * FROM finish();
ROLLBACK;
