-- The queue functions. Each public one is SECURITY DEFINER with its
-- search_path pinned, so that a role granted EXECUTE needs no rights on
-- the tables.

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
    IF p_delay IS NOT NULL AND p_deliver_at IS NOT NULL THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid delay: give a delay or a delivery time, not both');
    END IF;
    d := @S@._pb_ms('delay', p_delay, 0, @MAX_DELAY_MS@);
    IF p_deliver_at > clock_timestamp() + @MAX_DELAY_MS@ * interval '1 millisecond' THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid delivery time: %s is more than %s from now',
            p_deliver_at, @MAX_DELAY_MS@ * interval '1 millisecond'));
    END IF;
    PERFORM @S@._pb_key('deduplication key', p_dedup);
    PERFORM @S@._pb_key('group key', p_group);
    size := octet_length(p_body) + @S@._pb_headers_size(p_headers);
    IF size > q.max_message_bytes THEN
        PERFORM @S@._pb_fail('@TOO_LARGE@', format('message too large: %s bytes, the queue %L takes at most %s',
            size, q.name, q.max_message_bytes));
    END IF;
    RETURN d;
END
$f$;

CREATE OR REPLACE FUNCTION @S@._pb_send(q @S@.queues, p_bodies bytea[], p_headers jsonb[], p_priorities smallint[],
                                        p_delays bigint[], p_deliver_at timestamptz[], p_dedup text[],
                                        p_groups text[])
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE
    pb_now timestamptz := clock_timestamp();
    sd_1 bigint := q.id; sd_2 bytea[] := p_bodies; sd_3 jsonb[] := p_headers; sd_4 smallint[] := p_priorities;
    sd_5 bigint[] := p_delays; sd_6 timestamptz[] := p_deliver_at; sd_7 text[]; sd_8 text[];
    sd_9 text := @CHANNEL@; sd_10 text := '';
    v_ord bigint; v_id bigint; v_dup boolean; v_n bigint; v_void text;
BEGIN
    IF (SELECT bool_and(k IS NULL) FROM unnest(p_dedup) k) IS NOT FALSE
       AND (SELECT bool_and(g IS NULL) FROM unnest(p_groups) g) IS NOT FALSE THEN
        FOR v_ord, v_id, v_dup, v_void IN @SEND_PLAIN@ LOOP
            id := v_id; duplicate := false;
            RETURN NEXT;
        END LOOP;
    ELSE
        sd_7 := p_dedup; sd_8 := p_groups;
        FOR v_ord, v_id, v_dup, v_n, v_void IN @SEND@ LOOP
            id := v_id; duplicate := v_dup;
            RETURN NEXT;
        END LOOP;
    END IF;
    IF NOT FOUND THEN
        PERFORM @S@._pb_fail('@UNKNOWN_QUEUE@', format('unknown queue %L', q.name));
    END IF;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send_batch(queue text, bodies bytea[], delay interval DEFAULT NULL,
                                          deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                          dedup_keys text[] DEFAULT NULL, group_keys text[] DEFAULT NULL,
                                          headers jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
DECLARE
    q @S@.queues := @S@._pb_queue(queue);
    n integer := cardinality(bodies);
    hs jsonb[] := '{}';
    ds bigint[] := '{}';
    i integer;
BEGIN
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
    FOR i IN 1 .. n LOOP
        hs := hs || @S@._pb_headers(headers[i]);
        ds := ds || @S@._pb_check_message(q, bodies[i], hs[i], priority, delay, deliver_at, dedup_keys[i], group_keys[i]);
    END LOOP;
    RETURN QUERY SELECT * FROM @S@._pb_send(q, bodies, hs, array_fill(priority::smallint, ARRAY[n]), ds,
        array_fill(deliver_at, ARRAY[n]), coalesce(dedup_keys, array_fill(NULL::text, ARRAY[n])),
        coalesce(group_keys, array_fill(NULL::text, ARRAY[n])));
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send_batch(queue text, bodies text[], delay interval DEFAULT NULL,
                                          deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                          dedup_keys text[] DEFAULT NULL, group_keys text[] DEFAULT NULL,
                                          headers jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE sql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
    SELECT * FROM @S@.send_batch(queue, (SELECT array_agg(convert_to(b, 'UTF8') ORDER BY o)
                                         FROM unnest(bodies) WITH ORDINALITY AS u(b, o)),
                                 delay, deliver_at, priority, dedup_keys, group_keys, headers)
$f$;

CREATE OR REPLACE FUNCTION @S@.send_batch(queue text, bodies jsonb[], delay interval DEFAULT NULL,
                                          deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                          dedup_keys text[] DEFAULT NULL, group_keys text[] DEFAULT NULL,
                                          headers jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE sql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
    SELECT * FROM @S@.send_batch(queue, (SELECT array_agg(convert_to(b::text, 'UTF8') ORDER BY o)
                                         FROM unnest(bodies) WITH ORDINALITY AS u(b, o)),
                                 delay, deliver_at, priority, dedup_keys, group_keys, headers)
$f$;

CREATE OR REPLACE FUNCTION @S@.send(queue text, body bytea, delay interval DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                    dedup_key text DEFAULT NULL, group_key text DEFAULT NULL,
                                    headers jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
DECLARE
    q @S@.queues := @S@._pb_queue(queue);
    h jsonb := @S@._pb_headers(headers);
    d bigint := @S@._pb_check_message(q, body, h, priority, delay, deliver_at, dedup_key, group_key);
BEGIN
    RETURN (SELECT s.id FROM @S@._pb_send(q, ARRAY[body], ARRAY[h], ARRAY[priority::smallint], ARRAY[d],
                                          ARRAY[deliver_at], ARRAY[dedup_key], ARRAY[group_key]) s);
END
$f$;

CREATE OR REPLACE FUNCTION @S@.send(queue text, body text, delay interval DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                    dedup_key text DEFAULT NULL, group_key text DEFAULT NULL,
                                    headers jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
    SELECT @S@.send(queue, convert_to(body, 'UTF8'), delay, deliver_at, priority, dedup_key, group_key, headers)
$f$;

CREATE OR REPLACE FUNCTION @S@.send(queue text, body jsonb, delay interval DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL, priority integer DEFAULT 0,
                                    dedup_key text DEFAULT NULL, group_key text DEFAULT NULL,
                                    headers jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
    SELECT @S@.send(queue, convert_to(body::text, 'UTF8'), delay, deliver_at, priority, dedup_key, group_key,
                    headers)
$f$;

-- One claim, and long-poll rounds of it: rows in claim order.
CREATE OR REPLACE FUNCTION @S@._pb_claim(q @S@.queues, p_max integer, p_lease bigint, p_wait bigint)
RETURNS TABLE (id bigint, receipt text, attempt integer, enqueued_at timestamptz, lease_expires_at timestamptz,
               priority integer, group_key text, dedup_key text, last_error text, dead_letter_source text,
               dead_letter_attempts integer, headers jsonb, body bytea)
LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE
    pb_now timestamptz;
    cl_1 bigint := q.id; cl_2 bigint := p_max; cl_3 bigint := p_lease; cl_4 integer := q.max_attempts;
    cl_5 bigint := @REAP_LEASE_MS@;
    deadline timestamptz := clock_timestamp() + p_wait * interval '1 millisecond';
    sync text := current_setting('synchronous_commit');
    got integer;
    next_due bigint;
    x_ids bigint[];
    x_tokens text[];
    c_id bigint; c_receipt text; c_attempts integer; c_enqueued timestamptz; c_visible timestamptz;
    c_priority smallint; c_group text; c_dedup text; c_error text; c_source text; c_dead_attempts integer;
    c_headers jsonb; c_body bytea; c_relaxed text; c_next_due bigint;
BEGIN
    LOOP
        got := 0; next_due := NULL; x_ids := '{}'; x_tokens := '{}';
        pb_now := clock_timestamp();
        FOR c_id, c_receipt, c_attempts, c_enqueued, c_visible, c_priority, c_group, c_dedup, c_error, c_source,
            c_dead_attempts, c_headers, c_body, c_relaxed, c_next_due IN @CLAIM@ LOOP
            IF c_id IS NULL THEN
                next_due := c_next_due;
            ELSIF c_attempts > q.max_attempts THEN
                x_ids := x_ids || c_id; x_tokens := x_tokens || c_receipt;
            ELSE
                id := c_id; receipt := c_id || ':' || c_receipt; attempt := c_attempts;
                enqueued_at := c_enqueued; lease_expires_at := c_visible; priority := c_priority;
                group_key := c_group; dedup_key := c_dedup; last_error := c_error;
                dead_letter_source := c_source; dead_letter_attempts := c_dead_attempts;
                headers := c_headers; body := c_body;
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

CREATE OR REPLACE FUNCTION @S@.receive(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL,
                                       wait interval DEFAULT NULL)
RETURNS TABLE (id bigint, receipt text, attempt integer, enqueued_at timestamptz, lease_expires_at timestamptz,
               priority integer, group_key text, dedup_key text, last_error text, dead_letter_source text,
               dead_letter_attempts integer, headers jsonb, body bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
DECLARE
    q @S@.queues := @S@._pb_queue(queue);
    lease bigint := @S@._pb_ms('visibility timeout', visibility_timeout, 1, @MAX_VISIBILITY_TIMEOUT_MS@);
    waited bigint := @S@._pb_ms('wait', wait, 0, @MAX_WAIT_MS@);
BEGIN
    IF max IS NULL OR max < 1 OR max > @MAX_RECEIVE@ THEN
        PERFORM @S@._pb_fail('@INVALID@', format('invalid max messages: %s is not between 1 and @MAX_RECEIVE@',
            coalesce(max::text, 'NULL')));
    END IF;
    RETURN QUERY SELECT * FROM @S@._pb_claim(q, max, coalesce(lease, q.visibility_timeout_ms), coalesce(waited, 0)) c
        ORDER BY c.priority DESC, c.id;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.ack(queue text, receipts text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues := @S@._pb_queue(queue);
    pb_now timestamptz;
    ak_1 bigint := q.id; ak_2 bigint[]; ak_3 text[]; ak_4 boolean := q.archive_retention_ms IS NOT NULL;
    v_ok boolean; v_locked bigint[]; v_void text;
BEGIN
    SELECT * INTO ak_2, ak_3 FROM @S@._pb_receipts(receipts);
    IF cardinality(ak_2) = 0 THEN
        RETURN;
    END IF;
    PERFORM @S@._pb_refuse_duplicates(q.id, ak_2, ak_3);
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

CREATE OR REPLACE FUNCTION @S@.ack(queue text, receipt text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
    SELECT @S@.ack(queue, ARRAY[receipt])
$f$;

CREATE OR REPLACE FUNCTION @S@.nack(queue text, receipts text[], delay interval DEFAULT NULL, error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues := @S@._pb_queue(queue);
    pb_now timestamptz;
    nk_1 bigint := q.id; nk_2 bigint[]; nk_3 text[];
    nk_4 bigint := @S@._pb_ms('delay', delay, 0, @MAX_DELAY_MS@);
    nk_5 integer := q.max_attempts; nk_6 bigint := q.backoff_max_ms; nk_7 text; nk_8 bigint := q.backoff_base_ms;
    nk_9 text := @CHANNEL@; nk_10 text := '';
    v_ok boolean; v_locked bigint[]; v_void text;
BEGIN
    SELECT * INTO nk_2, nk_3 FROM @S@._pb_receipts(receipts);
    IF cardinality(nk_2) = 0 THEN
        RETURN;
    END IF;
    PERFORM @S@._pb_refuse_duplicates(q.id, nk_2, nk_3);
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
LANGUAGE sql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
    SELECT @S@.nack(queue, ARRAY[receipt], delay, error)
$f$;

CREATE OR REPLACE FUNCTION @S@.extend(queue text, receipts text[], by interval)
RETURNS TABLE (receipt text, lease_expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues := @S@._pb_queue(queue);
    pb_now timestamptz;
    ex_1 bigint := q.id; ex_2 bigint[]; ex_3 text[];
    ex_4 bigint := @S@._pb_ms('extension', by, 1, @MAX_VISIBILITY_TIMEOUT_MS@);
    ex_5 bigint := @MAX_VISIBILITY_TIMEOUT_MS@;
    v_ok boolean; v_locked bigint[]; v_updated bigint[]; v_ends timestamptz[];
BEGIN
    IF ex_4 IS NULL THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid extension: must not be null');
    END IF;
    SELECT * INTO ex_2, ex_3 FROM @S@._pb_receipts(receipts);
    IF cardinality(ex_2) = 0 THEN
        RETURN;
    END IF;
    PERFORM @S@._pb_refuse_duplicates(q.id, ex_2, ex_3);
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
LANGUAGE sql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
    SELECT e.lease_expires_at FROM @S@.extend(queue, ARRAY[receipt], by) e
$f$;

CREATE OR REPLACE FUNCTION @S@.stats(queue text)
RETURNS TABLE (ready bigint, in_flight bigint, delayed bigint, dead_lettered bigint, oldest_ready_age_ms bigint,
               maintained_at timestamptz, maintenance_overdue boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @S@, pg_temp AS $f$
#variable_conflict use_column
DECLARE
    q @S@.queues := @S@._pb_queue(queue);
    pb_now timestamptz := clock_timestamp();
    st_1 bigint := q.id;
    v_age bigint;
BEGIN
    FOR ready, in_flight, delayed, dead_lettered, v_age IN @STATS@ LOOP
        oldest_ready_age_ms := greatest(v_age, 0);
    END LOOP;
    SELECT x.maintained_at INTO maintained_at FROM @S@.queue_rotation x;
    maintenance_overdue := maintained_at IS NULL
        OR maintained_at < clock_timestamp() - @MAINTENANCE_OVERDUE_MS@ * interval '1 millisecond';
    RETURN NEXT;
END
$f$;
