-- Argument validation shared by the definition functions.  Each helper raises
-- a clear error (SQLSTATE 22004 for NULL, 22023 for a bad value) naming the
-- argument, the offending value and how to fix it.

-- _check_slug: raises unless slug is a valid flow or step slug.
-- Rule (same in the Python tool): 1-128 chars, a letter then letters, digits
-- or underscores; "run" is reserved.  A flow slug may name a version of a
-- flow: <name>@N with N >= 2 (version 1 is the plain name).  Locks nothing.
CREATE FUNCTION pgflow._check_slug(kind text, slug text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_problem text;
    v_name text := slug;
BEGIN
    IF slug IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', kind
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass a slug such as ''my_flow''';
    END IF;
    IF kind = 'flow slug' AND strpos(slug, '@') > 0 THEN
        IF slug ~ '^[^@]+@[1-9][0-9]{0,8}$' AND substring(slug FROM '@([0-9]+)$')::integer >= 2 THEN
            v_name := split_part(slug, '@', 1);
        ELSE
            v_problem := 'a version is written "@" and a whole number >= 2 (version 1 is the plain name)';
        END IF;
    END IF;
    v_problem := coalesce(v_problem, CASE
        WHEN v_name = '' THEN 'it is empty'
        WHEN length(v_name) > 128 THEN format('it is %s characters long (at most 128)', length(v_name))
        WHEN v_name = 'run' THEN '"run" is reserved (it names the flow input in step inputs)'
        WHEN v_name !~ '^[a-zA-Z]' THEN 'it must start with a letter'
        WHEN v_name !~ '^[a-zA-Z][a-zA-Z0-9_]*$' THEN format(
            'character "%s" is not allowed',
            substring(v_name FROM '[^a-zA-Z0-9_]'))
    END);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid % "%": %', kind, left(slug, 200), v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'slugs are 1-128 characters: a letter, then letters, digits or underscores';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_slug(text, text) IS
    'raises 22004/22023 unless the value is a valid flow or step slug';

-- _check_option: raises unless value is NULL (when allowed) or >= minimum.
CREATE FUNCTION pgflow._check_option(name text, value integer, minimum integer, nullable boolean)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        IF NOT nullable THEN
            RAISE EXCEPTION '% must not be NULL', name
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = format('pass a number >= %s or leave the argument out for the default', minimum);
        END IF;
    ELSIF value < minimum THEN
        RAISE EXCEPTION '% must be >= %, got %', name, minimum, value
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('pass %s => %s or more', name, minimum);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_option(text, integer, integer, boolean) IS
    'raises 22004/22023 unless an option value is NULL (if allowed) or >= its minimum';

-- _check_choice: raises unless value is one of choices.
CREATE FUNCTION pgflow._check_choice(name text, value text, choices text[])
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('pass one of: %s', array_to_string(choices, ', '));
    ELSIF NOT value = ANY (choices) THEN
        RAISE EXCEPTION 'invalid % "%"', name, left(value, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('pass one of: %s', array_to_string(choices, ', '));
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_choice(text, text, text[]) IS
    'raises 22004/22023 unless a mode argument is one of the allowed values';

-- _check_pattern: raises unless pattern is NULL or a JSON object.
CREATE FUNCTION pgflow._check_pattern(name text, step_slug text, pattern jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pattern IS NOT NULL AND jsonb_typeof(pattern) <> 'object' THEN
        RAISE EXCEPTION '% of step "%" must be a JSON object, got %',
                name, step_slug, jsonb_typeof(pattern)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'patterns are matched with @> against the step input, e.g. {"run": {"kind": "a"}}';
    END IF;
END;
$$;

COMMENT ON FUNCTION pgflow._check_pattern(text, text, jsonb) IS
    'raises 22023 unless a condition pattern is NULL or a JSON object';
