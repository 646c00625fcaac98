BEGIN;
SELECT plan(9);

-- flows of every kind of root: simple roots and a waiting step, a start
-- delay, a map, a condition, a concurrency limit, a sub-flow, no steps
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.add_step('f', 'b', start_delay => 30);
SELECT pgflow.add_step('f', 'c', ARRAY['a', 'b']);
SELECT pgflow.create_flow('m');
SELECT pgflow.add_step('m', 'each', step_type => 'map');
SELECT pgflow.add_step('m', 'r', ARRAY['each']);
SELECT pgflow.create_flow('cnd');
SELECT pgflow.add_step('cnd', 'a', required_input_pattern => '{"run": {"go": true}}');
SELECT pgflow.add_step('cnd', 'b', ARRAY['a']);
SELECT pgflow.add_step('cnd', 'other');
SELECT pgflow.create_flow('lim');
SELECT pgflow.add_step('lim', 'a', concurrency => 1, concurrency_key => 'run.k');
SELECT pgflow.create_flow('child');
SELECT pgflow.add_step('child', 'work');
SELECT pgflow.create_flow('parent');
SELECT pgflow.add_subflow_step('parent', 'sub', 'child');
SELECT pgflow.create_flow('empty');

-- the same inputs, once through start_flow (one call per run), once through start_flows
CREATE TEMP TABLE inputs (flow text, ord integer, input jsonb);
INSERT INTO inputs VALUES
    ('f', 1, '{}'), ('f', 2, '{"x": 2}'), ('f', 3, '[1]'),
    ('m', 1, '[1, 2, 3]'), ('m', 2, '[]'), ('m', 3, '[4]'),
    ('cnd', 1, '{"go": true}'), ('cnd', 2, '{"go": false}'), ('cnd', 3, '{}'),
    ('lim', 1, '{"k": 1}'), ('lim', 2, '{"k": 1}'), ('lim', 3, '{"k": 2}'),
    ('parent', 1, '{"n": 1}'), ('parent', 2, '{"n": 2}'),
    ('empty', 1, '{}'), ('empty', 2, '{"y": 1}');
CREATE TEMP TABLE started (kind text, flow text, ord integer, run_id uuid);

INSERT INTO started
SELECT 'one', i.flow, i.ord, (pgflow.start_flow(i.flow, i.input, md5('one' || i.flow || i.ord)::uuid)).run_id
FROM inputs AS i ORDER BY i.flow, i.ord;

-- what a run is made of, without its ids and times
CREATE TEMP VIEW shape AS
SELECT s.kind, s.flow, s.ord,
       jsonb_build_object(
           'run', jsonb_build_array(r.status, r.remaining_steps, r.input, r.output, r.priority,
                                    r.depth, r.started_at = now(), r.completed_at = now()),
           'steps', (SELECT jsonb_agg(jsonb_build_array(ss.step_slug, ss.status, ss.remaining_deps,
                                                        ss.initial_tasks, ss.remaining_tasks,
                                                        ss.started_at = now(), ss.skip_reason)
                                      ORDER BY ss.step_slug)
                     FROM pgflow.step_states AS ss WHERE ss.run_id = r.run_id),
           'tasks', (SELECT jsonb_agg(jsonb_build_array(t.step_slug, t.task_index, t.status,
                                                        t.attempts_count,
                                                        CASE WHEN t.vt = 'infinity' THEN 'parked'
                                                             ELSE (t.vt - now())::text END,
                                                        t.priority, t.gate)
                                      ORDER BY t.step_slug, t.task_index)
                     FROM pgflow.step_tasks AS t WHERE t.run_id = r.run_id),
           'children', (SELECT jsonb_agg(jsonb_build_array(c.flow_slug, c.status, c.input,
                                                           c.parent_step_slug, c.parent_task_index)
                                         ORDER BY c.parent_step_slug, c.parent_task_index)
                        FROM pgflow.runs AS c WHERE c.parent_run_id = r.run_id)) AS doc
FROM started AS s JOIN pgflow.runs AS r ON r.run_id = s.run_id;

CREATE TEMP TABLE snap AS SELECT * FROM shape;

-- the one-by-one runs hold the concurrency slots of their keys: cancel them
-- so that the batch's runs meet the same free slots
SELECT pgflow.cancel_run(s.run_id) FROM started AS s WHERE s.flow = 'lim' ORDER BY s.ord;

INSERT INTO started
SELECT 'batch', x.flow, x.ord, x.run_id
FROM (SELECT i.flow, array_agg(i.input ORDER BY i.ord) AS inputs,
             array_agg(md5('batch' || i.flow || i.ord)::uuid ORDER BY i.ord) AS ids
      FROM inputs AS i GROUP BY i.flow) AS g,
     LATERAL (SELECT g.flow, row_number() OVER ()::integer AS ord, r.run_id
              FROM pgflow.start_flows(g.flow, g.inputs, g.ids) AS r) AS x;

INSERT INTO snap SELECT * FROM shape WHERE kind = 'batch';

SELECT is((SELECT count(*)::integer FROM started WHERE kind = 'batch'), 16,
          'start_flows returns one run per input');
SELECT ok((SELECT bool_and(s.run_id = md5('batch' || s.flow || s.ord)::uuid)
           FROM started AS s WHERE s.kind = 'batch'),
          'in the order of the inputs, with the run ids given');

SELECT set_eq(
    format($$SELECT flow, ord, doc FROM snap WHERE kind = 'batch' AND flow = %L$$, f),
    format($$SELECT flow, ord, doc FROM snap WHERE kind = 'one' AND flow = %L$$, f),
    format('flow %s: start_flows creates what start_flow creates', f))
FROM unnest(ARRAY['f', 'm', 'cnd', 'lim', 'parent', 'empty']) AS f;

SELECT is((SELECT count(*)::integer FROM pgflow.step_tasks AS t
           JOIN started AS s ON s.run_id = t.run_id
           WHERE s.kind = 'batch' AND s.flow = 'lim' AND t.vt < 'infinity'),
          2, 'a concurrency limit applies across a batch (one task of key 1, one of key 2)');

SELECT * FROM finish();
ROLLBACK;
