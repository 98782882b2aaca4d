-- Producing to a topic inside the caller's transaction: the outbox for
-- any language. The records are visible if and only if that transaction
-- commits; offsets stay gap-free because the partition's row lock,
-- taken first, is held until it ends.

-- Kafka's murmur2 (seed 0x9747b28c), over 32-bit words kept in bigints.
CREATE OR REPLACE FUNCTION @S@._pb_murmur2(p_data bytea) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $f$
DECLARE
    m CONSTANT bigint := 1540483477;
    mask CONSTANT bigint := 4294967295;
    len integer := length(p_data);
    h bigint := 2538058380 # (len::bigint & mask);
    k bigint;
    i integer := 0;
BEGIN
    WHILE i + 4 <= len LOOP
        k := get_byte(p_data, i)::bigint | (get_byte(p_data, i + 1)::bigint << 8)
             | (get_byte(p_data, i + 2)::bigint << 16) | (get_byte(p_data, i + 3)::bigint << 24);
        k := (k * m) & mask;
        k := k # (k >> 24);
        k := (k * m) & mask;
        h := (h * m) & mask;
        h := h # k;
        i := i + 4;
    END LOOP;
    IF len - i >= 3 THEN
        h := h # (get_byte(p_data, i + 2)::bigint << 16);
    END IF;
    IF len - i >= 2 THEN
        h := h # (get_byte(p_data, i + 1)::bigint << 8);
    END IF;
    IF len - i >= 1 THEN
        h := h # get_byte(p_data, i)::bigint;
        h := (h * m) & mask;
    END IF;
    h := h # (h >> 13);
    h := (h * m) & mask;
    h := h # (h >> 15);
    RETURN (CASE WHEN h >= 2147483648 THEN h - 4294967296 ELSE h END)::integer;
END
$f$;

-- The partition Kafka's default partitioner picks for a key.
CREATE OR REPLACE FUNCTION @S@.partition_for_key(key bytea, partitions integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$
    SELECT ((@S@._pb_murmur2(key)::bigint & 2147483647) % greatest(partitions, 1))::integer
$f$;

-- Creates the segments a partition lacks below p_at_least, inside the
-- caller's transaction, under the partition's segment lock.
CREATE OR REPLACE FUNCTION @S@._pb_create_segments(p_partition bigint, p_at_least bigint) RETURNS void
LANGUAGE plpgsql AS $f$
DECLARE
    size bigint;
    seg_end bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgbroker.segments'), hashtext(p_partition::text));
    SELECT t.segment_records,
           (SELECT coalesce(max(s.end_offset), p.next_offset) FROM @S@.segments s WHERE s.partition_id = p.id)
    INTO size, seg_end
    FROM @S@.partitions p JOIN @S@.topics t ON t.id = p.topic_id WHERE p.id = p_partition;
    WHILE seg_end < p_at_least LOOP
        PERFORM @S@._pb_add_segment(p_partition, seg_end, seg_end + size);
        seg_end := seg_end + size;
    END LOOP;
END
$f$;

CREATE OR REPLACE FUNCTION @S@._pb_produce(p_topic text, p_partition integer, p_keys bytea[], p_values bytea[],
                                           p_headers jsonb[])
RETURNS TABLE (ord integer, partition integer, "offset" bigint)
LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE
    pb_now timestamptz;
    topic_id bigint;
    max_bytes integer;
    compacted boolean;
    pids bigint[];
    n integer := cardinality(p_values);
    hs jsonb[] := '{}';
    targets integer[] := '{}';
    sticky integer;
    p integer;
    idx integer[];
    size bigint;
    i integer;
    ol_1 bigint;
    pr_1 bigint; pr_2 bigint; pr_3 timestamptz[]; pr_4 bytea[]; pr_5 bytea[]; pr_6 jsonb[];
    pr_7 text := @CHANNEL@; pr_8 text := '';
    v_next bigint; v_end bigint; v_a boolean; v_b boolean; v_base bigint; v_void text;
BEGIN
    PERFORM @S@._pb_name('topic name', p_topic);
    IF p_values IS NULL THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid values: must not be null');
    END IF;
    IF (p_keys IS NOT NULL AND cardinality(p_keys) <> n) OR (p_headers IS NOT NULL AND cardinality(p_headers) <> n) THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid batch: keys and headers need one entry per value');
    END IF;
    SELECT t.id, t.max_message_bytes, t.cleanup_policy LIKE 'compact%', array_agg(x.id ORDER BY x.partition)
    INTO topic_id, max_bytes, compacted, pids
    FROM @S@.topics t JOIN @S@.partitions x ON x.topic_id = t.id
    WHERE t.name = p_topic GROUP BY t.id, t.max_message_bytes, t.cleanup_policy;
    IF topic_id IS NULL THEN
        PERFORM @S@._pb_fail('@UNKNOWN_TOPIC@', format('unknown topic %L', p_topic));
    END IF;
    IF p_partition IS NOT NULL AND (p_partition < 0 OR p_partition >= cardinality(pids)) THEN
        PERFORM @S@._pb_fail('@UNKNOWN_PARTITION@', format('unknown partition %s of topic %L, which has %s',
            p_partition, p_topic, cardinality(pids)));
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    sticky := floor(random() * cardinality(pids))::integer;
    FOR i IN 1 .. n LOOP
        IF compacted AND p_keys[i] IS NULL THEN
            PERFORM @S@._pb_fail('@INVALID@', format('topic %s is compacted: every record needs a key', p_topic));
        END IF;
        hs := hs || @S@._pb_headers(p_headers[i]);
        size := coalesce(octet_length(p_keys[i]), 0) + coalesce(octet_length(p_values[i]), 0)
                + @S@._pb_headers_size(hs[i]);
        IF size > max_bytes THEN
            PERFORM @S@._pb_fail('@TOO_LARGE@', format('record too large: %s bytes, the topic %L takes at most %s',
                size, p_topic, max_bytes));
        END IF;
        targets := targets || coalesce(p_partition,
            CASE WHEN p_keys[i] IS NULL THEN sticky ELSE @S@.partition_for_key(p_keys[i], cardinality(pids)) END);
    END LOOP;
    -- Partitions in order, as the library takes them: two producers
    -- never wait for each other's locks in a cycle.
    FOR p IN SELECT DISTINCT t FROM unnest(targets) t ORDER BY 1 LOOP
        SELECT array_agg(o::integer ORDER BY o) INTO idx FROM unnest(targets) WITH ORDINALITY AS u(t, o) WHERE u.t = p;
        ol_1 := pids[p + 1];
        pb_now := clock_timestamp();
        FOR v_next, v_end, v_a, v_b IN @OUTBOX_LOCK@ LOOP
        END LOOP;
        IF v_end < v_next + cardinality(idx) THEN
            PERFORM @S@._pb_create_segments(ol_1, v_next + cardinality(idx));
        END IF;
        pr_1 := ol_1;
        pr_2 := cardinality(idx);
        pr_3 := array_fill(NULL::timestamptz, ARRAY[cardinality(idx)]);
        SELECT array_agg(p_keys[j] ORDER BY j), array_agg(p_values[j] ORDER BY j), array_agg(hs[j] ORDER BY j)
        INTO pr_4, pr_5, pr_6 FROM unnest(idx) j;
        v_base := NULL;
        pb_now := clock_timestamp();
        FOR v_base, v_end, v_void IN @PRODUCE@ LOOP
        END LOOP;
        IF v_base IS NULL THEN
            PERFORM @S@._pb_fail('@UNKNOWN_TOPIC@', format('unknown topic %L', p_topic));
        END IF;
        RETURN QUERY SELECT j::integer, p, v_base + k - 1 FROM unnest(idx) WITH ORDINALITY AS u(j, k);
    END LOOP;
END
$f$;

-- The public produce functions are PL/pgSQL, whose plans are kept per
-- session; a LANGUAGE sql function's are made again on every call.
CREATE OR REPLACE FUNCTION @S@.produce_batch(topic text, "values" bytea[], keys bytea[] DEFAULT NULL,
                                             headers jsonb[] DEFAULT NULL, to_partition integer DEFAULT NULL)
RETURNS TABLE (partition integer, "offset" bigint)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
BEGIN
    RETURN QUERY SELECT r.partition, r."offset" FROM @S@._pb_produce(topic, to_partition, keys, "values", headers) r
        ORDER BY r.ord;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.produce_batch(topic text, "values" text[], keys text[] DEFAULT NULL,
                                             headers jsonb[] DEFAULT NULL, to_partition integer DEFAULT NULL)
RETURNS TABLE (partition integer, "offset" bigint)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
BEGIN
    RETURN QUERY SELECT r.partition, r."offset" FROM @S@._pb_produce(topic, to_partition,
        (SELECT array_agg(convert_to(k, 'UTF8') ORDER BY o) FROM unnest(keys) WITH ORDINALITY AS u(k, o)),
        (SELECT array_agg(convert_to(v, 'UTF8') ORDER BY o) FROM unnest("values") WITH ORDINALITY AS u(v, o)),
        headers) r ORDER BY r.ord;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.produce(topic text, value bytea, key bytea DEFAULT NULL, headers jsonb DEFAULT NULL,
                                       to_partition integer DEFAULT NULL)
RETURNS TABLE (partition integer, "offset" bigint)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
BEGIN
    RETURN QUERY SELECT r.partition, r."offset"
        FROM @S@._pb_produce(topic, to_partition, ARRAY[key], ARRAY[value], ARRAY[headers]) r;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.produce(topic text, value text, key text DEFAULT NULL, headers jsonb DEFAULT NULL,
                                       to_partition integer DEFAULT NULL)
RETURNS TABLE (partition integer, "offset" bigint)
LANGUAGE plpgsql SECURITY DEFINER @PINNED@ AS $f$
BEGIN
    RETURN QUERY SELECT r.partition, r."offset" FROM @S@._pb_produce(topic, to_partition, ARRAY[convert_to(key, 'UTF8')],
        ARRAY[convert_to(value, 'UTF8')], ARRAY[headers]) r;
END
$f$;

-- Lets a role call the functions above without rights on the tables.
CREATE OR REPLACE FUNCTION @S@.grant_api(role regrole) RETURNS void
LANGUAGE plpgsql AS $f$
DECLARE
    f regprocedure;
    who name := (SELECT rolname FROM pg_roles WHERE oid = role);
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', @SCHEMA_LITERAL@, who);
    FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = @SCHEMA_LITERAL@::regnamespace
                                          AND p.proname = ANY(@API@) LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, who);
    END LOOP;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.revoke_api(role regrole) RETURNS void
LANGUAGE plpgsql AS $f$
DECLARE
    f regprocedure;
    who name := (SELECT rolname FROM pg_roles WHERE oid = role);
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = @SCHEMA_LITERAL@::regnamespace
                                          AND p.proname = ANY(@API@) LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', f, who);
    END LOOP;
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM %I', @SCHEMA_LITERAL@, who);
END
$f$;
