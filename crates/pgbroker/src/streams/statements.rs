//! The statements of topics, segments, retention, fetches and idempotent
//! producers (see [`crate::sql`]). The produce statement itself is in
//! [`super::produce`].

/// A topic's settings as [`super::topics`] reads them, from `topics t`.
macro_rules! topic_columns {
    () => {
        "t.name, (SELECT count(*)::int FROM {s}partitions p WHERE p.topic_id = t.id),
         t.retention_ms, t.retention_bytes, t.segment_records, t.max_message_bytes, t.created_at,
         t.cleanup_policy, t.min_compaction_lag_ms, t.max_compaction_lag_ms, t.delete_retention_ms,
         t.min_cleanable_dirty_ratio, uuid_send(t.topic_uuid)"
    };
}

crate::sql::statements! {
    /// The streams' statements, qualified with the broker's schema.
    Statements {
    /// One topic's settings.
    topic_info = concat!("SELECT ", topic_columns!(), " FROM {s}topics t WHERE t.name = $1");
    /// Every topic's settings, by name.
    list_topics = concat!("SELECT ", topic_columns!(), " FROM {s}topics t ORDER BY t.name");
    /// Partitions with at most half a segment of room left past their
    /// high watermark, and their topics' segment size.
    low_on_room = "SELECT p.id, t.segment_records
         FROM {s}partitions p JOIN {s}topics t ON t.id = p.topic_id
         WHERE (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = p.id)
               - p.next_offset <= t.segment_records / 2";
    /// A partition's log start, high watermark and the first offset of its
    /// oldest open transaction (NULL when none is open: an index probe of
    /// an empty range).
    watermarks = "SELECT log_start, next_offset,
                         (SELECT min(x.first_offset) FROM {s}kafka_txn_partitions x
                          WHERE x.partition_id = $1 AND x.first_offset IS NOT NULL)
                  FROM {s}partitions WHERE id = $1";
    /// Used by `create_topic`.
    create_topic = "INSERT INTO {s}topics (name, retention_ms, retention_bytes, segment_records, max_message_bytes,
                        cleanup_policy, min_compaction_lag_ms, max_compaction_lag_ms, delete_retention_ms,
                        min_cleanable_dirty_ratio)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING RETURNING id";
    /// Used by `alter_topic`.
    alter_topic = "UPDATE {s}topics SET retention_ms = $2, retention_bytes = $3, max_message_bytes = $4,
                        cleanup_policy = $5, min_compaction_lag_ms = $6, max_compaction_lag_ms = $7,
                        delete_retention_ms = $8, min_cleanable_dirty_ratio = $9
                 WHERE name = $1";
    /// Used by `topic_totals`.
    topic_totals = "SELECT t.name, count(*)::int4, sum(p.next_offset)::int8, sum(p.next_offset - p.log_start)::int8
                 FROM {s}topics t JOIN {s}partitions p ON p.topic_id = t.id
                 GROUP BY t.name ORDER BY t.name";
    /// Used by `describe_topic`.
    describe_topic = "SELECT p.partition, p.log_start, p.next_offset,
                        coalesce((SELECT sum(pg_total_relation_size(to_regclass('{s}' || s.table_name)))
                                  FROM {s}segments s
                                  WHERE s.partition_id = p.id AND NOT s.dropping), 0)::bigint
                 FROM {s}partitions p JOIN {s}topics t ON t.id = p.topic_id
                 WHERE t.name = $1 ORDER BY p.partition";
    /// Used by `add_partitions`.
    lock_topic = "SELECT id, segment_records,
                        (SELECT count(*)::int FROM {s}partitions p WHERE p.topic_id = t.id)
                 FROM {s}topics t WHERE name = $1 FOR UPDATE";
    /// Used by `delete_topic`.
    delete_topic = "WITH t AS (SELECT id FROM {s}topics WHERE name = $1 FOR UPDATE),
                      o AS (INSERT INTO {s}orphan_segments (table_name)
                            SELECT s.table_name FROM {s}segments s
                            JOIN {s}partitions p ON p.id = s.partition_id
                            WHERE p.topic_id = (SELECT id FROM t)
                            ON CONFLICT DO NOTHING)
                 DELETE FROM {s}topics WHERE id = (SELECT id FROM t) RETURNING id";
    /// Used by `add_partitions_tx`.
    insert_partition = "INSERT INTO {s}partitions (topic_id, partition) VALUES ($1, $2) RETURNING id";
    /// Used by `create_segment`: the segment `[$2, $3)` of partition `$1`.
    add_segment = "SELECT {s}_pb_add_segment($1, $2, $3)";
    /// Used by `ensure_segments_after_miss`: every session rebuilds its
    /// map of partition `$1`'s bucket.
    refresh_bucket = "SELECT {s}_pb_refresh_bucket($1)";
    /// Used by `ensure_segments`: the next offset, the segment size and
    /// where the next segment starts (the next offset when retention has
    /// left the partition no segment).
    segment_extent = "SELECT p.next_offset, t.segment_records,
                        (SELECT coalesce(max(end_offset), p.next_offset) FROM {s}segments s WHERE s.partition_id = p.id)
                 FROM {s}partitions p JOIN {s}topics t ON t.id = p.topic_id WHERE p.id = $1";
    /// Removes long-poll registrations that have long expired.
    expire_waiters = "DELETE FROM {s}waiters WHERE until < now() - interval '1 hour'";
    /// Used by `enforce_retention`.
    retention_candidates = "SELECT s.partition_id, s.base_offset, s.end_offset, t.retention_ms,
                        t.retention_bytes, p.next_offset,
                        coalesce(pg_total_relation_size(to_regclass('{s}' || s.table_name)), 0)
                 FROM {s}segments s
                 JOIN {s}partitions p ON p.id = s.partition_id
                 JOIN {s}topics t ON t.id = p.topic_id
                 WHERE NOT s.dropping
                   AND (t.retention_ms IS NOT NULL OR t.retention_bytes IS NOT NULL)
                 ORDER BY s.partition_id, s.base_offset";
    /// Used by `enforce_retention`.
    /// Aborted ranges wholly below the new log start go too.
    cut_log = "WITH p AS (UPDATE {s}partitions SET log_start = greatest(log_start, $2)
                                WHERE id = $1 RETURNING id),
                    a AS (DELETE FROM {s}kafka_aborted_txns WHERE partition_id = $1 AND last_offset < $2)
                     UPDATE {s}segments SET dropping = true
                     WHERE partition_id = $1 AND end_offset <= $2";
    /// Used by `drop_pending_segments`.
    segments_to_drop = "SELECT table_name FROM {s}segments WHERE dropping
                 UNION ALL SELECT table_name FROM {s}orphan_segments";
    /// Used by `drop_pending_segments`.
    forget_segment = "DELETE FROM {s}segments WHERE table_name = $1";
    /// Used by `drop_pending_segments`.
    forget_orphan_segment = "DELETE FROM {s}orphan_segments WHERE table_name = $1";
    /// Used by `init_producer_id`.
    init_producer_id = "SELECT nextval('{s}kafka_producer_ids')";
    /// Used by `produce_idempotent`.
    insert_producer_state = "INSERT INTO {s}kafka_producer_state (producer_id, partition_id, epoch, last_seq, batches)
             VALUES ($1, $2, -1, -1, '[]') ON CONFLICT DO NOTHING";
    /// Used by `produce_idempotent`.
    lock_producer_state = "SELECT epoch, last_seq, batches FROM {s}kafka_producer_state
                 WHERE producer_id = $1 AND partition_id = $2 FOR UPDATE";
    /// Used by `produce_idempotent`.
    update_producer_state = "UPDATE {s}kafka_producer_state SET epoch = $3, last_seq = $4, batches = $5, updated_at = now()
             WHERE producer_id = $1 AND partition_id = $2";
    /// Used by `delete_records`.
    /// Aborted ranges wholly below the new log start are forgotten.
    advance_log_start = "WITH p AS (UPDATE {s}partitions SET log_start = greatest(log_start, $2)
                            WHERE id = $1 RETURNING log_start),
                 a AS (DELETE FROM {s}kafka_aborted_txns x USING p
                       WHERE x.partition_id = $1 AND x.last_offset < p.log_start)
                 SELECT log_start FROM p";
    /// Used by `delete_records`.
    drop_segments_below = "UPDATE {s}segments SET dropping = true WHERE partition_id = $1 AND end_offset <= $2";
    /// Used by `compact`: every partition of a compacted topic, with its
    /// settings and its cleaner checkpoint.
    compaction_candidates = "SELECT p.id, t.name, p.partition, t.segment_records, p.log_start, p.next_offset,
                        t.min_compaction_lag_ms, t.max_compaction_lag_ms, t.delete_retention_ms,
                        t.min_cleanable_dirty_ratio, c.clean_offset, c.clean_records, c.tombstones_due <= now()
                 FROM {s}partitions p
                 JOIN {s}topics t ON t.id = p.topic_id
                 LEFT JOIN {s}cleaner_checkpoints c ON c.partition_id = p.id
                 WHERE t.cleanup_policy <> 'delete'
                 ORDER BY p.id";
    /// Used by `compact`: the first offset in `[$2, $3)` younger than `$4` ms.
    compaction_young = "SELECT min(\"offset\") FROM {s}records
                 WHERE partition_id = $1 AND \"offset\" >= $2 AND \"offset\" < $3
                   AND ts > now() - $4::bigint * interval '1 millisecond'";
    /// Used by `compact`: whether the first record from `$2` is older than `$3` ms.
    compaction_oldest_dirty = "SELECT ts < now() - $3::bigint * interval '1 millisecond' FROM {s}records
                 WHERE partition_id = $1 AND \"offset\" >= $2 ORDER BY \"offset\" LIMIT 1";
    /// Used by `compact`: the latest offset of each key in `[$2, $3)`.
    /// Transaction markers are not keyed records, and records of aborted
    /// transactions never were: neither counts.
    compaction_latest = "SELECT max(r.\"offset\") FROM {s}records r
                 WHERE r.partition_id = $1 AND r.\"offset\" >= $2 AND r.\"offset\" < $3 AND r.key IS NOT NULL
                   AND r.control IS NOT TRUE
                   AND NOT EXISTS (SELECT 1 FROM {s}kafka_aborted_txns a
                                   WHERE a.partition_id = $1 AND a.producer_id = r.producer_id
                                     AND r.\"offset\" BETWEEN a.first_offset AND a.last_offset)
                 GROUP BY r.key";
    /// Used by `compact`: the closed segments ending in `($2, $3]`, and
    /// whether their tombstones are past `$4` ms since their first cleaning.
    compaction_segments = "SELECT base_offset, end_offset, cleaned_at,
                        coalesce(cleaned_at <= now() - $4::bigint * interval '1 millisecond', false)
                 FROM {s}segments
                 WHERE partition_id = $1 AND end_offset > $2 AND end_offset <= $3 AND NOT dropping
                 ORDER BY base_offset";
    /// Used by `compact`: the temporary table a segment's survivors wait in.
    compaction_keep_table = "CREATE TEMP TABLE IF NOT EXISTS compact_keep (LIKE {s}records) ON COMMIT DROP";
    /// Used by `compact`: marks a segment as cleaned (the tombstone horizon
    /// counts from its first cleaning).
    compaction_mark_cleaned = "UPDATE {s}segments SET cleaned_at = coalesce(cleaned_at, now())
                 WHERE partition_id = $1 AND base_offset = $2";
    /// Used by `compact`: the partition's cleaner checkpoint.
    compaction_checkpoint = "INSERT INTO {s}cleaner_checkpoints
                        (partition_id, clean_offset, clean_records, tombstones_due, bytes_reclaimed, cleaned_at)
                 VALUES ($1, $2, $3, $4, $5, now())
                 ON CONFLICT (partition_id) DO UPDATE SET
                        clean_offset = EXCLUDED.clean_offset, clean_records = EXCLUDED.clean_records,
                        tombstones_due = EXCLUDED.tombstones_due, cleaned_at = now(),
                        bytes_reclaimed = {s}cleaner_checkpoints.bytes_reclaimed + EXCLUDED.bytes_reclaimed";
    /// Used by `cleaner_status`.
    cleaner_status = "SELECT t.name, p.partition, p.log_start, p.next_offset, c.clean_offset,
                        c.bytes_reclaimed, c.cleaned_at
                 FROM {s}partitions p
                 JOIN {s}topics t ON t.id = p.topic_id
                 LEFT JOIN {s}cleaner_checkpoints c ON c.partition_id = p.id
                 WHERE t.cleanup_policy <> 'delete'
                 ORDER BY t.name, p.partition";
    /// Used by `resolve_offset`.
    offset_for_time = "SELECT min(\"offset\") FROM {s}records
                         WHERE partition_id = $1 AND \"offset\" >= $2 AND ts >= $3";
    }
    segment {
    /// Empties and drops a segment, waiting little for its locks: TRUNCATE
    /// locks only the segment and frees its space at once; DROP needs a
    /// brief lock on the parent, and may wait its turn.
    segment_drop = [
        "SET lock_timeout = '200ms';
         TRUNCATE {s}",
        "; DROP TABLE {s}",
        ";
         RESET lock_timeout;",
    ];
    /// Whether the record at `$2` of partition `$1` is older than `$3` ms.
    segment_record_older = [
        "SELECT ts < now() - $3::float8 * interval '1 millisecond'
         FROM {s}",
        " WHERE partition_id = $1 AND \"offset\" = $2",
    ];
    /// A segment's rows, tombstones and transaction markers (both wait for
    /// the horizon), and bytes (indexes included).
    compaction_segment_stats = [
        "SELECT count(*)::bigint, (count(*) FILTER (WHERE value IS NULL OR control))::bigint,
                pg_total_relation_size('{s}",
        "'::regclass) FROM {s}",
        "",
    ];
    /// Copies a segment's survivors into the temporary table: offsets `$2`
    /// and records without a key, tombstones among them unless `$3` (the
    /// segment is past `delete.retention.ms` since its first cleaning), and
    /// transaction markers unless `$3` too. Past the horizon a marker stays
    /// only while records of the aborted transaction it ends may remain:
    /// records without a key, which are kept, or any record in an earlier
    /// segment than this one (from `$4`), whose cleaning may have been put
    /// off. A commit marker decides nothing a reader needs once its
    /// transaction is decided.
    compaction_keep = [
        "INSERT INTO pg_temp.compact_keep SELECT * FROM {s}",
        " r WHERE r.partition_id = $1 AND CASE WHEN r.control THEN
             NOT $3 OR EXISTS (
                 SELECT 1 FROM {s}kafka_aborted_txns a
                 JOIN {s}records x ON x.partition_id = a.partition_id AND x.producer_id = a.producer_id
                                  AND x.\"offset\" >= a.first_offset AND x.\"offset\" < a.last_offset
                 WHERE a.partition_id = $1 AND a.last_offset = r.\"offset\"
                   AND x.control IS NOT TRUE AND (x.key IS NULL OR x.\"offset\" < $4))
           ELSE (r.\"offset\" = ANY($2) OR r.key IS NULL) AND (r.value IS NOT NULL OR NOT $3) END",
    ];
    /// Forgets the aborted ranges whose end marker the rewrite of the
    /// segment `[$2, $3)` removed: a reader told of a range skips that
    /// producer's records until the marker, which no longer comes.
    compaction_forget_aborted = [
        "DELETE FROM {s}kafka_aborted_txns a
         WHERE a.partition_id = $1 AND a.last_offset >= $2 AND a.last_offset < $3
           AND NOT EXISTS (SELECT 1 FROM {s}",
        " r WHERE r.partition_id = $1 AND r.\"offset\" = a.last_offset)",
    ];
    /// Swaps the segment's contents for the survivors: locks it (briefly,
    /// or gives up), gives it a new empty file and copies them back.
    compaction_swap = [
        "SET LOCAL lock_timeout = '500ms';
         LOCK TABLE {s}",
        " IN ACCESS EXCLUSIVE MODE;
         TRUNCATE {s}",
        "; INSERT INTO {s}",
        " SELECT * FROM pg_temp.compact_keep;",
    ];
    /// Reads up to `$3` records of partition `$1` from offset `$2`, below
    /// offset `$4` (the high watermark, or the last stable offset of a
    /// read_committed fetch: what lies past it would only be dropped).
    /// Reading the segment table itself, rather than the partitioned
    /// parent, lets every statement use a generic plan and lock only the
    /// segment it reads, so retention can drop others while fetches run.
    segment_fetch = [
        "SELECT \"offset\", ts, key, value, headers, producer_id, producer_epoch, control FROM {s}",
        "
         WHERE partition_id = $1 AND \"offset\" >= $2 AND \"offset\" < $4 ORDER BY \"offset\" LIMIT $3",
    ];
    }
}
