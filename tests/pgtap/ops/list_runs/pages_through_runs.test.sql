BEGIN;
SELECT plan(27);

-- 45 top-level runs of two flows, three to each started_at (ties), some
-- failed / cancelled / still started, and 12 sub-flow children of the first
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'a');
SELECT pgflow.start_flow(CASE WHEN i % 4 = 0 THEN 'g' ELSE 'f' END, '{}',
                         run_id => format('00000000-0000-0000-0000-%s', lpad(i::text, 12, '0'))::uuid)
FROM generate_series(1, 45) AS i;
UPDATE pgflow.runs AS r
SET started_at = timestamptz '2026-01-01 00:00+00' + (right(r.run_id::text, 12)::int / 3) * interval '1 minute',
    status = CASE WHEN right(r.run_id::text, 12)::int % 5 = 0 THEN 'failed'
                  WHEN right(r.run_id::text, 12)::int % 7 = 0 THEN 'cancelled'
                  WHEN right(r.run_id::text, 12)::int > 40 THEN 'started'
                  ELSE 'completed' END;
INSERT INTO pgflow.runs (run_id, flow_slug, input, remaining_steps, status, started_at,
                         parent_run_id, parent_step_slug, parent_task_index, parent_attempt, depth)
SELECT format('00000000-0000-0000-0001-%s', lpad(i::text, 12, '0'))::uuid, 'g', '{}', 0,
       CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'completed' END,
       timestamptz '2026-01-01 00:00+00' + (i / 2) * interval '1 minute',
       '00000000-0000-0000-0000-000000000001', 'a', 0, i, 1
FROM generate_series(1, 12) AS i;

-- every page from the newest (or, direction newer, from the oldest) on,
-- following the cursor of the last (first) row, concatenated newest first
CREATE FUNCTION pg_temp.walk(p_dir text, p_n integer, p_flow text DEFAULT NULL,
                             p_status text DEFAULT NULL, p_top boolean DEFAULT false,
                             p_after timestamptz DEFAULT NULL, p_before timestamptz DEFAULT NULL)
RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    v_all uuid[] := '{}';
    v_page jsonb[];
    v_cursor jsonb := CASE p_dir WHEN 'newer'
                      THEN '{"started_at": "-infinity", "run_id": "00000000-0000-0000-0000-000000000000"}' END;
    v_pages integer := 0;
BEGIN
    LOOP
        v_page := ARRAY(SELECT r FROM pgflow.list_runs(p_flow, p_status, p_n, v_cursor, p_dir,
                                                       p_after, p_before, p_top) AS r);
        EXIT WHEN cardinality(v_page) = 0;
        v_pages := v_pages + 1;
        IF v_pages > 100 THEN
            RAISE EXCEPTION 'the pages never end';
        END IF;
        IF p_dir = 'older' THEN
            v_all := v_all || ARRAY(SELECT (e ->> 'run_id')::uuid FROM unnest(v_page) WITH ORDINALITY AS u (e, n) ORDER BY n);
            v_cursor := v_page[cardinality(v_page)];
        ELSE
            v_all := ARRAY(SELECT (e ->> 'run_id')::uuid FROM unnest(v_page) WITH ORDINALITY AS u (e, n) ORDER BY n) || v_all;
            v_cursor := v_page[1];
        END IF;
    END LOOP;
    RETURN v_all;
END;
$$;
CREATE FUNCTION pg_temp.expect(p_where text) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    v uuid[];
BEGIN
    EXECUTE format('SELECT array_agg(r.run_id ORDER BY r.started_at DESC, r.run_id DESC) FROM pgflow.runs AS r WHERE %s', p_where)
        INTO v;
    RETURN coalesce(v, '{}');
END;
$$;

SELECT ok((SELECT count(*) FROM pgflow.runs) = 57
          AND (SELECT count(DISTINCT started_at) FROM pgflow.runs) < 30, 'fixture: 57 runs, ties on started_at');

SELECT is(pg_temp.walk('older', 7), pg_temp.expect('true'),
          'older pages of 7 walk every run once, newest first, ties broken by run_id');
SELECT is(pg_temp.walk('newer', 7), pg_temp.expect('true'),
          'newer pages of 7 from the oldest walk the same runs, each page newest first');
SELECT is(pg_temp.walk('older', 1), pg_temp.expect('true'), 'pages of one row: every tie kept');
SELECT is(
    (SELECT array_agg((r ->> 'run_id')::uuid) FROM pgflow.list_runs(max_rows => 5) AS r),
    (pg_temp.expect('true'))[1:5],
    'without a cursor: the newest max_rows');
SELECT is(
    (SELECT array_agg((r ->> 'run_id')::uuid)
     FROM pgflow.list_runs(max_rows => 4, direction => 'newer',
                           cursor => jsonb_build_object('started_at', (SELECT started_at FROM pgflow.runs
                                                                       WHERE run_id = '00000000-0000-0000-0000-000000000013'),
                                                        'run_id', '00000000-0000-0000-0000-000000000013')) AS r),
    (SELECT array_agg(x ORDER BY n) FROM (SELECT x, n FROM unnest(pg_temp.expect('true')) WITH ORDINALITY AS u (x, n)
                                          WHERE n < array_position(pg_temp.expect('true'), '00000000-0000-0000-0000-000000000013')
                                          ORDER BY n DESC LIMIT 4) AS s),
    'newer: the rows just before the cursor (the previous page), none of them the cursor row');
SELECT is(
    (SELECT array_agg(x ORDER BY n) FROM unnest(pg_temp.walk('older', 4)) WITH ORDINALITY AS u (x, n)),
    (SELECT array_agg(x ORDER BY n) FROM unnest(pg_temp.walk('newer', 4)) WITH ORDINALITY AS u (x, n)),
    'older and newer agree page size 4 too');

SELECT is(pg_temp.walk('older', 3, p_status => 'failed'), pg_temp.expect($$r.status = 'failed'$$),
          'status failed, paged');
SELECT is(pg_temp.walk('newer', 3, p_status => 'started'), pg_temp.expect($$r.status = 'started'$$),
          'status started, paged newer');
SELECT is(pg_temp.walk('older', 6, p_status => 'completed'), pg_temp.expect($$r.status = 'completed'$$),
          'status completed, paged');
SELECT is(pg_temp.walk('older', 5, p_flow => 'g'), pg_temp.expect($$r.flow_slug = 'g'$$),
          'one flow (children included), paged');
SELECT is(pg_temp.walk('older', 2, p_flow => 'f', p_status => 'cancelled'),
          pg_temp.expect($$r.flow_slug = 'f' AND r.status = 'cancelled'$$), 'flow and status, paged');
SELECT is(pg_temp.walk('older', 4, p_after => '2026-01-01 00:03+00', p_before => '2026-01-01 00:09+00'),
          pg_temp.expect($$r.started_at >= '2026-01-01 00:03+00' AND r.started_at < '2026-01-01 00:09+00'$$),
          'time range: started_after inclusive, started_before exclusive, paged');
SELECT is(pg_temp.walk('newer', 4, p_after => '2026-01-01 00:03+00'),
          pg_temp.expect($$r.started_at >= '2026-01-01 00:03+00'$$), 'started_after alone, paged newer');

SELECT is(pg_temp.walk('older', 7, p_top => true), pg_temp.expect('r.parent_run_id IS NULL'),
          'top_level: no sub-flow children, paged');
SELECT is(pg_temp.walk('newer', 7, p_top => true), pg_temp.expect('r.parent_run_id IS NULL'),
          'top_level, paged newer');
SELECT is(pg_temp.walk('older', 2, p_top => true, p_status => 'failed'),
          pg_temp.expect($$r.parent_run_id IS NULL AND r.status = 'failed'$$), 'top_level and status');
SELECT is(pg_temp.walk('older', 3, p_top => true, p_flow => 'g', p_status => 'completed'),
          pg_temp.expect($$r.parent_run_id IS NULL AND r.flow_slug = 'g' AND r.status = 'completed'$$),
          'top_level, flow and status');
SELECT is(
    (SELECT count(*)::int FROM pgflow.list_runs(max_rows => 100) AS r WHERE r ->> 'parent_run_id' = '00000000-0000-0000-0000-000000000001'),
    12, 'each row names its parent run (children of run 1)');

SELECT throws_ok($$SELECT pgflow.list_runs(cursor => '[1]')$$, '22023', NULL, 'a cursor that is not an object');
SELECT throws_ok($$SELECT pgflow.list_runs(cursor => '{"started_at": "2026-01-01"}')$$, '22023', NULL,
                 'a cursor without run_id');
SELECT throws_ok($$SELECT pgflow.list_runs(cursor => '{"started_at": "soon", "run_id": "00000000-0000-0000-0000-000000000001"}')$$,
                 '22023', NULL, 'a cursor whose started_at is no timestamp');
SELECT throws_ok($$SELECT pgflow.list_runs(cursor => '{"started_at": "2026-01-01", "run_id": "x"}')$$, '22023',
                 NULL, 'a cursor whose run_id is no uuid');
SELECT throws_ok($$SELECT pgflow.list_runs(direction => 'sideways')$$, '22023', 'invalid direction "sideways"',
                 'an unknown direction');
SELECT throws_ok($$SELECT pgflow.list_runs(direction => NULL)$$, '22004', 'direction must not be NULL',
                 'a NULL direction');
SELECT throws_ok($$SELECT pgflow.list_runs(top_level => NULL)$$, '22004', 'top_level must not be NULL',
                 'a NULL top_level');
SELECT throws_ok($$SELECT pgflow.list_runs(max_rows => 0)$$, '22023', NULL, 'max_rows 0');

SELECT * FROM finish();
ROLLBACK;
