-- Queue lookup, receipts, and the settlement that changes membership
-- (FIFO groups, deduplication keys, dead letters). The statements filled
-- in are the library's own, with $n bound to the prefixed variables and
-- now() to pb_now, the clock at the statement.

CREATE OR REPLACE FUNCTION @S@._pb_queue(p_name text) RETURNS @S@.queues
LANGUAGE plpgsql STABLE AS $f$
DECLARE
    q @S@.queues;
BEGIN
    PERFORM @S@._pb_name('queue name', p_name);
    SELECT * INTO q FROM @S@.queues WHERE name = p_name;
    IF NOT FOUND THEN
        PERFORM @S@._pb_fail('@UNKNOWN_QUEUE@', format('unknown queue %L', p_name));
    END IF;
    RETURN q;
END
$f$;

-- Receipts ("<message id>:<uuid>") as distinct (id, token) pairs, ordered.
-- One statement checks and sorts them all; only when one is bad does a loop
-- find the first, to name it.
CREATE OR REPLACE FUNCTION @S@._pb_receipts(p_receipts text[], OUT ids bigint[], OUT tokens text[])
LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE
    r text;
    bad boolean;
BEGIN
    IF p_receipts IS NULL THEN
        PERFORM @S@._pb_fail('@INVALID@', 'invalid receipt: must not be null');
    END IF;
    -- One receipt, the usual case, needs no statement: an id of at most
    -- 18 digits, not starting with 0, is one the full check accepts.
    IF cardinality(p_receipts) = 1 AND p_receipts[1] ~ @ONE_RECEIPT@ THEN
        ids := ARRAY[split_part(p_receipts[1], ':', 1)::bigint];
        tokens := ARRAY[lower(split_part(p_receipts[1], ':', 2))];
        RETURN;
    END IF;
    SELECT coalesce(array_agg(u.i ORDER BY u.i, u.t), '{}'), coalesce(array_agg(u.t ORDER BY u.i, u.t), '{}'),
           coalesce(bool_or(u.bad), false)
    INTO ids, tokens, bad
    FROM (SELECT DISTINCT v.bad, CASE WHEN NOT v.bad THEN split_part(v.x, ':', 1)::bigint END AS i,
                          CASE WHEN NOT v.bad THEN lower(split_part(v.x, ':', 2)) END AS t
          FROM (SELECT x, CASE WHEN x IS NULL OR x !~ ('^[0-9]{1,19}:' || @RECEIPT_TOKEN@) THEN true
                               ELSE split_part(x, ':', 1)::numeric NOT BETWEEN 1 AND 9223372036854775807 END AS bad
                FROM unnest(p_receipts) x) v) u;
    IF bad THEN
        FOREACH r IN ARRAY p_receipts LOOP
            IF r IS NULL
               OR r !~ ('^[0-9]{1,19}:' || @RECEIPT_TOKEN@)
               OR split_part(r, ':', 1)::numeric NOT BETWEEN 1 AND 9223372036854775807 THEN
                PERFORM @S@._pb_fail('@INVALID@', format('invalid receipt %L: expected <message id>:<uuid>', left(r, 100)));
            END IF;
        END LOOP;
    END IF;
END
$f$;

-- Refuses receipts not among the locked ids, naming them.
CREATE OR REPLACE FUNCTION @S@._pb_stale(p_ids bigint[], p_tokens text[], p_locked bigint[]) RETURNS void
LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM @S@._pb_fail('@STALE_RECEIPT@', 'stale receipt, not the current lease of its message: '
        || coalesce((SELECT string_agg(i || ':' || t, ', ' ORDER BY i, t)
                     FROM unnest(p_ids, p_tokens) AS u(i, t) WHERE i <> ALL(coalesce(p_locked, '{}'))), ''));
END
$f$;

-- Two receipts of one message cannot both be current: refuses those that are not.
CREATE OR REPLACE FUNCTION @S@._pb_refuse_duplicates(p_queue bigint, p_ids bigint[], p_tokens text[]) RETURNS void
LANGUAGE plpgsql AS $f$
BEGIN
    IF (SELECT count(DISTINCT i) FROM unnest(p_ids) i) = cardinality(p_ids) THEN
        RETURN;
    END IF;
    PERFORM @S@._pb_fail('@STALE_RECEIPT@', 'stale receipt, not the current lease of its message: '
        || coalesce((SELECT string_agg(u.i || ':' || u.t, ', ' ORDER BY u.i, u.t)
                     FROM unnest(p_ids, p_tokens) AS u(i, t)
                     WHERE NOT EXISTS (SELECT 1 FROM @S@.queue_messages m
                                       WHERE m.id = u.i AND m.queue_id = p_queue AND m.receipt::text = u.t)), ''));
END
$f$;

-- What messages leaving (or entering) queues change beside their rows:
-- their deduplication keys freed in `q` (`p_left_keys`, `p_left_ids`)
-- and taken in its dead-letter queue (`p_entered_*`), group sizes changed
-- by `p_deltas` per (`p_queues`, `p_groups`) with new heads where a group
-- lost its own, and NOTIFY for the queues in `p_wake` and those that got
-- a head. Settlements and takes end here.
CREATE OR REPLACE FUNCTION @S@._pb_membership(q @S@.queues, p_queues bigint[], p_groups text[], p_deltas integer[],
                                              p_left_keys text[], p_left_ids bigint[],
                                              p_entered_keys text[], p_entered_ids bigint[],
                                              p_wake bigint[]) RETURNS void
LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE
    pb_now timestamptz;
    dv_1 bigint := q.id; dv_2 text[] := p_left_keys; dv_3 bigint[] := p_left_ids;
    de_1 bigint := q.dead_letter_id; de_2 text[] := p_entered_keys; de_3 bigint[] := p_entered_ids;
    gd_1 bigint[]; gd_2 text[]; gd_3 integer[];
    gh_1 bigint[]; gh_2 text[];
    nt_1 text := @CHANNEL@; nt_2 bigint[]; nt_3 text := '';
    wake bigint[] := p_wake;
    v_q bigint;
BEGIN
    IF cardinality(dv_2) > 0 THEN
        @DEDUP_LEAVE@;
    END IF;
    IF cardinality(de_2) > 0 THEN
        @DEDUP_ENTER@;
    END IF;
    SELECT coalesce(array_agg(g.q ORDER BY g.q, g.k), '{}'), coalesce(array_agg(g.k ORDER BY g.q, g.k), '{}'),
           coalesce(array_agg(g.d ORDER BY g.q, g.k), '{}')
    INTO gd_1, gd_2, gd_3
    FROM (SELECT u.q, u.k, sum(u.d)::integer AS d FROM unnest(p_queues, p_groups, p_deltas) AS u(q, k, d)
          GROUP BY u.q, u.k HAVING sum(u.d) <> 0) g;
    IF cardinality(gd_1) > 0 THEN
        @GROUP_DELTAS@;
        gh_1 := gd_1; gh_2 := gd_2;
        pb_now := clock_timestamp();
        FOR v_q IN @GROUP_HEADS@ LOOP
            wake := wake || v_q;
        END LOOP;
    END IF;
    IF cardinality(wake) > 0 THEN
        SELECT array_agg(DISTINCT w ORDER BY w) INTO nt_2 FROM unnest(wake) w;
        pb_now := clock_timestamp();
        @NOTIFY@;
    END IF;
END
$f$;

-- The transactional settlement: locks the messages by receipt, then
-- acknowledges ('ack'), releases or dead-letters ('nack'), or
-- dead-letters ('expired') them, and fixes groups, keys and heads.
CREATE OR REPLACE FUNCTION @S@._pb_settle(q @S@.queues, p_ids bigint[], p_tokens text[], p_op text,
                                          p_delay bigint, p_error text) RETURNS void
LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE
    pb_now timestamptz;
    lk_1 bigint := q.id; lk_2 bigint[] := p_ids; lk_3 text[] := p_tokens;
    dl_1 bigint := q.id; dl_2 bigint[] := '{}'; dl_3 boolean := q.archive_retention_ms IS NOT NULL;
    rl_1 bigint := q.id; rl_2 bigint[] := '{}'; rl_3 bigint := p_delay; rl_4 bigint := q.backoff_max_ms;
    rl_5 bigint := q.backoff_base_ms; rl_6 text := p_error;
    br_1 bigint := q.id; br_2 bigint[] := '{}'; br_3 bigint := q.dead_letter_id; br_4 integer := q.max_attempts;
    br_5 text := CASE WHEN p_op = 'nack' THEN p_error END;
    br_6 text := CASE WHEN p_op = 'expired' THEN 'visibility timeout expired' END;
    dv_2 text[] := '{}'; dv_3 bigint[] := '{}';
    de_2 text[] := '{}'; de_3 bigint[] := '{}';
    locked bigint[] := '{}';
    ch_q bigint[] := '{}'; ch_g text[] := '{}'; ch_d integer[] := '{}';
    wake bigint[] := '{}';
    v_id bigint; v_att integer; v_grp text; v_key text; v_due boolean;
BEGIN
    pb_now := clock_timestamp();
    FOR v_id, v_att, v_grp IN @LOCK@ LOOP
        locked := locked || v_id;
        IF p_op = 'ack' THEN
            dl_2 := dl_2 || v_id;
        ELSIF p_op = 'nack' AND v_att < q.max_attempts THEN
            rl_2 := rl_2 || v_id;
        ELSE
            br_2 := br_2 || v_id;
        END IF;
    END LOOP;
    IF cardinality(locked) < cardinality(p_ids) THEN
        PERFORM @S@._pb_stale(p_ids, p_tokens, locked);
    END IF;
    IF cardinality(dl_2) > 0 THEN
        pb_now := clock_timestamp();
        FOR v_id, v_grp, v_key IN @DELETE@ LOOP
            IF v_grp IS NOT NULL THEN
                ch_q := ch_q || q.id; ch_g := ch_g || v_grp; ch_d := ch_d || -1;
            END IF;
            IF v_key IS NOT NULL THEN
                dv_2 := dv_2 || v_key; dv_3 := dv_3 || v_id;
            END IF;
        END LOOP;
    END IF;
    IF cardinality(rl_2) > 0 THEN
        pb_now := clock_timestamp();
        FOR v_due IN @RELEASE@ LOOP
            IF v_due THEN
                wake := wake || q.id;
            END IF;
        END LOOP;
    END IF;
    IF cardinality(br_2) > 0 THEN
        pb_now := clock_timestamp();
        FOR v_id, v_grp, v_key IN @BURY@ LOOP
            IF v_grp IS NOT NULL THEN
                ch_q := ch_q || q.id; ch_g := ch_g || v_grp; ch_d := ch_d || -1;
            END IF;
            IF v_key IS NOT NULL THEN
                dv_2 := dv_2 || v_key; dv_3 := dv_3 || v_id;
            END IF;
            IF q.dead_letter_id IS NOT NULL THEN
                IF v_grp IS NOT NULL THEN
                    ch_q := ch_q || q.dead_letter_id; ch_g := ch_g || v_grp; ch_d := ch_d || 1;
                END IF;
                IF v_key IS NOT NULL THEN
                    de_2 := de_2 || v_key; de_3 := de_3 || v_id;
                END IF;
                wake := wake || q.dead_letter_id;
            END IF;
        END LOOP;
    END IF;
    PERFORM @S@._pb_membership(q, ch_q, ch_g, ch_d, dv_2, dv_3, de_2, de_3, wake);
END
$f$;
