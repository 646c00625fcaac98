-- delete_flow: removes a flow definition (its steps and dependencies); one
-- version of a versioned flow is named by its slug (order@2): delete a
-- drained version once its workers are gone.
-- While runs of the flow exist it refuses, unless force => true, which
-- deletes the runs too (running ones included: their workers' late
-- completions change nothing) with every row of them.  Returns how many runs
-- it deleted.  Owner-only (an operator action): not granted to any role.
-- A start_flow racing the deletion waits for it, then fails on the foreign
-- key (23503): no run is ever left without its definition.
-- Locks: the flows row (FOR UPDATE: blocks new runs of the flow), the runs
-- rows and through the cascade everything of them, the steps and deps rows.
-- Errors: 22004 NULL argument; 22023 invalid slug; 42704 unknown flow;
-- 55000 runs exist and force is false; 2BP01 a step of another flow runs
-- it as a sub-flow.
CREATE FUNCTION pgflow.delete_flow(flow_slug text, force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_runs bigint;
    v_parent_flow text;
    v_parent_step text;
BEGIN
    PERFORM pgflow._check_slug('flow slug', delete_flow.flow_slug);
    IF delete_flow.force IS NULL THEN
        RAISE EXCEPTION 'force must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass force => true to delete the flow''s runs too, or leave it out';
    END IF;

    PERFORM 1 FROM pgflow.flows AS f WHERE f.flow_slug = delete_flow.flow_slug FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow "%" does not exist', delete_flow.flow_slug
            USING ERRCODE = 'undefined_object',
                  HINT = 'check the slug: pgflow.flows lists the flows';
    END IF;

    SELECT sf.flow_slug, sf.step_slug INTO v_parent_flow, v_parent_step
    FROM pgflow.step_subflows AS sf
    WHERE sf.subflow = delete_flow.flow_slug
    ORDER BY sf.flow_slug, sf.step_slug
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'flow "%" is used as a sub-flow by step "%" of flow "%"',
                delete_flow.flow_slug, v_parent_step, v_parent_flow
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('delete flow "%s" first (or every flow using "%s")',
                                v_parent_flow, delete_flow.flow_slug);
    END IF;

    IF NOT delete_flow.force THEN
        IF EXISTS (SELECT 1 FROM pgflow.runs AS r WHERE r.flow_slug = delete_flow.flow_slug) THEN
            RAISE EXCEPTION 'flow "%" has runs', delete_flow.flow_slug
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'prune them first with pgflow.prune_runs(), or pass force => true to delete them with the flow';
        END IF;
        v_runs := 0;
    ELSE
        DELETE FROM pgflow.runs AS r WHERE r.flow_slug = delete_flow.flow_slug;
        GET DIAGNOSTICS v_runs = ROW_COUNT;
    END IF;

    -- steps and deps go with the flow (ON DELETE CASCADE)
    DELETE FROM pgflow.flows AS f WHERE f.flow_slug = delete_flow.flow_slug;
    RETURN v_runs;
END;
$$;

COMMENT ON FUNCTION pgflow.delete_flow(text, boolean) IS
    'delete a flow definition; with force => true also its runs (refused otherwise while runs exist)';
