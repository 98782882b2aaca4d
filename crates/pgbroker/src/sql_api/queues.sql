-- The queue functions. Each public one is SECURITY DEFINER with its
-- search_path pinned, so that a role granted EXECUTE needs no rights on
-- the tables; the overloads that only convert an argument are plain SQL
-- that calls one of them, so that the planner inlines them.
--
-- Each call is a few statements: the queue's row by name (its name is
-- checked only when no queue has it: a name in the table is valid), the
-- library's statement, and on the uncommon paths the settlement. Checks
-- that pass are expressions on variables, not statements; helpers that
-- name what is wrong run when one fails.

-- Functions of earlier versions that the ones below absorbed.
DROP FUNCTION IF EXISTS @S@._pb_claim(@S@.queues, integer, bigint, bigint);
DROP FUNCTION IF EXISTS @S@._pb_send(@S@.queues, bytea[], jsonb[], smallint[], bigint[], timestamptz[], text[],
                                     text[]);

-- Checks one message as the library's Message::validate does; returns its delay in ms.
CREATE OR REPLACE FUNCTION @S@._pb_check_message(q @S@.queues, p_body bytea, p_headers jsonb, p_priority integer,
                                                 p_delay interval, p_deliver_at timestamptz, p_dedup text,
                                                 p_group text) RETURNS bigint
LANGUAGE plpgsql AS $f$
DECLARE
    d bigint;
    size bigint;
BEGIN
    IF p_body IS NULL THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid body: must not be null');
    END IF;
    IF p_priority IS NULL OR p_priority < 0 OR p_priority > @MAX_PRIORITY@ THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid priority: %s is not between 0 and @MAX_PRIORITY@',
            coalesce(p_priority::text, 'NULL')));
    END IF;
    IF p_delay IS NOT NULL THEN
        IF p_deliver_at IS NOT NULL THEN
            PERFORM @S@._pb_fail('@INVALID@', 'invalid delay: give a delay or a delivery time, not both');
        END IF;
        d := @S@._pb_ms('delay', p_delay, 0, @MAX_DELAY_MS@);
    END IF;
    IF p_deliver_at > clock_timestamp() + @MAX_DELAY_MS@ * interval '1 millisecond' THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid delivery time: %s is more than %s from now',
            p_deliver_at, @MAX_DELAY_MS@ * interval '1 millisecond'));
    END IF;
    IF p_dedup IS NOT NULL THEN
        PERFORM @S@._pb_key('deduplication key', p_dedup);
    END IF;
    IF p_group IS NOT NULL THEN
        PERFORM @S@._pb_key('group key', p_group);
    END IF;
    size := octet_length(p_body);
    IF p_headers IS NOT NULL THEN
        size := size + @S@._pb_headers_size(p_headers);
    END IF;
    IF size > q.max_message_bytes THEN
        PERFORM @S@._pb_fail('@TOO_LARGE@', format('message too large: %s bytes, the queue %L takes at most %s',
            size, q.name, q.max_message_bytes));
    END IF;
    RETURN d;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send_batch(queue text, bodies bytea[], delay interval DEFAULT NULL,
                                          deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                          dedup_keys text[] DEFAULT NULL, group_keys text[] DEFAULT NULL,
                                          headers jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    n integer := cardinality(bodies);
    i integer;
    d bigint;
    pb_now timestamptz;
    sd_1 bigint; sd_2 bytea[] := bodies; sd_3 jsonb[]; sd_4 smallint[]; sd_5 bigint[]; sd_6 timestamptz[];
    sd_7 text[]; sd_8 text[];
    sd_9 text := @CHANNEL@; sd_10 text := '';
    v_ord bigint; v_n bigint; v_void text;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    IF bodies IS NULL THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid bodies: must not be null');
    END IF;
    IF (dedup_keys IS NOT NULL AND cardinality(dedup_keys) <> n) OR (group_keys IS NOT NULL AND cardinality(group_keys) <> n)
       OR (headers IS NOT NULL AND cardinality(headers) <> n) THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid batch: dedup_keys, group_keys and headers need one entry per body');
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    -- The checks of _pb_check_message, on the whole batch at once when
    -- the options common to all pass and no body has headers. Otherwise,
    -- or when some body fails, each body in turn, so that the first bad
    -- one is named, as the library does.
    IF headers IS NULL AND priority BETWEEN 0 AND @MAX_PRIORITY@ AND (delay IS NULL OR deliver_at IS NULL)
       AND (delay IS NULL OR extract(epoch FROM delay) * 1000 BETWEEN 0 AND @MAX_DELAY_MS@)
       AND (deliver_at IS NULL OR deliver_at <= clock_timestamp() + @MAX_DELAY_MS@ * interval '1 millisecond')
       AND (SELECT bool_and(b IS NOT NULL AND octet_length(b) <= q.max_message_bytes) FROM unnest(bodies) b)
       AND (dedup_keys IS NULL OR (SELECT bool_and(k IS NULL OR (octet_length(k) BETWEEN 1 AND @MAX_KEY_BYTES@
                                                                  AND k !~ @KEY_CONTROL@))
                                   FROM unnest(dedup_keys) k))
       AND (group_keys IS NULL OR (SELECT bool_and(k IS NULL OR (octet_length(k) BETWEEN 1 AND @MAX_KEY_BYTES@
                                                                  AND k !~ @KEY_CONTROL@))
                                   FROM unnest(group_keys) k)) THEN
        d := @S@._pb_ms('delay', delay, 0, @MAX_DELAY_MS@);
        sd_3 := array_fill(NULL::jsonb, ARRAY[n]);
        sd_5 := array_fill(d, ARRAY[n]);
    ELSE
        sd_3 := '{}'; sd_5 := '{}';
        FOR i IN 1 .. n LOOP
            sd_3 := sd_3 || @S@._pb_headers(headers[i]);
            sd_5 := sd_5 || @S@._pb_check_message(q, bodies[i], sd_3[i], priority, delay, deliver_at, dedup_keys[i],
                                                  group_keys[i]);
        END LOOP;
    END IF;
    sd_1 := q.id;
    sd_4 := array_fill(priority::smallint, ARRAY[n]);
    sd_6 := array_fill(deliver_at, ARRAY[n]);
    IF coalesce(cardinality(array_remove(dedup_keys, NULL)), 0) = 0
       AND coalesce(cardinality(array_remove(group_keys, NULL)), 0) = 0 THEN
        pb_now := clock_timestamp();
        FOR v_ord, id, duplicate, v_void IN @SEND_PLAIN@ LOOP
            RETURN NEXT;
        END LOOP;
    ELSE
        sd_7 := coalesce(dedup_keys, array_fill(NULL::text, ARRAY[n]));
        sd_8 := coalesce(group_keys, array_fill(NULL::text, ARRAY[n]));
        pb_now := clock_timestamp();
        FOR v_ord, id, duplicate, v_n, v_void IN @SEND@ LOOP
            RETURN NEXT;
        END LOOP;
    END IF;
    IF NOT FOUND THEN
        PERFORM @S@._pb_fail('@UNKNOWN_QUEUE@', format('unknown queue %L', q.name));
    END IF;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send_batch(queue text, bodies text[], delay interval DEFAULT NULL,
                                          deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                          dedup_keys text[] DEFAULT NULL, group_keys text[] DEFAULT NULL,
                                          headers jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql AS $f$
BEGIN
    RETURN QUERY SELECT * FROM @S@.send_batch(queue, (SELECT pg_catalog.array_agg(pg_catalog.convert_to(b, 'UTF8') ORDER BY o)
                                                      FROM pg_catalog.unnest(bodies) WITH ORDINALITY AS u(b, o)),
                                              delay, deliver_at, priority, dedup_keys, group_keys, headers);
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send_batch(queue text, bodies jsonb[], delay interval DEFAULT NULL,
                                          deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                          dedup_keys text[] DEFAULT NULL, group_keys text[] DEFAULT NULL,
                                          headers jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql AS $f$
BEGIN
    RETURN QUERY SELECT * FROM @S@.send_batch(queue, (SELECT pg_catalog.array_agg(pg_catalog.convert_to(b::text, 'UTF8') ORDER BY o)
                                                      FROM pg_catalog.unnest(bodies) WITH ORDINALITY AS u(b, o)),
                                              delay, deliver_at, priority, dedup_keys, group_keys, headers);
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send(queue text, body bytea, delay interval DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                    dedup_key text DEFAULT NULL, group_key text DEFAULT NULL,
                                    headers jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER @PINNED_LEAN@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    d bigint;
    h jsonb;
    pb_now timestamptz;
    so_1 bigint; so_2 bytea := body; so_3 jsonb; so_4 smallint; so_5 bigint; so_6 timestamptz := deliver_at;
    so_7 text; so_8 text;
    so_9 text := @CHANNEL@; so_10 text := '';
    sd_1 bigint; sd_2 bytea[]; sd_3 jsonb[]; sd_4 smallint[]; sd_5 bigint[]; sd_6 timestamptz[];
    sd_7 text[]; sd_8 text[];
    sd_9 text := @CHANNEL@; sd_10 text := '';
    v_ord bigint; v_id bigint; v_dup boolean; v_n bigint; v_void text;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    -- A plain message that fits passes every check of _pb_check_message.
    IF (headers IS NULL AND delay IS NULL AND deliver_at IS NULL AND dedup_key IS NULL AND group_key IS NULL
        AND priority BETWEEN 0 AND @MAX_PRIORITY@ AND octet_length(body) <= q.max_message_bytes) IS NOT TRUE THEN
        IF headers IS NOT NULL THEN
            h := @S@._pb_headers(headers);
        END IF;
        d := @S@._pb_check_message(q, body, h, priority, delay, deliver_at, dedup_key, group_key);
    END IF;
    -- One row at most: into variables, without a cursor.
    IF dedup_key IS NULL AND group_key IS NULL THEN
        so_1 := q.id; so_3 := h; so_4 := priority; so_5 := d;
        pb_now := clock_timestamp();
        @SEND_ONE@
        INTO v_id, v_void;
    ELSE
        sd_1 := q.id; sd_2 := ARRAY[body]; sd_3 := ARRAY[h]; sd_4 := ARRAY[priority::smallint]; sd_5 := ARRAY[d];
        sd_6 := ARRAY[deliver_at]; sd_7 := ARRAY[dedup_key]; sd_8 := ARRAY[group_key];
        pb_now := clock_timestamp();
        @SEND@
        INTO v_ord, v_id, v_dup, v_n, v_void;
    END IF;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    PERFORM @S@._pb_fail('@UNKNOWN_QUEUE@', format('unknown queue %L', q.name));
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send(queue text, body text, delay interval DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                    dedup_key text DEFAULT NULL, group_key text DEFAULT NULL,
                                    headers jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $f$
    SELECT @S@.send(queue, pg_catalog.convert_to(body, 'UTF8'), delay, deliver_at, priority, dedup_key, group_key,
                    headers)
$f$;

CREATE OR REPLACE FUNCTION @S@.send(queue text, body jsonb, delay interval DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                    dedup_key text DEFAULT NULL, group_key text DEFAULT NULL,
                                    headers jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $f$
    SELECT @S@.send(queue, pg_catalog.convert_to(body::text, 'UTF8'), delay, deliver_at, priority, dedup_key,
                    group_key, headers)
$f$;

-- Claims, and while a long poll finds nothing, sleeps and claims again.
-- Rows come in the library's order: priority first, then id.
CREATE OR REPLACE FUNCTION @S@.receive(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL,
                                       wait interval DEFAULT NULL)
RETURNS TABLE (id bigint, receipt text, attempt integer, enqueued_at timestamptz, lease_expires_at timestamptz,
               priority integer, group_key text, dedup_key text, last_error text, dead_letter_source text,
               dead_letter_attempts integer, headers jsonb, body bytea)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    lease bigint;
    waited bigint := 0;
    pb_now timestamptz;
    cl_1 bigint; cl_2 bigint; cl_3 bigint; cl_4 integer;
    cl_5 bigint := @REAP_LEASE_MS@;
    deadline timestamptz;
    sync text;
    got integer;
    next_due bigint;
    x_ids bigint[];
    x_tokens text[];
    c_relaxed text; c_next_due bigint;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    IF visibility_timeout IS NOT NULL THEN
        lease := @S@._pb_ms('visibility timeout', visibility_timeout, 1, @MAX_VISIBILITY_TIMEOUT_MS@);
    END IF;
    IF wait IS NOT NULL THEN
        waited := @S@._pb_ms('wait', wait, 0, @MAX_WAIT_MS@);
    END IF;
    IF max IS NULL OR max < 1 OR max > @MAX_RECEIVE@ THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid max messages: %s is not between 1 and @MAX_RECEIVE@',
            coalesce(max::text, 'NULL')));
    END IF;
    cl_1 := q.id; cl_2 := max; cl_3 := coalesce(lease, q.visibility_timeout_ms); cl_4 := q.max_attempts;
    -- One message without waiting, the usual worker's call: the claim of
    -- one message, without its next-due answer, into the result row. It
    -- leaves the commit of the caller's transaction as it is.
    IF cl_2 = 1 AND waited = 0 THEN
        pb_now := clock_timestamp();
        @CLAIM_ONE@
        INTO id, receipt, attempt, enqueued_at, lease_expires_at, priority, group_key, dedup_key, last_error,
             dead_letter_source, dead_letter_attempts, headers, body;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF attempt > q.max_attempts THEN
            PERFORM @S@._pb_settle(q, ARRAY[id], ARRAY[receipt], 'expired', NULL, NULL);
            RETURN;
        END IF;
        receipt := id || ':' || receipt;
        RETURN NEXT;
        RETURN;
    END IF;
    sync := current_setting('synchronous_commit');
    deadline := clock_timestamp() + waited * interval '1 millisecond';
    LOOP
        got := 0; next_due := NULL; x_ids := '{}'; x_tokens := '{}';
        pb_now := clock_timestamp();
        -- Straight into the result columns: per row, only what differs
        -- from the claim's answer is computed.
        FOR id, receipt, attempt, enqueued_at, lease_expires_at, priority, group_key, dedup_key, last_error,
            dead_letter_source, dead_letter_attempts, headers, body, c_relaxed, c_next_due
            IN @CLAIM@ ORDER BY priority DESC, id LOOP
            IF id IS NULL THEN
                next_due := c_next_due;
            ELSIF attempt > q.max_attempts THEN
                x_ids := x_ids || id; x_tokens := x_tokens || receipt;
            ELSE
                receipt := id || ':' || receipt;
                got := got + 1;
                RETURN NEXT;
            END IF;
        END LOOP;
        -- The claim relaxes the commit of its own transaction; here the
        -- transaction is the caller's.
        PERFORM set_config('synchronous_commit', sync, true);
        IF cardinality(x_ids) > 0 THEN
            SELECT array_agg(i ORDER BY i, t), array_agg(t ORDER BY i, t) INTO x_ids, x_tokens
            FROM unnest(x_ids, x_tokens) AS u(i, t);
            PERFORM @S@._pb_settle(q, x_ids, x_tokens, 'expired', NULL, NULL);
        END IF;
        EXIT WHEN got > 0 OR clock_timestamp() >= deadline;
        PERFORM pg_sleep(least(extract(epoch FROM deadline - clock_timestamp()),
                               @POLL_MS@ / 1000.0,
                               greatest(coalesce(next_due, @POLL_MS@), 5) / 1000.0));
    END LOOP;
END
$f$;

-- take's general way: any number of messages, a queue that archives, and
-- a message out of attempts, which is not taken but dead-lettered, as a
-- receive would. Its statement's generic plan costs `LIMIT $n` as a tenth
-- of the rows, hence the settings that turn JIT off.
CREATE OR REPLACE FUNCTION @S@._pb_take(queue text, max integer)
RETURNS TABLE (id bigint, attempt integer, enqueued_at timestamptz, priority integer, group_key text,
               dedup_key text, last_error text, dead_letter_source text, dead_letter_attempts integer,
               headers jsonb, body bytea)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    pb_now timestamptz;
    tk_1 bigint; tk_2 bigint; tk_3 boolean; tk_4 integer;
    v_taken boolean := false;
    v_receipt text;
    x_ids bigint[] := '{}'; x_tokens text[] := '{}';
    g_keys text[] := '{}'; d_keys text[] := '{}'; d_ids bigint[] := '{}';
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    IF max IS NULL OR max < 1 OR max > @MAX_RECEIVE@ THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid max messages: %s is not between 1 and @MAX_RECEIVE@',
            coalesce(max::text, 'NULL')));
    END IF;
    pb_now := clock_timestamp();
    tk_1 := q.id; tk_2 := max; tk_3 := q.archive_retention_ms IS NOT NULL; tk_4 := q.max_attempts;
    IF max = 1 THEN
        -- One row at most: into variables, without a cursor.
        @TAKE@
        INTO id, v_receipt, attempt, enqueued_at, priority, group_key, dedup_key, last_error, dead_letter_source,
             dead_letter_attempts, headers, body;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF v_receipt IS NOT NULL THEN
            x_ids := ARRAY[id]; x_tokens := ARRAY[v_receipt];
        ELSE
            v_taken := true;
        END IF;
    END IF;
    IF v_taken THEN
        RETURN NEXT;
        IF group_key IS NOT NULL THEN
            g_keys := ARRAY[group_key];
        END IF;
        IF dedup_key IS NOT NULL THEN
            d_keys := ARRAY[dedup_key]; d_ids := ARRAY[id];
        END IF;
    ELSIF max > 1 THEN
        FOR id, v_receipt, attempt, enqueued_at, priority, group_key, dedup_key, last_error, dead_letter_source,
            dead_letter_attempts, headers, body IN @TAKE@ ORDER BY priority DESC, id LOOP
            IF v_receipt IS NOT NULL THEN
                x_ids := x_ids || id; x_tokens := x_tokens || v_receipt;
                CONTINUE;
            END IF;
            IF group_key IS NOT NULL THEN
                g_keys := g_keys || group_key;
            END IF;
            IF dedup_key IS NOT NULL THEN
                d_keys := d_keys || dedup_key; d_ids := d_ids || id;
            END IF;
            RETURN NEXT;
        END LOOP;
    END IF;
    IF cardinality(g_keys) > 0 OR cardinality(d_keys) > 0 THEN
        PERFORM @S@._pb_membership(q, array_fill(q.id, ARRAY[cardinality(g_keys)]), g_keys,
                                   array_fill(-1, ARRAY[cardinality(g_keys)]), d_keys, d_ids, '{}', '{}', '{}');
    END IF;
    IF cardinality(x_ids) > 0 THEN
        SELECT array_agg(i ORDER BY i, t), array_agg(t ORDER BY i, t) INTO x_ids, x_tokens
        FROM unnest(x_ids, x_tokens) AS u(i, t);
        PERFORM @S@._pb_settle(q, x_ids, x_tokens, 'expired', NULL, NULL);
    END IF;
END
$f$;

-- Claims and deletes in the caller's transaction: a commit acknowledges,
-- a rollback leaves the messages as they were. Rows come in the library's
-- order. One message from a queue without an archive is taken the lean
-- way: picked, then deleted from its own partition; the rest, and a
-- message out of attempts, goes the general way of _pb_take.
CREATE OR REPLACE FUNCTION @S@.take(queue text, max integer DEFAULT 1)
RETURNS TABLE (id bigint, attempt integer, enqueued_at timestamptz, priority integer, group_key text,
               dedup_key text, last_error text, dead_letter_source text, dead_letter_attempts integer,
               headers jsonb, body bytea)
LANGUAGE plpgsql SECURITY DEFINER @PINNED_LEAN@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    pb_now timestamptz;
    to_1 bigint; to_2 bigint; to_3 integer; to_4 tid;
    v_slot smallint;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF max = 1 AND FOUND AND q.archive_retention_ms IS NULL THEN
        pb_now := clock_timestamp();
        to_1 := q.id; to_3 := q.max_attempts;
        @TAKE_ONE_PICK@
        INTO to_2, v_slot, to_4;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF v_slot = 0 THEN
            @TAKE_ONE_FROM_0@
            INTO id, attempt, enqueued_at, priority, group_key, dedup_key, last_error, dead_letter_source,
                 dead_letter_attempts, headers, body;
        ELSE
            @TAKE_ONE_FROM_1@
            INTO id, attempt, enqueued_at, priority, group_key, dedup_key, last_error, dead_letter_source,
                 dead_letter_attempts, headers, body;
        END IF;
        IF FOUND THEN
            RETURN NEXT;
            -- Its group moves on and its key is freed, as in _pb_take.
            IF group_key IS NOT NULL OR dedup_key IS NOT NULL THEN
                PERFORM @S@._pb_membership(q, array_remove(ARRAY[CASE WHEN group_key IS NOT NULL THEN q.id END], NULL),
                                           array_remove(ARRAY[group_key], NULL),
                                           array_remove(ARRAY[CASE WHEN group_key IS NOT NULL THEN -1 END], NULL),
                                           array_remove(ARRAY[dedup_key], NULL),
                                           array_remove(ARRAY[CASE WHEN dedup_key IS NOT NULL THEN id END], NULL),
                                           '{}', '{}', '{}');
            END IF;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM @S@._pb_take(queue, max);
END
$f$;

CREATE OR REPLACE FUNCTION @S@.ack(queue text, receipts text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    r record;
    pb_now timestamptz;
    ak_1 bigint; ak_2 bigint[]; ak_3 text[]; ak_4 boolean;
    v_ok boolean; v_locked bigint[]; v_void text;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    r := @S@._pb_receipts(receipts);
    ak_2 := r.ids; ak_3 := r.tokens;
    IF cardinality(ak_2) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(ak_2) > 1 THEN
        PERFORM @S@._pb_refuse_duplicates(q.id, ak_2, ak_3);
    END IF;
    ak_1 := q.id; ak_4 := q.archive_retention_ms IS NOT NULL;
    pb_now := clock_timestamp();
    FOR v_ok, v_locked IN @ACK@ LOOP
        IF v_ok THEN
            RETURN;
        END IF;
        IF cardinality(v_locked) < cardinality(ak_2) THEN
            PERFORM @S@._pb_stale(ak_2, ak_3, v_locked);
        END IF;
    END LOOP;
    PERFORM @S@._pb_settle(q, ak_2, ak_3, 'ack', NULL, NULL);
END
$f$;

-- One receipt: the current lease of a message in no FIFO group, the usual
-- case, is one statement. Anything else (an unknown queue, a malformed or
-- stale receipt, a group to settle) changes nothing there and goes the
-- way of the array form, which refuses or settles as the library does.
CREATE OR REPLACE FUNCTION @S@.ack(queue text, receipt text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    ao_1 bigint; ao_2 bigint; ao_3 text; ao_4 boolean;
    dv_1 bigint; dv_2 text[]; dv_3 bigint[];
    v_n bigint; v_key text;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF FOUND AND receipt ~ @ONE_RECEIPT@ THEN
        ao_1 := q.id; ao_2 := split_part(receipt, ':', 1)::bigint; ao_3 := lower(split_part(receipt, ':', 2));
        ao_4 := q.archive_retention_ms IS NOT NULL;
        IF ao_4 THEN
            @ACK_ONE@
            INTO v_n;
            IF v_n = 1 THEN
                RETURN;
            END IF;
        ELSE
            -- Without an archive: the delete alone, then the message's
            -- deduplication key, if it had one.
            @ACK_ONE_PLAIN@
            INTO v_key;
            IF FOUND THEN
                IF v_key IS NOT NULL THEN
                    dv_1 := q.id; dv_2 := ARRAY[v_key]; dv_3 := ARRAY[ao_2];
                    @DEDUP_LEAVE@;
                END IF;
                RETURN;
            END IF;
        END IF;
    END IF;
    PERFORM @S@.ack(queue, ARRAY[receipt]);
END
$f$;

CREATE OR REPLACE FUNCTION @S@.nack(queue text, receipts text[], delay interval DEFAULT NULL, error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    r record;
    pb_now timestamptz;
    nk_1 bigint; nk_2 bigint[]; nk_3 text[]; nk_4 bigint; nk_5 integer; nk_6 bigint; nk_7 text; nk_8 bigint;
    nk_9 text := @CHANNEL@; nk_10 text := '';
    v_ok boolean; v_locked bigint[]; v_void text;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    IF delay IS NOT NULL THEN
        nk_4 := @S@._pb_ms('delay', delay, 0, @MAX_DELAY_MS@);
    END IF;
    r := @S@._pb_receipts(receipts);
    nk_2 := r.ids; nk_3 := r.tokens;
    IF cardinality(nk_2) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(nk_2) > 1 THEN
        PERFORM @S@._pb_refuse_duplicates(q.id, nk_2, nk_3);
    END IF;
    nk_1 := q.id; nk_5 := q.max_attempts; nk_6 := q.backoff_max_ms; nk_8 := q.backoff_base_ms;
    nk_7 := error;
    IF octet_length(nk_7) > @MAX_ERROR_BYTES@ THEN
        nk_7 := left(nk_7, @MAX_ERROR_BYTES@);
        WHILE octet_length(nk_7) > @MAX_ERROR_BYTES@ LOOP
            nk_7 := left(nk_7, length(nk_7) - greatest(1, (octet_length(nk_7) - @MAX_ERROR_BYTES@) / 4));
        END LOOP;
    END IF;
    pb_now := clock_timestamp();
    FOR v_ok, v_locked, v_void IN @NACK@ LOOP
        IF v_ok THEN
            RETURN;
        END IF;
        IF cardinality(v_locked) < cardinality(nk_2) THEN
            PERFORM @S@._pb_stale(nk_2, nk_3, v_locked);
        END IF;
    END LOOP;
    PERFORM @S@._pb_settle(q, nk_2, nk_3, 'nack', nk_4, nk_7);
END
$f$;

CREATE OR REPLACE FUNCTION @S@.nack(queue text, receipt text, delay interval DEFAULT NULL, error text DEFAULT NULL)
RETURNS void
LANGUAGE sql AS $f$
    SELECT @S@.nack(queue, ARRAY[receipt], delay, error)
$f$;

CREATE OR REPLACE FUNCTION @S@.extend(queue text, receipts text[], by interval)
RETURNS TABLE (receipt text, lease_expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    r record;
    pb_now timestamptz;
    ex_1 bigint; ex_2 bigint[]; ex_3 text[];
    ex_4 bigint;
    ex_5 bigint := @MAX_VISIBILITY_TIMEOUT_MS@;
    v_ok boolean; v_locked bigint[]; v_updated bigint[]; v_ends timestamptz[];
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    ex_4 := @S@._pb_ms('extension', by, 1, @MAX_VISIBILITY_TIMEOUT_MS@);
    IF ex_4 IS NULL THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid extension: must not be null');
    END IF;
    r := @S@._pb_receipts(receipts);
    ex_2 := r.ids; ex_3 := r.tokens;
    IF cardinality(ex_2) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(ex_2) > 1 THEN
        PERFORM @S@._pb_refuse_duplicates(q.id, ex_2, ex_3);
    END IF;
    ex_1 := q.id;
    pb_now := clock_timestamp();
    FOR v_ok, v_locked, v_updated, v_ends IN @EXTEND@ LOOP
        IF NOT v_ok THEN
            PERFORM @S@._pb_stale(ex_2, ex_3, v_locked);
        END IF;
        RETURN QUERY SELECT x.i || ':' || x.t, e.at
            FROM unnest(ex_2, ex_3) AS x(i, t) JOIN unnest(v_updated, v_ends) AS e(i, at) ON e.i = x.i
            ORDER BY x.i;
    END LOOP;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.extend(queue text, receipt text, by interval) RETURNS timestamptz
LANGUAGE plpgsql AS $f$
BEGIN
    RETURN (SELECT e.lease_expires_at FROM @S@.extend(queue, ARRAY[receipt], by) e);
END
$f$;

CREATE OR REPLACE FUNCTION @S@.stats(queue text)
RETURNS TABLE (ready bigint, in_flight bigint, delayed bigint, dead_lettered bigint, oldest_ready_age_ms bigint,
               maintained_at timestamptz, maintenance_overdue boolean)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues;
    pb_now timestamptz;
    st_1 bigint;
    v_age bigint;
BEGIN
    SELECT * INTO q FROM @S@.queues x WHERE x.name = queue;
    IF NOT FOUND THEN
        q := @S@._pb_queue(queue);
    END IF;
    st_1 := q.id;
    pb_now := clock_timestamp();
    FOR ready, in_flight, delayed, dead_lettered, v_age IN @STATS@ LOOP
        oldest_ready_age_ms := greatest(v_age, 0);
    END LOOP;
    SELECT x.maintained_at INTO maintained_at FROM @S@.queue_rotation x;
    maintenance_overdue := maintained_at IS NULL
        OR maintained_at < clock_timestamp() - @MAINTENANCE_OVERDUE_MS@ * interval '1 millisecond';
    RETURN NEXT;
END
$f$;
