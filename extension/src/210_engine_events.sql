-- Notifications.  NOTIFY is not free: a transaction that notifies takes a
-- cluster-wide lock from pre-commit until its commit is flushed, so notifying
-- commits serialise.  Identical notifications within a transaction are
-- collapsed by PostgreSQL, so each transaction sends at most one wake-up per
-- flow and one event per (event, run, step).

-- _waiting_key: the advisory-lock key (two int4s) by which workers waiting
-- for tasks of a flow make themselves known: classid 0x70676677 ("pgfw"),
-- objid from the md5 of the flow slug (stable across PostgreSQL versions; a
-- collision only costs an unneeded wake-up).
-- (PL/pgSQL, as every small function on the hot path here: a SQL function
-- with a SET clause is never inlined and is planned anew on every call.)
CREATE FUNCTION pgflow._waiting_key(flow_slug text)
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ('x' || left(md5(_waiting_key.flow_slug), 8))::bit(32)::integer;
END;
$$;

COMMENT ON FUNCTION pgflow._waiting_key(text) IS
    'advisory lock objid under which idle workers of a flow wait (classid 1885824631)';

-- _wake_workers: tells LISTENing workers that tasks of a flow are claimable now
-- (channel pgflow_tasks, payload = flow slug), but only when a worker waits:
-- idle workers hold a shared advisory lock on the flow's key (see
-- worker_idle), so a free exclusive try-lock means no other session waits
-- and the NOTIFY (and the commit serialisation it brings) is skipped.  The
-- session's own mark does not count (its own locks never conflict with its
-- try-lock): a worker that marks itself idle, claims and reports on one
-- connection is not waiting while it reports, and finds the work its own
-- report queued by claiming again.  Busy workers find the work on their next
-- claim.
-- Locks: the flow's advisory key for an instant (try, then released).
CREATE FUNCTION pgflow._wake_workers(flow_slug text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key integer := pgflow._waiting_key(flow_slug);
BEGIN
    IF pg_try_advisory_lock(1885824631, v_key) THEN
        PERFORM pg_advisory_unlock(1885824631, v_key);
    ELSE
        PERFORM pg_notify('pgflow_tasks', flow_slug);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._wake_workers(text) IS
    'NOTIFY pgflow_tasks with the flow slug if a worker waits (at most once per transaction)';

-- worker_idle: a worker says it is about to wait for NOTIFY pgflow_tasks
-- (idle => true) or is busy again (idle => false), for each of its flows.
-- Call it on the connection that LISTENs: the marks are session advisory
-- locks, released by idle => false or when the session ends.  Producers only
-- send wake-ups while some worker is marked idle, so NOTIFY costs nothing
-- under load.  Protocol: mark idle, claim once more, then wait (with a
-- fallback poll: a wake-up can be missed if work is committed while the
-- worker is marking itself idle).
-- Locks: shared session advisory locks (1885824631, _waiting_key(flow)).
-- Errors: 22004 NULL argument.
CREATE FUNCTION pgflow.worker_idle(flow_slugs text[], idle boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flow text;
    v_held boolean;
BEGIN
    IF flow_slugs IS NULL OR idle IS NULL THEN
        RAISE EXCEPTION 'flow_slugs and idle must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the flows the worker serves, e.g. ARRAY[''my_flow'']';
    END IF;
    FOR v_flow, v_held IN
        SELECT f, EXISTS (
                   SELECT 1 FROM pg_locks AS l
                   WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()
                     AND l.classid = 1885824631
                     AND l.objid = pgflow._waiting_key(f)::bigint::bit(32)::bigint::oid
                     AND l.objsubid = 2)
        FROM (SELECT DISTINCT f FROM unnest(flow_slugs) AS f) AS d
    LOOP
        -- session advisory locks stack: take or release each mark only once
        IF idle AND NOT v_held THEN
            PERFORM pg_advisory_lock_shared(1885824631, pgflow._waiting_key(v_flow));
        ELSIF NOT idle AND v_held THEN
            PERFORM pg_advisory_unlock_shared(1885824631, pgflow._waiting_key(v_flow));
        END IF;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION pgflow.worker_idle(text[], boolean) IS
    'mark this session as waiting (or no longer) for NOTIFY pgflow_tasks of these flows';

-- _events_wanted: whether events are to be sent: while some session
-- subscribes (listen_events holds a shared advisory lock on (1885824632, 0))
-- or this session LISTENs on pgflow_events itself.  An event nobody waits
-- for would still serialise the commit.
-- Locks: the events advisory key for an instant (try, then released).
CREATE FUNCTION pgflow._events_wanted()
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_try_advisory_lock(1885824632, 0) THEN
        PERFORM pg_advisory_unlock(1885824632, 0);
        RETURN 'pgflow_events' = ANY (ARRAY(SELECT pg_listening_channels()));
    END IF;
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgflow._events_wanted() IS
    'whether a session subscribes to pgflow_events (listen_events) or this one LISTENs on it';

-- _emit: announces a run or step event on channel pgflow_events as a small
-- JSON object (ids and status, never outputs: NOTIFY payloads are < 8 kB;
-- "parent_run_id" for the events of a child run),
-- but only while _events_wanted says someone waits for it.
-- Locks: as _events_wanted.
CREATE FUNCTION pgflow._emit(event text, flow_slug text, run_id uuid, step_slug text, status text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgflow._events_wanted() THEN
        RETURN;
    END IF;
    PERFORM pg_notify('pgflow_events', jsonb_strip_nulls(
        jsonb_build_object(
            'event', event, 'flow_slug', flow_slug, 'run_id', run_id,
            'step_slug', step_slug, 'status', status,
            -- a child run's events name its parent run
            'parent_run_id', (SELECT r.parent_run_id FROM pgflow.runs AS r
                              WHERE r.run_id = _emit.run_id)))::text);
END;
$$;

COMMENT ON FUNCTION pgflow._emit(text, text, uuid, text, text) IS
    'NOTIFY pgflow_events with {"event", "flow_slug", "run_id", "step_slug"?, "status"} if subscribed';

-- listen_events: subscribes this session to the events on channel
-- pgflow_events (listening => true) or ends the subscription.  Events are
-- only sent while some session subscribes, so a client does both:
--     LISTEN pgflow_events; SELECT pgflow.listen_events();
-- The subscription is a shared session advisory lock on (1885824632, 0),
-- released by listening => false or when the session ends.
-- Errors: 22004 NULL argument.
CREATE FUNCTION pgflow.listen_events(listening boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_held boolean;
BEGIN
    IF listening IS NULL THEN
        RAISE EXCEPTION 'listening must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass true or false';
    END IF;
    SELECT EXISTS (
        SELECT 1 FROM pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()
          AND l.classid = 1885824632 AND l.objid = 0 AND l.objsubid = 2)
    INTO v_held;
    -- session advisory locks stack: take or release the mark only once
    IF listening AND NOT v_held THEN
        PERFORM pg_advisory_lock_shared(1885824632, 0);
    ELSIF NOT listening AND v_held THEN
        PERFORM pg_advisory_unlock_shared(1885824632, 0);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow.listen_events(boolean) IS
    'subscribe this session (or not) to pgflow_events: events are sent only while someone is';

-- _emit_step: _emit for a step status change, only when the flow opted in
-- (flows.opt_step_events).
CREATE FUNCTION pgflow._emit_step(flow_slug text, run_id uuid, step_slug text, status text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgflow._emit('step:' || _emit_step.step_slug || ':' || _emit_step.status,
                        _emit_step.flow_slug, _emit_step.run_id, _emit_step.step_slug,
                        _emit_step.status)
    FROM pgflow.flows AS f
    WHERE f.flow_slug = _emit_step.flow_slug AND f.opt_step_events;
$$;

COMMENT ON FUNCTION pgflow._emit_step(text, uuid, text, text) IS
    'announce a step status change on pgflow_events if the flow opted in';
