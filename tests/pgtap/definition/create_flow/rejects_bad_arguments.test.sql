BEGIN;
SELECT plan(13);

SELECT throws_ok($$SELECT pgflow.create_flow(NULL)$$, '22004',
    'flow slug must not be NULL', 'a NULL slug is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('')$$, '22023',
    'invalid flow slug "": it is empty', 'an empty slug is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow(repeat('a', 129))$$, '22023',
    'invalid flow slug "' || repeat('a', 129) || '": it is 129 characters long (at most 128)',
    'a 129-character slug is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('9lives')$$, '22023',
    'invalid flow slug "9lives": it must start with a letter', 'a leading digit is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('_x')$$, '22023',
    'invalid flow slug "_x": it must start with a letter', 'a leading underscore is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('has space')$$, '22023',
    'invalid flow slug "has space": character " " is not allowed', 'a space is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('caf' || chr(233))$$, '22023',
    'invalid flow slug "caf' || chr(233) || '": character "' || chr(233) || '" is not allowed',
    'a non-ASCII letter is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('run')$$, '22023',
    'invalid flow slug "run": "run" is reserved (it names the flow input in step inputs)',
    'the reserved slug run is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('f', max_attempts => 0)$$, '22023',
    'max_attempts must be >= 1, got 0', 'max_attempts below 1 is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('f', base_delay => 0)$$, '22023',
    'base_delay must be >= 1, got 0', 'base_delay below 1 is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('f', timeout => 2)$$, '22023',
    'timeout must be >= 3, got 2', 'timeout below 3 is rejected');
SELECT throws_ok($$SELECT pgflow.create_flow('f', max_attempts => NULL)$$, '22004',
    'max_attempts must not be NULL', 'a NULL flow option is rejected');

SELECT is((SELECT count(*) FROM pgflow.flows), 0::bigint, 'no rejected call leaves a row');

SELECT * FROM finish();
ROLLBACK;
