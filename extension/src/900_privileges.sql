-- Privileges start from deny: CREATE FUNCTION grants EXECUTE to PUBLIC, so
-- take it back from every function of the extension.  Roles get exactly what
-- they need through pgflow.grant_worker() / pgflow.grant_client(); tables are
-- readable only by their owner unless granted.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgflow FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgflow FROM PUBLIC;
REVOKE ALL ON SCHEMA pgflow FROM PUBLIC;
