-- pgflow schema: created by CREATE EXTENSION (schema = pgflow in the control
-- file).  Nothing in it is usable by PUBLIC: see 900_privileges.sql and
-- pgflow.grant_worker() / pgflow.grant_client().

COMMENT ON SCHEMA pgflow IS 'pgflow: durable DAG workflows (definitions, runs, task queue)';
