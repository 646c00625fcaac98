-- Concurrency limits ("at most N of these at once, per key").
--
-- A step's concurrency (add_step(concurrency => N, concurrency_key => path))
-- lets at most N of its tasks hold a slot at once, per distinct value of the
-- key; a flow's (create_flow(concurrency => N, concurrency_key => 'run.x'))
-- does the same for the tasks of all its task steps together, except the
-- steps that have a limit of their own (one gate per task: a step's limit
-- replaces the flow's for that step).  Sub-flow and wait steps have no
-- tasks that workers run and are never gated.
--
-- How it stays exact and cheap: a gated task is created *parked* (queued,
-- vt = 'infinity': outside the vt <= now range every claim reads, so a
-- blocked backlog is never scanned) and named by its gate (step_tasks.gate,
-- '<step slug or *>|<key value as JSON text>').  _gate_refill, under a
-- transaction advisory lock of the gate, counts the gate's tasks that hold a
-- slot (open, vt finite: ready, delayed for a retry, started or with an
-- expired lease; at most `limit` rows through step_tasks_gate_idx) and
-- un-parks the oldest parked ones into the free slots.  It runs when gated
-- tasks are created, when retry_run re-queues them, when a limit changes,
-- and, from a trigger, whenever a task holding a slot reaches a final
-- status (completed, failed, cancelled), whichever function finishes it.
-- Claims (claim_tasks, read_with_poll) are unchanged: an un-parked task is
-- an ordinary claimable task.  Exact under READ COMMITTED (the default: each
-- statement of _gate_refill sees what committed before it took the lock).

ALTER TABLE pgflow.flows ADD COLUMN opt_concurrency integer;
ALTER TABLE pgflow.flows ADD COLUMN opt_concurrency_key text[];
ALTER TABLE pgflow.flows ADD CONSTRAINT flows_opt_concurrency_check
    CHECK (opt_concurrency >= 1 AND (opt_concurrency_key IS NULL OR cardinality(opt_concurrency_key) >= 2));
ALTER TABLE pgflow.flows ADD CONSTRAINT flows_opt_concurrency_key_check
    CHECK (opt_concurrency_key IS NULL OR opt_concurrency IS NOT NULL);
COMMENT ON COLUMN pgflow.flows.opt_concurrency IS
    'at most this many tasks of the flow''s task steps (without a limit of their own) hold a slot at once, per key (NULL: no limit)';
COMMENT ON COLUMN pgflow.flows.opt_concurrency_key IS
    'the path into a task''s input ({run,tenant}) whose value partitions the flow''s limit (NULL: one limit for all)';

ALTER TABLE pgflow.steps ADD COLUMN opt_concurrency integer;
ALTER TABLE pgflow.steps ADD COLUMN opt_concurrency_key text[];
ALTER TABLE pgflow.steps ADD CONSTRAINT steps_opt_concurrency_check
    CHECK (opt_concurrency >= 1 AND (opt_concurrency_key IS NULL OR cardinality(opt_concurrency_key) >= 1));
ALTER TABLE pgflow.steps ADD CONSTRAINT steps_opt_concurrency_key_check
    CHECK (opt_concurrency_key IS NULL OR opt_concurrency IS NOT NULL);
COMMENT ON COLUMN pgflow.steps.opt_concurrency IS
    'at most this many of the step''s tasks hold a slot at once, per key (NULL: the flow''s limit, if any)';
COMMENT ON COLUMN pgflow.steps.opt_concurrency_key IS
    'the path into a task''s input ({run,tenant}, {<dep>,id}, {item,tenant} for a map''s element) partitioning the step''s limit';

ALTER TABLE pgflow.step_tasks ADD COLUMN gate text;
COMMENT ON COLUMN pgflow.step_tasks.gate IS
    'the concurrency gate the task passes (''<step slug or *>|<key JSON>''; NULL: ungated); parked while queued with vt = infinity';

-- the tasks of a gate holding a slot (vt finite) and the parked ones
-- (vt = infinity, highest priority first, then oldest); ungated tasks are
-- not in it
CREATE INDEX step_tasks_gate_idx ON pgflow.step_tasks (flow_slug, gate, vt, priority DESC, message_id)
    WHERE gate IS NOT NULL AND status IN ('queued', 'started');

-- _check_concurrency: raises unless a limit and its key are valid; returns
-- the key as a path array (NULL without a key).  firsts: what the key's
-- first segment may be (run, the step's dependencies, item for a map).
-- Errors: 22023 limit below 1, a key without a limit, an invalid path.
CREATE FUNCTION pgflow._check_concurrency(who text, concurrency integer, concurrency_key text,
                                          firsts text[])
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text[];
BEGIN
    IF concurrency IS NULL THEN
        IF concurrency_key IS NOT NULL THEN
            RAISE EXCEPTION '%: concurrency_key "%" needs a concurrency limit', who, concurrency_key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass concurrency => N (at most N at once per key value) with it';
        END IF;
        RETURN NULL;
    END IF;
    IF concurrency < 1 THEN
        RAISE EXCEPTION '%: concurrency must be at least 1, got %', who, concurrency
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'leave it out (NULL) for no limit';
    END IF;
    IF concurrency_key IS NULL THEN
        RETURN NULL;
    END IF;
    v_path := string_to_array(concurrency_key, '.');
    IF array_position(v_path, '') IS NOT NULL
       OR (cardinality(v_path) < 2 AND v_path[1] IS DISTINCT FROM 'item') THEN
        RAISE EXCEPTION '%: invalid concurrency_key "%"', who, concurrency_key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a dotted path into the task''s input, e.g. run.customer_id';
    END IF;
    IF NOT v_path[1] = ANY (firsts) THEN
        RAISE EXCEPTION '%: concurrency_key "%" starts with "%", not one of [%]',
                who, concurrency_key, v_path[1], array_to_string(firsts, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'start it with run (the run''s input), a dependency''s slug, or item (a map task''s element)';
    END IF;
    RETURN v_path;
END;
$$;

COMMENT ON FUNCTION pgflow._check_concurrency(text, integer, text, text[]) IS
    'validate a concurrency limit and key; returns the key as a path array';

-- _gate_of: the gate of a task: scope ('*' for the flow's limit, else the
-- step slug), then the key's value in the task's input (input: {"run",
-- "<dep>"}; item: a map task's element) as JSON text; a missing key is null
-- (all tasks without it share one gate).  Values longer than 200 characters
-- are replaced by the JSON string "md5:<hash of the value>".
CREATE FUNCTION pgflow._gate_of(scope text, key_path text[], input jsonb, item jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT scope || '|' || CASE WHEN length(v) > 200 THEN to_jsonb('md5:' || md5(v))::text ELSE v END
    FROM (SELECT CASE
                     WHEN key_path IS NULL THEN ''
                     ELSE coalesce(CASE WHEN key_path[1] = 'item' THEN item #> key_path[2:]
                                        ELSE input #> key_path END::text, 'null')
                 END AS v) AS k
$$;

COMMENT ON FUNCTION pgflow._gate_of(text, text[], jsonb, jsonb) IS
    'the concurrency gate of a task from its scope, key path and input';

-- _gate_refill: un-parks the parked tasks of a gate, highest priority first,
-- then the oldest, into its free slots (limit minus the tasks holding one),
-- at once claimable (or at queued_at + start_delay, if that is later).  A gate whose limit was
-- removed un-parks everything.  Wakes idle workers when it un-parked a task.
-- Returns how many it un-parked.
-- Locks: the gate's transaction advisory lock (refills of one gate run one
-- at a time, each counting what the one before committed), then the
-- un-parked rows (SKIP LOCKED: a parked row another transaction holds is
-- being finished or re-queued by it, which refills again).
CREATE FUNCTION pgflow._gate_refill(flow_slug text, gate text)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := split_part(_gate_refill.gate, '|', 1);
    v_limit integer;
    v_free bigint;
    v_moved integer;
BEGIN
    PERFORM pg_advisory_xact_lock(1885824632, hashtext(_gate_refill.flow_slug || ' ' || _gate_refill.gate));
    -- nothing parked (a limit that does not bind): no slot to count, one probe
    -- (ordered like step_tasks_gate_idx, so that is the index even without
    -- statistics: the ready index would read every parked task of the flow)
    PERFORM FROM pgflow.step_tasks AS t
    WHERE t.flow_slug = _gate_refill.flow_slug
      AND t.gate = _gate_refill.gate
      AND t.status IN ('queued', 'started')
      AND t.vt = 'infinity'
    ORDER BY t.priority DESC, t.message_id
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF v_scope = '*' THEN
        SELECT f.opt_concurrency INTO v_limit
        FROM pgflow.flows AS f WHERE f.flow_slug = _gate_refill.flow_slug;
    ELSE
        SELECT s.opt_concurrency INTO v_limit
        FROM pgflow.steps AS s
        WHERE s.flow_slug = _gate_refill.flow_slug AND s.step_slug = v_scope;
    END IF;
    IF v_limit IS NOT NULL THEN
        -- the slot holders, at most v_limit of them read
        SELECT v_limit - count(*) INTO v_free
        FROM (SELECT FROM pgflow.step_tasks AS t
              WHERE t.flow_slug = _gate_refill.flow_slug
                AND t.gate = _gate_refill.gate
                AND t.status IN ('queued', 'started')
                AND t.vt < 'infinity'
              LIMIT v_limit) AS holders;
        IF v_free <= 0 THEN
            RETURN 0;
        END IF;
    END IF;

    WITH next AS (
        SELECT t.ctid
        FROM pgflow.step_tasks AS t
        WHERE t.flow_slug = _gate_refill.flow_slug
          AND t.gate = _gate_refill.gate
          AND t.status IN ('queued', 'started')
          AND t.vt = 'infinity'
        ORDER BY t.priority DESC, t.message_id
        LIMIT v_free
        FOR UPDATE SKIP LOCKED
    )
    UPDATE pgflow.step_tasks AS t
    SET vt = greatest(now(), t.queued_at + make_interval(secs => coalesce((
                 SELECT s.opt_start_delay FROM pgflow.steps AS s
                 WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug), 0)))
    FROM next
    WHERE t.ctid = next.ctid;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    IF v_moved > 0 THEN
        PERFORM pgflow._wake_workers(_gate_refill.flow_slug);
    END IF;
    RETURN v_moved;
END;
$$;

COMMENT ON FUNCTION pgflow._gate_refill(text, text) IS
    'un-park the parked tasks of a concurrency gate into its free slots (highest priority, then oldest, first)';

-- _gate_refill_flow: refills every gate of a flow that has parked tasks
-- (after its limits changed).
CREATE FUNCTION pgflow._gate_refill_flow(flow_slug text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._gate_refill(_gate_refill_flow.flow_slug, g.gate)
    FROM (SELECT DISTINCT t.gate
          FROM pgflow.step_tasks AS t
          WHERE t.flow_slug = _gate_refill_flow.flow_slug
            AND t.gate IS NOT NULL
            AND t.status IN ('queued', 'started')
            AND t.vt = 'infinity'
          ORDER BY t.gate) AS g;
END;
$$;

COMMENT ON FUNCTION pgflow._gate_refill_flow(text) IS
    'refill every concurrency gate of a flow that has parked tasks';

-- _gate_released: a task holding a slot of its gate reached a final status:
-- the slot goes to the gate's next parked task.
CREATE FUNCTION pgflow._gate_released()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgflow._gate_refill(NEW.flow_slug, NEW.gate);
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION pgflow._gate_released() IS
    'trigger: a gated task holding a slot finished; refill its gate';

CREATE TRIGGER step_tasks_gate_released
    AFTER UPDATE OF status ON pgflow.step_tasks
    FOR EACH ROW
    WHEN (OLD.gate IS NOT NULL AND OLD.status IN ('queued', 'started')
          AND NEW.status NOT IN ('queued', 'started') AND OLD.vt < 'infinity')
    EXECUTE FUNCTION pgflow._gate_released();
