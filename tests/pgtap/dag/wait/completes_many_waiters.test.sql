BEGIN;
SELECT plan(4);

-- three runs of f and one of g wait for "batch_loaded" with key "2026-12-03"
SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'w', step_type => 'wait', wait_event => 'batch_loaded', wait_key => 'run.day');
SELECT pgflow.add_step('f', 'v', step_type => 'wait', wait_event => 'batch_loaded', wait_key => 'run.day');
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'w', step_type => 'wait', wait_event => 'batch_loaded', wait_key => 'run.day');
SELECT pgflow.start_flow('f', '{"day": "2026-12-03"}') FROM generate_series(1, 3);
SELECT pgflow.start_flow('g', '{"day": "2026-12-03"}');
SELECT pgflow.start_flow('g', '{"day": "2026-12-04"}');

SELECT is(pgflow.emit_event('batch_loaded', '"2026-12-03"', '{"rows": 9}'), 7,
          'one emit completes every waiting step of that event and key (several per run, several flows)');
SELECT is((SELECT count(*)::integer FROM pgflow.runs AS r WHERE r.status = 'completed'), 4,
          'their runs complete');
SELECT is((SELECT count(*)::integer FROM pgflow.runs AS r WHERE r.status = 'started'), 1,
          'the run waiting for another key still waits');
SELECT is((SELECT r.output FROM pgflow.runs AS r WHERE r.flow_slug = 'g' AND r.status = 'completed'),
          '{"w": {"rows": 9}}'::jsonb, 'a wait leaf''s payload is in the run output');

SELECT * FROM finish();
ROLLBACK;
