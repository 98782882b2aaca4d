-- The log in two levels. `records` is partitioned by partition_id into
-- buckets of 64 consecutive partition ids, and each bucket by
-- (partition_id, offset) into segments. Attaching a segment costs time in
-- proportion to the partitions its parent already has, and dropping one
-- locks its parent: under one flat parent both grew with every segment of
-- every topic, so creating a topic of many partitions took quadratic time
-- and every retention drop briefly stopped every producer. Under a bucket
-- they touch at most the segments of 64 partitions. Runs with search_path
-- set to pgbroker's own schema.

ALTER TABLE records RENAME TO records_flat;
ALTER INDEX records_pkey RENAME TO records_flat_pkey;

CREATE TABLE records (
    partition_id   bigint NOT NULL,
    "offset"       bigint NOT NULL,
    ts             timestamptz NOT NULL,
    key            bytea,
    value          bytea,
    headers        jsonb,
    producer_id    bigint,
    producer_epoch smallint,
    control        boolean,
    PRIMARY KEY (partition_id, "offset")
) PARTITION BY RANGE (partition_id);

-- The bucket partition `p_partition`'s segments belong in, created when
-- missing; returns its table name. Bucket creation is serialised on an
-- advisory lock, and a bucket that a concurrent caller created first is
-- taken as it is.
CREATE FUNCTION _pb_record_bucket(p_partition bigint) RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
DECLARE
    width CONSTANT bigint := 64;
    k bigint := div(p_partition, width);
    tbl text := 'records_b' || k;
BEGIN
    IF p_partition < 0 THEN
        RAISE EXCEPTION 'invalid partition id %', p_partition USING ERRCODE = '22023';
    END IF;
    IF to_regclass(tbl) IS NOT NULL THEN
        RETURN tbl;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgbroker.record_buckets'), hashtext(k::text));
    IF to_regclass(tbl) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I (LIKE records) PARTITION BY RANGE (partition_id, "offset")', tbl);
            EXECUTE format('ALTER TABLE records ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                           tbl, k * width, (k + 1) * width);
        EXCEPTION WHEN duplicate_table THEN
            NULL;
        END;
    END IF;
    RETURN tbl;
END
$f$;

-- Creates the segment [p_base, p_end) of a partition in its bucket and
-- records it. The caller holds the partition's segment lock.
CREATE FUNCTION _pb_add_segment(p_partition bigint, p_base bigint, p_end bigint) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
DECLARE
    bucket text := _pb_record_bucket(p_partition);
    tbl text := 'seg_' || p_partition || '_' || p_base;
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE records)', tbl);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s, %s) TO (%s, %s)',
                   bucket, tbl, p_partition, p_base, p_partition, p_end);
    INSERT INTO segments (partition_id, base_offset, end_offset, table_name)
    VALUES (p_partition, p_base, p_end, tbl);
END
$f$;

-- Every existing segment moves, with its bounds, into its bucket.
DO $m$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT k.oid::regclass AS child, pg_get_expr(k.relpartbound, k.oid) AS bound
             FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid
             WHERE i.inhparent = 'records_flat'::regclass
             ORDER BY k.relname
    LOOP
        EXECUTE format('ALTER TABLE records_flat DETACH PARTITION %s', c.child);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %s %s',
                       _pb_record_bucket(substring(c.bound FROM 'FROM \(''?(\d+)')::bigint), c.child, c.bound);
    END LOOP;
END
$m$;

-- Same text, bound again to the new `records`; its grants stay.
CREATE OR REPLACE VIEW messages AS
SELECT t.name AS topic,
       p.partition,
       r."offset",
       r.ts AS timestamp,
       r.key,
       r.value,
       r.headers
FROM records r
JOIN partitions p ON p.id = r.partition_id
JOIN topics t ON t.id = p.topic_id
WHERE r."offset" >= p.log_start;

DROP TABLE records_flat;
