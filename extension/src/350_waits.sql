-- Wait steps and events.
--
-- A wait step (step_type 'wait', pgflow.step_waits) gets no task.  When it is
-- ready (dependencies finished, conditions met) it is started and waits: a
-- pgflow.waits row says for which event, which key value (the JSON value at
-- its key path) and until when.  emit_event(event, key, payload) completes
-- every step waiting for that event and key with the payload as its output,
-- in the caller's transaction.  An event nobody waits for is kept (for
-- pgflow.event_retention, default 7 days) and consumed by the first wait
-- step that becomes ready for it.  A wait past its deadline is exhausted by
-- expire_waits() (which the reference worker calls periodically): its
-- when_exhausted applies (fail, skip, skip-cascade).
--
-- Keys are JSON strings, numbers or booleans compared by JSON equality: 42
-- and 42.0 are the same key, "42" (a string) is another one.
--
-- Exactly once: an emit and a wait step becoming ready for the same event
-- and key serialise on a transaction advisory lock (1885824633,
-- _event_lock_key(event, key)), so one of them sees the other's row; an emit
-- and expire_waits both delete the waits row first, so only one of them
-- acts on it; a repeated event_id conflicts on events_event_id_key.
-- Lock order: the advisory key, the waits row, the step_states row, the runs
-- row (as task -> step_state -> run elsewhere).

CREATE TABLE pgflow.waits (
    run_id     uuid        NOT NULL,
    step_slug  text        NOT NULL,
    flow_slug  text        NOT NULL,
    event_name text        NOT NULL,
    event_key  jsonb       NOT NULL,
    deadline   timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT waits_pkey PRIMARY KEY (run_id, step_slug),
    CONSTRAINT waits_step_fkey FOREIGN KEY (run_id, step_slug)
        REFERENCES pgflow.step_states (run_id, step_slug) ON DELETE CASCADE
);

COMMENT ON TABLE pgflow.waits IS
    'one row per started wait step: the event and key it waits for and its deadline (NULL: none)';

CREATE INDEX waits_event_idx ON pgflow.waits (event_name, event_key);
CREATE INDEX waits_deadline_idx ON pgflow.waits (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE pgflow.events (
    event_seq       bigint      GENERATED ALWAYS AS IDENTITY,
    event_name      text        NOT NULL,
    event_key       jsonb       NOT NULL,
    payload         jsonb       NOT NULL,
    event_id        text,
    emitted_at      timestamptz NOT NULL DEFAULT now(),
    consumed_at     timestamptz,
    completed_steps integer     NOT NULL DEFAULT 0,
    CONSTRAINT events_pkey PRIMARY KEY (event_seq),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_completed_steps_check CHECK (completed_steps >= 0)
);

COMMENT ON TABLE pgflow.events IS
    'emitted events, kept for pgflow.event_retention: unconsumed ones wait for a wait step, event_id makes emits idempotent';

CREATE INDEX events_pending_idx ON pgflow.events (event_name, event_key, event_seq)
    WHERE consumed_at IS NULL;
CREATE INDEX events_emitted_at_idx ON pgflow.events (emitted_at);

SELECT pg_catalog.pg_extension_config_dump('pgflow.waits', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.events', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.events_event_seq_seq', '');

-- _event_retention: how long events are kept: the setting
-- pgflow.event_retention (an interval, e.g. ALTER DATABASE app SET
-- pgflow.event_retention = '1 day'), default 7 days.
-- Errors: 22023 not an interval or negative.
CREATE FUNCTION pgflow._event_retention()
RETURNS interval
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text := nullif(current_setting('pgflow.event_retention', true), '');
    v_retention interval;
BEGIN
    IF v_setting IS NULL THEN
        RETURN interval '7 days';
    END IF;
    BEGIN
        v_retention := v_setting::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        v_retention := NULL;
    END;
    IF v_retention IS NULL OR v_retention < interval '0' THEN
        RAISE EXCEPTION 'pgflow.event_retention must be an interval >= 0, got "%"', v_setting
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. ALTER DATABASE mydb SET pgflow.event_retention = ''1 day''';
    END IF;
    RETURN v_retention;
END;
$$;

COMMENT ON FUNCTION pgflow._event_retention() IS
    'how long events are kept: setting pgflow.event_retention, default 7 days';

-- _event_lock_key: the advisory-lock objid of an (event, key) pair; equal
-- keys (42 and 42.0) give the same value.
CREATE FUNCTION pgflow._event_lock_key(event_name text, event_key jsonb)
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN hashtext(event_name || ':' || CASE jsonb_typeof(event_key)
        WHEN 'number' THEN 'n' || trim_scale(event_key::text::numeric)::text
        ELSE event_key::text END);
END;
$$;

COMMENT ON FUNCTION pgflow._event_lock_key(text, jsonb) IS
    'advisory lock objid (classid 1885824633) of an event name and key';

-- _check_event_key: raises unless key is a JSON string, number or boolean.
CREATE FUNCTION pgflow._check_event_key(key jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF key IS NULL OR jsonb_typeof(key) NOT IN ('string', 'number', 'boolean') THEN
        RAISE EXCEPTION 'an event key must be a JSON string, number or boolean, got %',
                coalesce(key::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass e.g. to_jsonb(42) or ''"order-42"''::jsonb';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_event_key(jsonb) IS
    'raise unless an event key is a JSON string, number or boolean';

-- _start_wait: starts a ready wait step of a run (its step_states row locked
-- by the caller, _start_ready_steps) with its input.  Its key is the value
-- at its key path: a missing or non-scalar key fails the run.  The oldest
-- kept event for it (unconsumed, emitted within the retention) completes it
-- at once ('completed'); else it waits ('waiting', step:<slug>:waiting).
-- Locks: the (event, key) advisory key, then the event row it consumes.
CREATE FUNCTION pgflow._start_wait(run_id uuid, flow_slug text, step_slug text, input jsonb)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_wait pgflow.step_waits;
    v_timeout integer;
    v_key jsonb;
    v_seq bigint;
    v_payload jsonb;
    v_retention interval := pgflow._event_retention();
BEGIN
    SELECT * INTO STRICT v_wait FROM pgflow.step_waits AS w
    WHERE w.flow_slug = _start_wait.flow_slug AND w.step_slug = _start_wait.step_slug;
    SELECT s.opt_timeout INTO v_timeout FROM pgflow.steps AS s
    WHERE s.flow_slug = _start_wait.flow_slug AND s.step_slug = _start_wait.step_slug;
    v_key := _start_wait.input #> v_wait.key_path;
    IF v_key IS NULL OR jsonb_typeof(v_key) NOT IN ('string', 'number', 'boolean') THEN
        PERFORM pgflow._fail_run(_start_wait.run_id, _start_wait.step_slug,
            format('wait step "%s": the key %s is %s, not a string, number or boolean',
                   _start_wait.step_slug, array_to_string(v_wait.key_path, '.'),
                   coalesce(v_key::text, 'missing')));
        RETURN 'failed';
    END IF;

    UPDATE pgflow.step_states AS ss
    SET status = 'started', started_at = now(), initial_tasks = 0, remaining_tasks = 0
    WHERE ss.run_id = _start_wait.run_id AND ss.step_slug = _start_wait.step_slug;

    PERFORM pg_advisory_xact_lock(1885824633, pgflow._event_lock_key(v_wait.event_name, v_key));
    SELECT e.event_seq, e.payload INTO v_seq, v_payload
    FROM pgflow.events AS e
    WHERE e.event_name = v_wait.event_name AND e.event_key = v_key
      AND e.consumed_at IS NULL
      AND e.emitted_at >= now() - v_retention
    ORDER BY e.event_seq
    LIMIT 1
    FOR UPDATE;
    IF v_seq IS NOT NULL THEN
        UPDATE pgflow.events AS e
        SET consumed_at = now(), completed_steps = e.completed_steps + 1
        WHERE e.event_seq = v_seq;
        DELETE FROM pgflow.waits AS w
        WHERE w.run_id = _start_wait.run_id AND w.step_slug = _start_wait.step_slug;
        PERFORM pgflow._complete_step(_start_wait.run_id, _start_wait.step_slug, v_payload);
        RETURN 'completed';
    END IF;

    -- a row left from before a retry_run is replaced
    INSERT INTO pgflow.waits AS w (run_id, step_slug, flow_slug, event_name, event_key, deadline)
    VALUES (_start_wait.run_id, _start_wait.step_slug, _start_wait.flow_slug, v_wait.event_name,
            v_key, now() + make_interval(secs => v_timeout))
    ON CONFLICT ON CONSTRAINT waits_pkey DO UPDATE
    SET event_name = excluded.event_name, event_key = excluded.event_key,
        deadline = excluded.deadline, created_at = now();
    PERFORM pgflow._emit_step(_start_wait.flow_slug, _start_wait.run_id, _start_wait.step_slug,
                              'waiting');
    RETURN 'waiting';
END;
$$;

COMMENT ON FUNCTION pgflow._start_wait(uuid, text, text, jsonb) IS
    'start a ready wait step: consume a kept event or wait for one';

-- emit_event: an event happened: completes every step waiting for event_name
-- and key (JSON equality of the key value; 42 = 42.0 <> "42") whose deadline
-- has not passed, with payload as its output, in the caller's transaction
-- (dependents start, runs complete as with complete_task).  Returns how many
-- steps it completed.  The event is kept for pgflow.event_retention: when no
-- step waited for it, the first one to become ready for it consumes it.  A
-- repeated non-NULL event_id (while the first is kept) is a no-op returning
-- 0, also when both emits race.
-- Locks: the (event, key) advisory key until commit, then per waiting step
-- the waits row, its step_states row and the runs row.
-- Errors: 22004 NULL event_name or payload; 22023 invalid event name or key.
CREATE FUNCTION pgflow.emit_event(event_name text, key jsonb, payload jsonb, event_id text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seq bigint;
    v_wait record;
    v_status text;
    v_n integer := 0;
BEGIN
    IF emit_event.event_name IS NULL OR emit_event.payload IS NULL THEN
        RAISE EXCEPTION 'event_name and payload must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass ''null''::jsonb (or ''{}'') for an event without payload';
    END IF;
    IF emit_event.event_name !~ '^[a-zA-Z][a-zA-Z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'invalid event name "%"', emit_event.event_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an event name starts with a letter, then letters, digits, _ . : or - (at most 128)';
    END IF;
    PERFORM pgflow._check_event_key(emit_event.key);

    PERFORM pg_advisory_xact_lock(1885824633, pgflow._event_lock_key(emit_event.event_name, emit_event.key));
    INSERT INTO pgflow.events AS e (event_name, event_key, payload, event_id)
    VALUES (emit_event.event_name, emit_event.key, emit_event.payload, emit_event.event_id)
    ON CONFLICT ON CONSTRAINT events_event_id_key DO NOTHING
    RETURNING e.event_seq INTO v_seq;
    IF v_seq IS NULL THEN
        RETURN 0;
    END IF;

    FOR v_wait IN
        SELECT w.run_id, w.step_slug
        FROM pgflow.waits AS w
        WHERE w.event_name = emit_event.event_name AND w.event_key = emit_event.key
          AND (w.deadline IS NULL OR w.deadline > now())
        ORDER BY w.run_id, w.step_slug
    LOOP
        -- expire_waits may have taken it meanwhile
        DELETE FROM pgflow.waits AS w
        WHERE w.run_id = v_wait.run_id AND w.step_slug = v_wait.step_slug
          AND w.event_name = emit_event.event_name AND w.event_key = emit_event.key;
        CONTINUE WHEN NOT FOUND;
        SELECT ss.status INTO v_status FROM pgflow.step_states AS ss
        WHERE ss.run_id = v_wait.run_id AND ss.step_slug = v_wait.step_slug
        FOR UPDATE;
        -- cancelled, skipped or failed with its run: the row was stale
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        IF pgflow._complete_step(v_wait.run_id, v_wait.step_slug, emit_event.payload) THEN
            PERFORM pgflow._start_ready_steps(v_wait.run_id);
        END IF;
        v_n := v_n + 1;
    END LOOP;

    IF v_n > 0 THEN
        UPDATE pgflow.events AS e
        SET consumed_at = now(), completed_steps = v_n
        WHERE e.event_seq = v_seq;
    END IF;
    RETURN v_n;
END;
$$;

COMMENT ON FUNCTION pgflow.emit_event(text, jsonb, jsonb, text) IS
    'complete every step waiting for this event and key with payload (kept for later waiters if none); returns how many';

-- _exhaust_wait: a wait step's deadline passed: its when_exhausted applies
-- (fail: the run fails; skip / skip-cascade: skipped with wait_timed_out),
-- with a message naming the event and key.
-- Locks: the step_states row (held by the caller), then as _fail_run /
-- _skip_steps.
CREATE FUNCTION pgflow._exhaust_wait(run_id uuid, step_slug text, event_name text, event_key jsonb)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode text;
    v_timeout integer;
    v_message text;
BEGIN
    SELECT s.when_exhausted, s.opt_timeout INTO v_mode, v_timeout
    FROM pgflow.step_states AS ss
    JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE ss.run_id = _exhaust_wait.run_id AND ss.step_slug = _exhaust_wait.step_slug;
    v_message := format('timed out after %s s waiting for event "%s" with key %s',
                        v_timeout, _exhaust_wait.event_name, _exhaust_wait.event_key::text);
    IF v_mode = 'fail' THEN
        PERFORM pgflow._fail_run(_exhaust_wait.run_id, _exhaust_wait.step_slug, v_message);
    ELSE
        UPDATE pgflow.step_states AS ss
        SET error_message = v_message
        WHERE ss.run_id = _exhaust_wait.run_id AND ss.step_slug = _exhaust_wait.step_slug;
        PERFORM pgflow._skip_steps(_exhaust_wait.run_id, _exhaust_wait.step_slug,
                                   'wait_timed_out', v_mode = 'skip-cascade');
        PERFORM pgflow._start_ready_steps(_exhaust_wait.run_id);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._exhaust_wait(uuid, text, text, jsonb) IS
    'apply a timed-out wait step''s when_exhausted mode';

-- expire_waits: the maintenance call (the reference worker makes it every
-- few seconds; any worker or a cron job may): exhausts up to max_rows wait
-- steps whose deadline has passed (when_exhausted applies), drops waits
-- rows of steps no longer waiting (cancelled, skipped, failed runs) and
-- deletes up to max_rows events emitted longer than pgflow.event_retention
-- ago.  Returns how many waits timed out.  Concurrent calls skip each
-- other's rows; a wait an emit_event is completing is left to it.
-- Locks: each due waits row (SKIP LOCKED), its step_states row, the runs
-- row; the old events rows.
-- Errors: 22004 NULL max_rows; 22023 max_rows < 1.
CREATE FUNCTION pgflow.expire_waits(max_rows integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_wait record;
    v_status text;
    v_n integer := 0;
BEGIN
    PERFORM pgflow._check_option('max_rows', expire_waits.max_rows, 1, false);
    FOR v_wait IN
        SELECT w.run_id, w.step_slug, w.event_name, w.event_key
        FROM pgflow.waits AS w
        WHERE w.deadline <= now()
        ORDER BY w.deadline
        LIMIT expire_waits.max_rows
        FOR UPDATE SKIP LOCKED
    LOOP
        DELETE FROM pgflow.waits AS w
        WHERE w.run_id = v_wait.run_id AND w.step_slug = v_wait.step_slug;
        SELECT ss.status INTO v_status FROM pgflow.step_states AS ss
        WHERE ss.run_id = v_wait.run_id AND ss.step_slug = v_wait.step_slug
        FOR UPDATE;
        CONTINUE WHEN v_status IS DISTINCT FROM 'started';
        PERFORM pgflow._exhaust_wait(v_wait.run_id, v_wait.step_slug, v_wait.event_name,
                                     v_wait.event_key);
        v_n := v_n + 1;
    END LOOP;

    -- rows of steps that stopped waiting otherwise (cancel, skip, failed run)
    DELETE FROM pgflow.waits AS w
    WHERE w.ctid IN (
        SELECT w2.ctid FROM pgflow.waits AS w2
        WHERE NOT EXISTS (
            SELECT 1 FROM pgflow.step_states AS ss
            WHERE ss.run_id = w2.run_id AND ss.step_slug = w2.step_slug AND ss.status = 'started')
        LIMIT expire_waits.max_rows
        FOR UPDATE SKIP LOCKED);

    DELETE FROM pgflow.events AS e
    WHERE e.event_seq IN (
        SELECT e2.event_seq FROM pgflow.events AS e2
        WHERE e2.emitted_at < now() - pgflow._event_retention()
        ORDER BY e2.emitted_at
        LIMIT expire_waits.max_rows
        FOR UPDATE SKIP LOCKED);
    RETURN v_n;
END;
$$;

COMMENT ON FUNCTION pgflow.expire_waits(integer) IS
    'maintenance: time out waits past their deadline (when_exhausted applies), drop stale waits and old events';
