BEGIN;
SELECT plan(5);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.create_flow('f', version => 2);
SELECT pgflow.add_step('f@2', 'a');
SELECT pgflow.add_step('f@2', 'b');

SELECT is((SELECT array_agg(DISTINCT r.flow_slug) FROM pgflow.start_flows('f', ARRAY['{}', '{}']::jsonb[]) AS r),
          ARRAY['f@2'], 'a flow name starts its current version');
SELECT is((SELECT array_agg(DISTINCT r.flow_slug)
           FROM pgflow.start_flows('f', ARRAY['{}']::jsonb[], version => 1) AS r),
          ARRAY['f'], 'version picks one');
SELECT ok(NOT (SELECT prioritized FROM pgflow.flows WHERE flow_slug = 'f@2'),
          'runs of priority 0 leave the flow unprioritized');
CREATE TEMP TABLE urgent AS
SELECT r.run_id FROM pgflow.start_flows('f', ARRAY['{}', '{}']::jsonb[], priority => 5) AS r;
SELECT is((SELECT array_agg(t.priority) FROM urgent AS u JOIN pgflow.step_tasks AS t USING (run_id)),
          ARRAY[5, 5, 5, 5], 'priority goes to every run''s tasks');
SELECT ok((SELECT prioritized FROM pgflow.flows WHERE flow_slug = 'f@2'),
          'and marks the flow prioritized');

SELECT * FROM finish();
ROLLBACK;
