-- Checks shared by the SQL functions. sql_api/mod.rs fills in the
-- placeholders: the quoted schema, the library's limits and SQLSTATEs.

CREATE OR REPLACE FUNCTION @S@._pb_fail(p_code text, p_message text) RETURNS void
LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = 'pgbroker: ' || p_message;
END
$f$;

-- A queue or topic name: 1 to 249 characters from [A-Za-z0-9._-], not . or ..
CREATE OR REPLACE FUNCTION @S@._pb_name(p_what text, p_name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
    IF p_name IS NULL THEN
        PERFORM @S@._pb_fail('@INVALID_NAME@', format('invalid %s: must not be null', p_what));
    ELSIF length(p_name) < 1 OR length(p_name) > 249 THEN
        PERFORM @S@._pb_fail('@INVALID_NAME@',
            format('invalid %s: must be 1 to 249 characters long, got %s', p_what, length(p_name)));
    ELSIF p_name IN ('.', '..') THEN
        PERFORM @S@._pb_fail('@INVALID_NAME@', format('invalid %s: cannot be ''.'' or ''..''', p_what));
    ELSIF p_name !~ '^[A-Za-z0-9._-]+$' THEN
        PERFORM @S@._pb_fail('@INVALID_NAME@',
            format('invalid %s %L: use letters, digits, ''.'', ''_'' and ''-''', p_what, left(p_name, 100)));
    END IF;
    RETURN p_name;
END
$f$;

-- Milliseconds of a duration checked to lie in [p_lo, p_hi] ms; NULL stays NULL.
CREATE OR REPLACE FUNCTION @S@._pb_ms(p_what text, p_d interval, p_lo bigint, p_hi bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE
    v numeric;
BEGIN
    IF p_d IS NULL THEN
        RETURN NULL;
    END IF;
    v := extract(epoch FROM p_d) * 1000;
    IF v < p_lo OR v > p_hi THEN
        PERFORM @S@._pb_fail('@INVALID@',
            format('invalid %s: %s is not between %s ms and %s ms', p_what, p_d, p_lo, p_hi));
    END IF;
    RETURN trunc(v)::bigint;
END
$f$;

-- Headers as stored (an array of {"key": text, "value": base64 or null}),
-- from a JSON object of text values or from that array form; NULL when none.
CREATE OR REPLACE FUNCTION @S@._pb_headers(p_h jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE
    e jsonb;
BEGIN
    IF p_h IS NULL OR p_h = 'null'::jsonb OR p_h = '{}'::jsonb OR p_h = '[]'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_h) = 'object' THEN
        RETURN (SELECT jsonb_agg(jsonb_build_object('key', x.key, 'value',
                    CASE jsonb_typeof(x.value)
                        WHEN 'null' THEN NULL
                        WHEN 'string' THEN translate(encode(convert_to(x.value #>> '{}', 'UTF8'), 'base64'), E'\n', '')
                        ELSE translate(encode(convert_to(x.value::text, 'UTF8'), 'base64'), E'\n', '') END)
                    ORDER BY x.key)
                FROM jsonb_each(p_h) x);
    END IF;
    IF jsonb_typeof(p_h) = 'array' THEN
        FOR e IN SELECT * FROM jsonb_array_elements(p_h) LOOP
            IF jsonb_typeof(e) <> 'object' OR jsonb_typeof(e -> 'key') IS DISTINCT FROM 'string'
               OR jsonb_typeof(e -> 'value') NOT IN ('string', 'null')
               OR (e ->> 'value') !~ '^[A-Za-z0-9+/]*={0,2}$'
               OR length(e ->> 'value') % 4 <> 0 THEN
                PERFORM @S@._pb_fail('@INVALID@',
                    'invalid headers: each entry must be {"key": text, "value": base64 text or null}');
            END IF;
        END LOOP;
        RETURN p_h;
    END IF;
    PERFORM @S@._pb_fail('@INVALID@',
        'invalid headers: give a JSON object of text values, or an array of {"key", "value"} entries');
    RETURN NULL;
END
$f$;

-- Bytes headers (as stored) count against a maximum message size.
-- PL/pgSQL, whose plan is kept per session: a LANGUAGE sql function called
-- from PL/pgSQL is planned again in every transaction.
CREATE OR REPLACE FUNCTION @S@._pb_headers_size(p_h jsonb) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
    IF p_h IS NULL THEN
        RETURN 0;
    END IF;
    RETURN (SELECT coalesce(sum(octet_length(e ->> 'key') + coalesce(length(decode(e ->> 'value', 'base64')), 0)), 0)
            FROM jsonb_array_elements(p_h) e);
END
$f$;

-- A deduplication or group key: 1 to @MAX_KEY_BYTES@ bytes, no control characters.
CREATE OR REPLACE FUNCTION @S@._pb_key(p_what text, p_key text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
    IF p_key IS NULL THEN
        RETURN;
    END IF;
    IF octet_length(p_key) < 1 OR octet_length(p_key) > @MAX_KEY_BYTES@ THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid %s: must be 1 to @MAX_KEY_BYTES@ bytes long, got %s',
            p_what, octet_length(p_key)));
    END IF;
    IF p_key ~ @KEY_CONTROL@ THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid %s: control characters are not allowed', p_what));
    END IF;
END
$f$;
