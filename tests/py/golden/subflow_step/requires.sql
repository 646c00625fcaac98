-- The flows the golden migration runs as sub-flows: they must exist first
-- (tests that apply expected.sql apply this file before it).
SELECT pgflow.create_flow(flow_slug => 'ingest');
SELECT pgflow.add_step(flow_slug => 'ingest', step_slug => 'parse');
SELECT pgflow.create_flow(flow_slug => 'report');
SELECT pgflow.create_flow(flow_slug => 'report', version => 2);
SELECT pgflow.add_step(flow_slug => 'report@2', step_slug => 'render');
