BEGIN;
SELECT plan(8);

-- A drained version goes with delete_flow('<name>@N'); the other versions
-- and their runs stay, and a pin on the deleted version goes with it.
SELECT pgflow.create_flow('order');
SELECT pgflow.add_step('order', 'a');
SELECT pgflow.create_flow('order', version => 2);
SELECT pgflow.add_step('order@2', 'a');
SELECT pgflow.create_flow('order', version => 3);
SELECT pgflow.add_step('order@3', 'a');
SELECT pgflow.set_current_version('order', 2);

SELECT pgflow.start_flow('order', '{}', version => 1);
SELECT pgflow.start_flow('order', '{}');

SELECT throws_ok($$SELECT pgflow.delete_flow('order@2')$$, '55000', 'flow "order@2" has runs',
                 'a version with runs is not deleted');
SELECT is((SELECT (l ->> 'drained')::boolean FROM pgflow.list_flows() AS l
            WHERE l ->> 'flow_slug' = 'order@3'), true,
          'list_flows calls a version without runs drained');
SELECT is(pgflow.delete_flow('order@3'), 0::bigint, 'a drained version is deleted');
SELECT is((SELECT array_agg(version ORDER BY version) FROM pgflow.flows WHERE flow_name = 'order'),
          ARRAY[1, 2], 'versions 1 and 2 stay');
SELECT is(pgflow.delete_flow('order@2', force => true), 1::bigint,
          'force deletes the pinned version with its run');
SELECT is((SELECT count(*) FROM pgflow.current_versions WHERE flow_name = 'order'), 0::bigint,
          'the pin goes with the version it named');
SELECT is((pgflow.start_flow('order', '{}')).flow_slug, 'order',
          'the name then starts the highest version left');
SELECT is((SELECT count(*) FROM pgflow.runs WHERE flow_slug = 'order'), 2::bigint,
          'the runs of version 1 are untouched');

SELECT * FROM finish();
ROLLBACK;
