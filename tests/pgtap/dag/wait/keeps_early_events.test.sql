BEGIN;
SELECT plan(9);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'prep');
SELECT pgflow.add_step('f', 'paid', ARRAY['prep'], step_type => 'wait', wait_event => 'payment_received',
                       wait_key => 'run.order_id');
SELECT pgflow.add_step('f', 'ship', ARRAY['paid']);

CREATE FUNCTION pg_temp.finish_prep(run integer) RETURNS void LANGUAGE sql AS $$
    SELECT pgflow.start_tasks('f', ARRAY(SELECT t.message_id FROM pgflow.step_tasks AS t
                                         WHERE t.step_slug = 'prep' AND t.status = 'queued'
                                           AND t.run_id = ('00000000-0000-0000-0000-00000000000' || run)::uuid),
                              '00000000-0000-0000-0000-0000000000a1');
    SELECT pgflow.complete_task(('00000000-0000-0000-0000-00000000000' || run)::uuid, 'prep', 0, '{}');
$$;
CREATE FUNCTION pg_temp.status(run integer) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(':', ss.status, ss.output::text, ss.skip_reason) FROM pgflow.step_states AS ss
    WHERE ss.run_id = ('00000000-0000-0000-0000-00000000000' || run)::uuid AND ss.step_slug = 'paid';
$$;

SELECT pgflow.start_flow('f', '{"order_id": "A"}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT pgflow.start_flow('f', '{"order_id": "A"}', run_id => '00000000-0000-0000-0000-000000000002');
-- the webhook arrives before the step waits
SELECT is(pgflow.emit_event('payment_received', '"A"', '{"amount": 5}'), 0, 'early: nobody waits yet');
SELECT is((SELECT count(*)::integer FROM pgflow.events AS e WHERE e.consumed_at IS NULL), 1,
          'the event is kept');
SELECT pg_temp.finish_prep(1);
SELECT is(pg_temp.status(1), 'completed:{"amount": 5}',
          'the step that becomes ready consumes the kept event at once');
SELECT is((SELECT count(*)::integer FROM pgflow.waits), 0, 'and never waits');
SELECT is((SELECT count(*)::integer FROM pgflow.step_states AS ss
           WHERE ss.step_slug = 'ship' AND ss.status = 'started'), 1, 'its dependent starts');
SELECT pg_temp.finish_prep(2);
SELECT is(pg_temp.status(2), 'started', 'a kept event is consumed once: the next step waits');

-- two kept events are consumed oldest first, one per step
SELECT pgflow.start_flow('f', '{"order_id": "B"}', run_id => '00000000-0000-0000-0000-000000000003');
SELECT pgflow.start_flow('f', '{"order_id": "B"}', run_id => '00000000-0000-0000-0000-000000000004');
SELECT pgflow.emit_event('payment_received', '"B"', '1');
SELECT pgflow.emit_event('payment_received', '"B"', '2');
SELECT pg_temp.finish_prep(4);
SELECT pg_temp.finish_prep(3);
SELECT is(pg_temp.status(4) || ' ' || pg_temp.status(3), 'completed:1 completed:2',
          'kept events are consumed in emit order');

-- retention: an event older than pgflow.event_retention is not consumed
SELECT pgflow.start_flow('f', '{"order_id": "C"}', run_id => '00000000-0000-0000-0000-000000000005');
SELECT pgflow.emit_event('payment_received', '"C"', '{}');
UPDATE pgflow.events SET emitted_at = now() - interval '2 hours' WHERE event_key = '"C"';
SELECT set_config('pgflow.event_retention', '1 hour', true);
SELECT pg_temp.finish_prep(5);
SELECT is(pg_temp.status(5), 'started', 'an event past pgflow.event_retention is not consumed');
SELECT set_config('pgflow.event_retention', 'soon', true);
SELECT pgflow.start_flow('f', '{"order_id": "D"}', run_id => '00000000-0000-0000-0000-000000000006');
SELECT throws_ok($$SELECT pg_temp.finish_prep(6)$$, '22023',
                 'pgflow.event_retention must be an interval >= 0, got "soon"',
                 'an invalid retention setting is refused with its value');

SELECT * FROM finish();
ROLLBACK;
