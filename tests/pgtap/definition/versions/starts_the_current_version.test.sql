BEGIN;
SELECT plan(23);

-- Versions: each is its own definition; start_flow(name) starts the current
-- version (pinned, else the highest); runs keep the version they started on.
SELECT is((pgflow.create_flow('order')).flow_slug, 'order', 'version 1 is the plain slug');
SELECT pgflow.add_step('order', 'a');
SELECT is((SELECT (flow_name, version)::text FROM pgflow.flows WHERE flow_slug = 'order'), '(order,1)',
          'an unversioned flow is version 1 of its name');
SELECT is((pgflow.create_flow('order', version => 2)).flow_slug, 'order@2',
          'version 2 is the definition order@2');
SELECT pgflow.add_step('order@2', 'a');
SELECT pgflow.add_step('order@2', 'b', ARRAY['a']);
SELECT is((pgflow.create_flow('order', version => 2, max_attempts => 7)).opt_max_attempts, 7,
          'a version''s tunables update in place');
SELECT is((pgflow.create_flow('order', version => 1)).flow_slug, 'order',
          'version => 1 names the plain definition');
SELECT throws_ok($$SELECT pgflow.create_flow('order@3')$$, '22023', NULL,
                 'create_flow takes a name: order@3 is refused (pass version => 3)');
SELECT throws_ok($$SELECT pgflow.create_flow('order', version => 0)$$, '22023', NULL,
                 'version 0 is refused');
SELECT throws_ok($$SELECT pgflow.claim_tasks('order@1', 1, gen_random_uuid())$$, '22023', NULL,
                 'order@1 is no slug: version 1 is the plain name');

-- starting by name, by version, by definition slug
CREATE FUNCTION pg_temp.started(r pgflow.runs) RETURNS text LANGUAGE sql AS $$ SELECT r.flow_slug $$;
SELECT is(pg_temp.started(pgflow.start_flow('order', '{}')), 'order@2',
          'the name starts the highest version');
SELECT is(pg_temp.started(pgflow.start_flow('order', '{}', version => 1)), 'order',
          'version => 1 starts version 1');
SELECT is(pg_temp.started(pgflow.start_flow('order@2', '{}')), 'order@2',
          'a definition slug starts that definition');
SELECT throws_ok($$SELECT pgflow.start_flow('order', '{}', version => 5)$$, '42704',
                 'flow "order" has no version 5', 'an unknown version is refused');
SELECT throws_ok($$SELECT pgflow.start_flow('nope', '{}')$$, '42704',
                 'flow "nope" does not exist', 'an unknown flow still is');

-- pinning
SELECT is(pgflow.set_current_version('order', 1), 1, 'set_current_version pins version 1');
SELECT is(pg_temp.started(pgflow.start_flow('order', '{}')), 'order',
          'the name now starts the pinned version');
SELECT is(pgflow.set_current_version('order', NULL), 2, 'NULL unpins: the highest is current again');
SELECT throws_ok($$SELECT pgflow.set_current_version('order', 9)$$, '42704', NULL,
                 'pinning an unknown version is refused');

-- idempotent starts across versions
SELECT pgflow.start_flow('order', '{}', run_id => '00000000-0000-0000-0000-0000000000aa', version => 1);
SELECT is(pg_temp.started(pgflow.start_flow('order', '{}', run_id => '00000000-0000-0000-0000-0000000000aa')),
          'order', 'a run id of any version of the flow returns that run');

-- list_flows, get_run
SELECT is(ARRAY(SELECT (f ->> 'flow_slug') || ':' || (f ->> 'current') FROM pgflow.list_flows() AS f
                WHERE f ->> 'flow_name' = 'order'),
          ARRAY['order:false', 'order@2:true'], 'list_flows marks the current version');
SELECT is((SELECT (d ->> 'version')::int FROM pgflow.get_run(
              (SELECT run_id FROM pgflow.runs WHERE flow_slug = 'order@2' LIMIT 1)) AS d), 2,
          'get_run says which version a run uses');
SELECT is((SELECT count(*)::int FROM pgflow.list_runs('order', max_rows => 100)), 5,
          'list_runs of a name lists the runs of every version');
SELECT is((SELECT count(*)::int FROM pgflow.list_runs('order@2', max_rows => 100)), 2,
          'and of a definition slug, its own');
SELECT is((pgflow.flow_shape('order@2') ->> 'version')::int, 2, 'flow_shape names the version');

SELECT * FROM finish();
ROLLBACK;
