BEGIN;
SELECT plan(7);

SELECT pgflow.create_flow('f');
SELECT pgflow.add_step('f', 'a');
SELECT pgflow.create_flow('g');
SELECT pgflow.add_step('g', 'a');

SELECT throws_ok($$SELECT pgflow.start_flow('x', '{}')$$, '42704',
    'flow "x" does not exist', 'an unknown flow is refused');
SELECT throws_ok($$SELECT pgflow.start_flow('f', NULL)$$, '22004',
    'input must not be NULL', 'a NULL input is refused');
SELECT throws_ok($$SELECT pgflow.start_flow(NULL, '{}')$$, '22004',
    'flow slug must not be NULL', 'a NULL flow slug is refused');
SELECT throws_ok($$SELECT pgflow.start_flow('bad slug', '{}')$$, '22023',
    'invalid flow slug "bad slug": character " " is not allowed', 'an invalid flow slug is refused');

SELECT pgflow.start_flow('f', '{}', run_id => '00000000-0000-0000-0000-000000000001');
SELECT throws_ok(
    $$SELECT pgflow.start_flow('g', '{}', run_id => '00000000-0000-0000-0000-000000000001')$$,
    '23505',
    'run 00000000-0000-0000-0000-000000000001 already exists for flow "f", not "g"',
    'a run_id already used by another flow is refused'
);
SELECT is(
    (SELECT (r.flow_slug, r.status)::text FROM pgflow.runs AS r),
    '(f,started)',
    'the refused call leaves the existing run alone and creates no run'
);
SELECT is(
    (SELECT count(*) FROM pgflow.step_tasks WHERE flow_slug = 'g'),
    0::bigint,
    'refused calls queue no task'
);

SELECT * FROM finish();
ROLLBACK;
