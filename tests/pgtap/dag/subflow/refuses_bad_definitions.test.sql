BEGIN;
SELECT plan(9);

SELECT pgflow.create_flow('a');
SELECT pgflow.create_flow('b');
SELECT pgflow.create_flow('c');
SELECT pgflow.add_subflow_step('a', 'run_b', 'b');
SELECT pgflow.add_subflow_step('b', 'run_c', 'c');

SELECT throws_ok($$SELECT pgflow.add_subflow_step('a', 's', 'nope')$$, '42704',
                 'step "s" of flow "a": sub-flow "nope" does not exist',
                 'the sub-flow must exist');
SELECT throws_ok($$SELECT pgflow.add_subflow_step('a', 's', 'a')$$, '42P17',
                 'step "s" of flow "a" would close a cycle of sub-flows: a -> a',
                 'a flow cannot run itself');
SELECT throws_ok($$SELECT pgflow.add_subflow_step('c', 's', 'a')$$, '42P17',
                 'step "s" of flow "c" would close a cycle of sub-flows: c -> a -> b -> c',
                 'a longer cycle is refused with the cycle in the message');
-- through versions: c@2 running a closes c -> a -> b -> c (b runs c by name)
SELECT pgflow.create_flow('c', version => 2);
SELECT throws_ok($$SELECT pgflow.add_subflow_step('c@2', 's', 'a')$$, '42P17',
                 'step "s" of flow "c@2" would close a cycle of sub-flows: c -> a -> b -> c',
                 'cycles through another version of a flow are refused');
SELECT lives_ok($$SELECT pgflow.add_subflow_step('a', 'run_b', 'b')$$, 'add_subflow_step is idempotent');
SELECT throws_ok($$SELECT pgflow.add_subflow_step('a', 'run_b', 'c')$$, '42P17', NULL,
                 'another sub-flow for an existing step is refused');
SELECT pgflow.add_step('a', 'plain');
SELECT throws_ok($$SELECT pgflow.add_subflow_step('a', 'plain', 'b')$$, '42P17', NULL,
                 'an existing task step cannot become a sub-flow step');
SELECT throws_ok($$SELECT pgflow.delete_flow('b')$$, '2BP01',
                 'flow "b" is used as a sub-flow by step "run_b" of flow "a"',
                 'delete_flow refuses a flow another flow runs as a sub-flow');
SELECT throws_ok($$SELECT pgflow.add_subflow_step('a', 's', NULL)$$, '22004', NULL,
                 'a NULL sub-flow is refused');

SELECT * FROM finish();
ROLLBACK;
