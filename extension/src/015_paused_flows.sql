-- Pause and resume: a paused flow's tasks are not claimed (read_with_poll,
-- claim_tasks and start_tasks return nothing for it); start_flow still
-- queues runs, and tasks already started finish and report normally.
-- A row here is a flow's pause (definition data: dumped with pg_dump).
CREATE TABLE pgflow.paused_flows (
    flow_slug text        NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text        NOT NULL DEFAULT session_user,
    CONSTRAINT paused_flows_pkey PRIMARY KEY (flow_slug),
    CONSTRAINT paused_flows_flow_slug_fkey FOREIGN KEY (flow_slug)
        REFERENCES pgflow.flows (flow_slug) ON DELETE CASCADE
);

COMMENT ON TABLE pgflow.paused_flows IS
    'flows whose tasks are not claimed until resume_flow (pause_flow adds the row)';

SELECT pg_catalog.pg_extension_config_dump('pgflow.paused_flows', '');

-- pause_flow: stops claims of the flow's tasks until resume_flow.  Runs
-- still start (their tasks queue); tasks already started finish and report.
-- A claim that began before the pause committed may still return tasks
-- (the pause does not wait for claims in flight).  Pausing a paused flow
-- keeps its first paused_at.  Returns true when the flow was not paused.
-- Owner only; it runs as its caller (like retry_run), so an operator role
-- needs EXECUTE on it (and resume_flow), SELECT on pgflow.flows and INSERT,
-- DELETE on pgflow.paused_flows.
-- Locks: the flow's row FOR SHARE (a concurrent delete_flow waits).
-- Errors: 22004 NULL slug; 22023 invalid slug; 42704 unknown flow.
CREATE FUNCTION pgflow.pause_flow(flow_slug text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_new boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', pause_flow.flow_slug);
    PERFORM 1 FROM pgflow.flows AS f WHERE f.flow_slug = pause_flow.flow_slug FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', pause_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'pgflow.list_flows() lists the flows';
    END IF;
    INSERT INTO pgflow.paused_flows (flow_slug)
    VALUES (pause_flow.flow_slug)
    ON CONFLICT ON CONSTRAINT paused_flows_pkey DO NOTHING;
    GET DIAGNOSTICS v_new = ROW_COUNT;
    RETURN v_new;
END;
$$;

COMMENT ON FUNCTION pgflow.pause_flow(text) IS
    'stop claims of a flow''s tasks until resume_flow (starts still queue); true when it was not paused';

-- resume_flow: lets claims take the flow's tasks again.  Tasks leased by
-- read_with_poll but refused by start_tasks during the pause are claimable
-- again when their lease (vt) has passed.  Returns true when it was paused.
-- Locks: the pause row.
-- Errors: 22004 NULL slug; 22023 invalid slug; 42704 unknown flow.
CREATE FUNCTION pgflow.resume_flow(flow_slug text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgflow._check_slug('flow slug', resume_flow.flow_slug);
    IF NOT EXISTS (SELECT 1 FROM pgflow.flows AS f WHERE f.flow_slug = resume_flow.flow_slug) THEN
        RAISE EXCEPTION 'flow "%" does not exist', resume_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'pgflow.list_flows() lists the flows';
    END IF;
    DELETE FROM pgflow.paused_flows AS p WHERE p.flow_slug = resume_flow.flow_slug;
    GET DIAGNOSTICS v_was = ROW_COUNT;
    IF v_was THEN
        -- idle workers wait for a NOTIFY: tell them the tasks are claimable
        PERFORM pgflow._wake_workers(resume_flow.flow_slug);
    END IF;
    RETURN v_was;
END;
$$;

COMMENT ON FUNCTION pgflow.resume_flow(text) IS
    'let claims take a paused flow''s tasks again; true when it was paused';
