-- grant_dashboard: lets a role run `pgflow ui` (and scrape its /metrics):
-- what grant_client gives, plus the read functions the dashboard's pages
-- need beyond it: dashboard_snapshot (workers, queues, counts) and
-- flow_shape (the DAG pictures).  No table access; cancel is grant_client's,
-- retry_run stays an operator function.  Errors as grant_client's.
CREATE FUNCTION pgflow.grant_dashboard(role_name text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._grant_api('client', role_name);
    PERFORM pgflow._grant_api('dashboard', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION pgflow.flow_shape(text) TO %I', role_name);
END;
$$;

COMMENT ON FUNCTION pgflow.grant_dashboard(text) IS
    'grant a role what pgflow ui needs: grant_client''s functions plus dashboard_snapshot and flow_shape (no table access)';
