BEGIN;
SELECT plan(7);

-- A whole-definition migration ends with check_flow_steps: a step the
-- database has that the migration lacks is refused (create_flow and add_step
-- alone cannot see it), and so is a listed step the database lacks.
SELECT pgflow.create_flow('whole');
SELECT pgflow.add_step('whole', 'a');
SELECT pgflow.add_step('whole', 'b', ARRAY['a']);
SELECT pgflow.add_step('whole', 'notify', ARRAY['b']);

SELECT is((pgflow.check_flow_steps('whole', ARRAY['a', 'b', 'notify'])).flow_slug, 'whole',
          'the same step list passes and returns the flow');
SELECT is((pgflow.check_flow_steps('whole', ARRAY['notify', 'a', 'b'])).flow_slug, 'whole',
          'in any order');
SELECT throws_ok($$SELECT pgflow.check_flow_steps('whole', ARRAY['a', 'b'])$$, '42P17',
    'flow "whole" (version 1) has another structure than this migration: the database has step "notify", which the migration lacks',
    'a removed step is refused, naming it');
SELECT throws_ok($$SELECT pgflow.check_flow_steps('whole', ARRAY['a', 'b', 'notify', 'extra'])$$, '42P17',
    'flow "whole" (version 1) has another structure than this migration: the migration lists step "extra", which the database lacks',
    'a listed step the definition lacks is refused');

CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v = PG_EXCEPTION_HINT;
    RETURN v;
END $$;
SELECT is(pg_temp.hint_of($$SELECT pgflow.check_flow_steps('whole', ARRAY['a'])$$),
    'a step cannot be removed from a definition; define the next version: version: 2 in the spec (pgflow-build writes it), or pgflow.create_flow(''whole'', version => 2)',
    'the hint says which version to define');
SELECT throws_ok($$SELECT pgflow.check_flow_steps('nope', ARRAY['a'])$$, '42704', NULL,
                 'an unknown flow is refused');
SELECT throws_ok($$SELECT pgflow.check_flow_steps('whole', NULL)$$, '22004', NULL,
                 'a NULL list is refused');

SELECT * FROM finish();
ROLLBACK;
