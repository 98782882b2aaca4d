//! The statements of topics, segments, retention, fetches and idempotent
//! producers (see [`crate::sql`]). The produce statement itself is in
//! [`super::produce`].

/// A topic's settings as [`super::topics`] reads them, from `topics t`.
macro_rules! topic_columns {
    () => {
        "t.name, (SELECT count(*)::int FROM {s}partitions p WHERE p.topic_id = t.id),
         t.retention_ms, t.retention_bytes, t.segment_records, t.max_message_bytes, t.created_at"
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
    create_topic = "INSERT INTO {s}topics (name, retention_ms, retention_bytes, segment_records, max_message_bytes)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id";
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
    /// Used by `create_segment`.
    insert_segment = "INSERT INTO {s}segments (partition_id, base_offset, end_offset, table_name)
         VALUES ($1, $2, $3, $4)";
    /// Used by `ensure_segments`.
    segment_extent = "SELECT p.next_offset, t.segment_records,
                        (SELECT coalesce(max(end_offset), 0) FROM {s}segments s WHERE s.partition_id = p.id)
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
    cut_log = "WITH p AS (UPDATE {s}partitions SET log_start = greatest(log_start, $2)
                                WHERE id = $1 RETURNING id)
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
    advance_log_start = "WITH p AS (UPDATE {s}partitions SET log_start = greatest(log_start, $2)
                            WHERE id = $1 RETURNING log_start)
                 SELECT log_start FROM p";
    /// Used by `delete_records`.
    drop_segments_below = "UPDATE {s}segments SET dropping = true WHERE partition_id = $1 AND end_offset <= $2";
    /// Used by `resolve_offset`.
    offset_for_time = "SELECT min(\"offset\") FROM {s}records
                         WHERE partition_id = $1 AND \"offset\" >= $2 AND ts >= $3";
    }
    segment {
    /// Creates a segment table shaped like `records`.
    segment_create = ["CREATE TABLE {s}", " (LIKE {s}records)"];
    /// Attaches a segment to `records`; the bounds follow.
    segment_attach = ["ALTER TABLE {s}records ATTACH PARTITION {s}", ""];
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
    /// Reads up to `$3` records of partition `$1` from offset `$2`.
    /// Reading the segment table itself, rather than the partitioned
    /// parent, lets every statement use a generic plan and lock only the
    /// segment it reads, so retention can drop others while fetches run.
    segment_fetch = [
        "SELECT \"offset\", ts, key, value, headers, producer_id, producer_epoch, control FROM {s}",
        "
         WHERE partition_id = $1 AND \"offset\" >= $2 ORDER BY \"offset\" LIMIT $3",
    ];
    }
}
