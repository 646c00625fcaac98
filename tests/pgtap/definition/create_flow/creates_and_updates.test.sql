BEGIN;
SELECT plan(10);

SELECT is(
    (SELECT (f.flow_slug, f.opt_max_attempts, f.opt_base_delay, f.opt_timeout)::text
     FROM pgflow.create_flow('orders') AS f),
    '(orders,3,1,60)',
    'create_flow uses the defaults 3 / 1 / 60'
);
SELECT is((SELECT count(*) FROM pgflow.flows WHERE flow_slug = 'orders'), 1::bigint,
          'create_flow inserts one row');

SELECT is(
    (SELECT xmin::text FROM pgflow.flows WHERE flow_slug = 'orders'),
    (SELECT f.xmin::text FROM pgflow.create_flow('orders') AS r
     JOIN pgflow.flows AS f USING (flow_slug)),
    'create_flow with the same arguments writes nothing'
);

SELECT is(
    (SELECT (f.opt_max_attempts, f.opt_base_delay, f.opt_timeout)::text
     FROM pgflow.create_flow('orders', max_attempts => 5, base_delay => 2, timeout => 30) AS f),
    '(5,2,30)',
    'create_flow updates tunables of an existing flow in place'
);
SELECT is((SELECT opt_timeout FROM pgflow.flows WHERE flow_slug = 'orders'), 30,
          'the updated tunables are stored');
SELECT is(
    (SELECT opt_max_attempts FROM pgflow.create_flow('orders') AS f), 3,
    'omitted tunables mean their defaults on a re-run'
);

SELECT is((SELECT opt_step_events FROM pgflow.create_flow('evented', step_events => true)),
          true, 'step_events opts a flow in to step events');
SELECT is((SELECT opt_step_events FROM pgflow.flows WHERE flow_slug = 'orders'), false,
          'step events are off by default');

SELECT lives_ok($$SELECT pgflow.create_flow(repeat('a', 128))$$,
                'a 128-character slug is accepted');
SELECT lives_ok($$SELECT pgflow.create_flow('A_b9_')$$,
                'letters, digits and underscores after a leading letter are accepted');

SELECT * FROM finish();
ROLLBACK;
