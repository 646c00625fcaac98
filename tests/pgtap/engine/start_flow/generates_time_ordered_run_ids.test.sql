BEGIN;
SELECT plan(5);

SELECT pgflow.create_flow('ids');
SELECT pgflow.add_step('ids', 'only');

CREATE TEMP TABLE ids AS
SELECT i, (pgflow.start_flow('ids', '{}')).run_id AS run_id
FROM generate_series(1, 50) AS i;

SELECT is(
    (SELECT count(*)::integer FROM ids WHERE substr(run_id::text, 15, 1) = '7'),
    50,
    'run ids are version-7 UUIDs'
);

SELECT is(
    (SELECT count(*)::integer FROM ids WHERE substr(run_id::text, 20, 1) IN ('8', '9', 'a', 'b')),
    50,
    'with the RFC 9562 variant bits'
);

SELECT ok(
    (SELECT bool_and(abs(extract(epoch FROM
             to_timestamp(('x' || left(replace(run_id::text, '-', ''), 12))::bit(48)::bigint / 1000.0)
             - clock_timestamp())) < 60)
     FROM ids),
    'their first 48 bits are the creation time in milliseconds'
);

SELECT is(
    (SELECT count(*)::integer FROM ids AS a JOIN ids AS b ON b.i = a.i + 1
     WHERE left(b.run_id::text, 13) < left(a.run_id::text, 13)),
    0,
    'later runs never sort before earlier ones (millisecond prefix)'
);

SELECT is(
    (SELECT count(DISTINCT run_id)::integer FROM ids),
    50,
    'and they are distinct within a millisecond'
);

SELECT * FROM finish();
ROLLBACK;
