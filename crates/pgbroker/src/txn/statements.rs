//! The transaction coordinator's statements (see [`crate::sql`]).

/// A statement that joins something to a transaction, with no round trip
/// but its own: locks the transactional id `$1`'s row and returns it (as
/// `lock_txn`); only when the row holds producer `$2` at epoch `$3`, it
/// starts the transaction if none is open (its timeout runs from now) and
/// runs `$insert` (rows from `ok`, the checked row).
///
/// Its commit does not wait for the WAL flush ([`crate::sql::NO_FLUSH_WAIT`]):
/// what it writes only ever matters to a later write of the same
/// transaction that reads it, and every such write commits with the flush
/// (a transactional append checks the partition was added, TxnOffsetCommit
/// that the group was, EndTxn that the transaction is ongoing). The WAL
/// reaches disk in order, so that flush makes this commit durable too;
/// a Postgres crash before it loses the join with nothing yet depending
/// on it, and the later write is refused (INVALID_TXN_STATE): a clean
/// error, never a committed transaction missing a part.
macro_rules! join_txn {
    ($insert:expr) => {
        concat!(
            "
WITH k AS MATERIALIZED (
    SELECT producer_id, epoch, last_epoch, state, timeout_ms, completed
      FROM {s}kafka_transactions WHERE transactional_id = $1 FOR UPDATE
), ok AS MATERIALIZED (
    SELECT state FROM k WHERE producer_id = $2 AND epoch = $3
), b AS (
    UPDATE {s}kafka_transactions t
       SET state = 'Ongoing', started_at = now(),
           deadline = now() + t.timeout_ms * interval '1 millisecond', updated_at = now()
      FROM ok WHERE t.transactional_id = $1 AND ok.state <> 'Ongoing'
), j AS (
    ",
            $insert,
            "
)
SELECT producer_id, epoch, last_epoch, state, timeout_ms, completed,
       set_config('synchronous_commit', 'off', true) FROM k"
        )
    };
}

crate::sql::statements! {
    /// The coordinator's statements, qualified with the broker's schema.
    Statements {
    /// A transactional id's row, locked for a state change.
    lock_txn = "SELECT producer_id, epoch, last_epoch, state, timeout_ms, completed
                FROM {s}kafka_transactions WHERE transactional_id = $1 FOR UPDATE";
    /// Creates a transactional id with a fresh producer id at epoch 0.
    insert_txn = "INSERT INTO {s}kafka_transactions (transactional_id, producer_id, epoch, state, timeout_ms)
                  VALUES ($1, nextval('{s}kafka_producer_ids'), 0, 'Empty', $2)
                  ON CONFLICT (transactional_id) DO NOTHING";
    /// A new producer id for a transactional id whose epochs ran out.
    next_producer_id = "SELECT nextval('{s}kafka_producer_ids')::bigint";
    /// Sets a transactional id's producer after InitProducerId.
    init_txn = "UPDATE {s}kafka_transactions
                SET producer_id = $2, epoch = $3, last_epoch = $4, state = 'Empty', timeout_ms = $5,
                    started_at = NULL, deadline = NULL, updated_at = now()
                WHERE transactional_id = $1";
    /// AddPartitionsToTxn in one statement: see `join_txn!`.
    join_partitions = join_txn!("INSERT INTO {s}kafka_txn_partitions (transactional_id, partition_id)
                                 SELECT $1, unnest($4::bigint[]) FROM ok ON CONFLICT DO NOTHING");
    /// AddOffsetsToTxn in one statement: see `join_txn!`.
    join_group = join_txn!("INSERT INTO {s}kafka_txn_groups (transactional_id, group_name)
                            SELECT $1, $4 FROM ok ON CONFLICT DO NOTHING");
    /// TxnOffsetCommit in one statement: locks the transactional id `$1`'s
    /// row and returns it (as `lock_txn`) with whether group `$2` was added
    /// to its transaction; only when the row holds producer `$3` at epoch
    /// `$4`, its transaction is ongoing and the group added, the offsets
    /// become pending in the transaction.
    put_offsets = "
WITH k AS MATERIALIZED (
    SELECT producer_id, epoch, last_epoch, state, timeout_ms, completed,
           EXISTS (SELECT 1 FROM {s}kafka_txn_groups g
                   WHERE g.transactional_id = $1 AND g.group_name = $2) AS added
      FROM {s}kafka_transactions WHERE transactional_id = $1 FOR UPDATE
), p AS (
    INSERT INTO {s}kafka_txn_offsets (transactional_id, group_name, topic_id, partition, \"offset\", metadata)
    SELECT $1, $2, t.id, x.partition, x.off, x.meta
      FROM k, unnest($5::text[], $6::int[], $7::bigint[], $8::text[]) AS x(topic, partition, off, meta)
      JOIN {s}topics t ON t.name = x.topic
     WHERE k.producer_id = $3 AND k.epoch = $4 AND k.state = 'Ongoing' AND k.added
    ON CONFLICT (transactional_id, group_name, topic_id, partition)
    DO UPDATE SET \"offset\" = EXCLUDED.\"offset\", metadata = EXCLUDED.metadata
)
SELECT producer_id, epoch, last_epoch, state, timeout_ms, completed, added FROM k";
    /// The first part of a decision of transaction `$1`, its row locked,
    /// in one statement: records the outcome when `$3` (state `$4`, epoch
    /// `$5`, last epoch `$6`), makes its pending offsets the groups'
    /// committed ones when it commits (`$2`), forgets its pending offsets,
    /// groups and partitions, and returns the partitions it wrote to, by
    /// id (the order their markers lock them in), each with the first
    /// offset written there, its segment size, and (read without a lock)
    /// its next offset and the end of its last segment.
    settle = "
WITH f AS (
    UPDATE {s}kafka_transactions
       SET state = $4, epoch = $5, last_epoch = $6, started_at = NULL, deadline = NULL,
           completed = completed + 1, updated_at = now()
     WHERE transactional_id = $1 AND $3
), o AS (
    DELETE FROM {s}kafka_txn_offsets WHERE transactional_id = $1
    RETURNING group_name, topic_id, partition, \"offset\", metadata
), a AS (
    INSERT INTO {s}group_offsets (group_name, topic_id, partition, \"offset\", metadata)
    SELECT group_name, topic_id, partition, \"offset\", metadata FROM o WHERE $2
    ON CONFLICT (group_name, topic_id, partition)
    DO UPDATE SET \"offset\" = EXCLUDED.\"offset\", metadata = EXCLUDED.metadata, committed_at = now()
), g AS (
    DELETE FROM {s}kafka_txn_groups WHERE transactional_id = $1
), x AS (
    DELETE FROM {s}kafka_txn_partitions WHERE transactional_id = $1
    RETURNING partition_id, first_offset
)
SELECT x.partition_id, x.first_offset, t.segment_records, p.next_offset,
       (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = p.id)
  FROM x
  JOIN {s}partitions p ON p.id = x.partition_id
  JOIN {s}topics t ON t.id = p.topic_id
 WHERE x.first_offset IS NOT NULL
 ORDER BY x.partition_id";
    /// A transactional id's row when its transaction is past its timeout,
    /// skipped when another broker holds it.
    lock_expired = "SELECT producer_id, epoch, last_epoch, state, timeout_ms, completed
                    FROM {s}kafka_transactions
                    WHERE transactional_id = $1 AND state = 'Ongoing' AND deadline < now()
                    FOR UPDATE SKIP LOCKED";
    /// Transactions past their timeout.
    expired = "SELECT transactional_id FROM {s}kafka_transactions
               WHERE state = 'Ongoing' AND deadline < now() ORDER BY deadline LIMIT 100";
    /// A partition's last stable offset, when a transaction is open on it.
    last_stable = "SELECT min(first_offset) FROM {s}kafka_txn_partitions
                   WHERE partition_id = $1 AND first_offset IS NOT NULL";
    /// The producers that wrote to a partition, with the first offset of
    /// a transaction each still has open there.
    partition_producers = "SELECT ps.producer_id, ps.epoch, ps.last_seq, ps.updated_at,
                                  (SELECT x.first_offset FROM {s}kafka_txn_partitions x
                                   JOIN {s}kafka_transactions t ON t.transactional_id = x.transactional_id
                                   WHERE t.producer_id = ps.producer_id AND x.partition_id = ps.partition_id
                                     AND t.state = 'Ongoing')
                           FROM {s}kafka_producer_state ps
                           WHERE ps.partition_id = $1 ORDER BY ps.producer_id";
    /// What a read_committed fetch of partition `$1` from offset `$2`
    /// reads first: as `streams`' `watermarks` (the log start, the next
    /// offset and the first offset of the oldest open transaction), then
    /// the aborted transactions ending at or after `$2`, by first offset,
    /// as three arrays (producer ids, first offsets, last offsets), for
    /// the fetch to keep those overlapping what it reads.
    watermarks_committed = "
SELECT p.log_start, p.next_offset,
       (SELECT min(x.first_offset) FROM {s}kafka_txn_partitions x
         WHERE x.partition_id = $1 AND x.first_offset IS NOT NULL),
       coalesce(a.producers, '{}'), coalesce(a.firsts, '{}'), coalesce(a.lasts, '{}')
  FROM {s}partitions p,
       LATERAL (SELECT array_agg(producer_id ORDER BY first_offset) AS producers,
                       array_agg(first_offset ORDER BY first_offset) AS firsts,
                       array_agg(last_offset ORDER BY first_offset) AS lasts
                  FROM {s}kafka_aborted_txns
                 WHERE partition_id = $1 AND last_offset >= $2) a
 WHERE p.id = $1";
    /// Partitions of a group with an offset pending in an open transaction.
    pending_offsets = "SELECT t.name, o.partition FROM {s}kafka_txn_offsets o
                       JOIN {s}topics t ON t.id = o.topic_id
                       WHERE o.group_name = $1 ORDER BY 1, 2";
    /// Every transactional id, for listing.
    list_txns = "SELECT transactional_id, producer_id, epoch, state, timeout_ms, started_at,
                        (SELECT count(*)::int FROM {s}kafka_txn_partitions x
                         WHERE x.transactional_id = k.transactional_id)
                 FROM {s}kafka_transactions k ORDER BY transactional_id";
    /// One transactional id, for describing.
    describe_txn = "SELECT transactional_id, producer_id, epoch, state, timeout_ms, started_at,
                           (SELECT count(*)::int FROM {s}kafka_txn_partitions x
                            WHERE x.transactional_id = k.transactional_id)
                    FROM {s}kafka_transactions k WHERE transactional_id = $1";
    /// The topic partitions of an open transaction.
    txn_topic_partitions = "SELECT t.name, p.partition FROM {s}kafka_txn_partitions x
                            JOIN {s}partitions p ON p.id = x.partition_id
                            JOIN {s}topics t ON t.id = p.topic_id
                            WHERE x.transactional_id = $1 ORDER BY 1, 2";
    /// What a transactional append checks before it takes the partition's
    /// lock: the transactional id holding producer `$1` (its row locked in
    /// share mode: a decision takes it exclusively), its epoch and state,
    /// whether partition `$2` was added to its transaction, and (read
    /// without a lock) the partition's next offset and the end of its last
    /// segment. Then, as `streams`' `insert_producer_state`, the
    /// producer's state on the partition is created if missing (the
    /// statement that follows locks it).
    check_append = "WITH i AS (
                        INSERT INTO {s}kafka_producer_state (producer_id, partition_id, epoch, last_seq, batches)
                        VALUES ($1, $2, -1, -1, '[]') ON CONFLICT DO NOTHING
                    )
                    SELECT k.transactional_id, k.epoch, k.state, x.partition_id IS NOT NULL,
                           coalesce((SELECT p.next_offset FROM {s}partitions p WHERE p.id = $2), 0),
                           (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = $2)
                    FROM {s}kafka_transactions k
                    LEFT JOIN {s}kafka_txn_partitions x
                           ON x.transactional_id = k.transactional_id AND x.partition_id = $2
                    WHERE k.producer_id = $1
                    FOR SHARE OF k";
    /// A transactional append in one statement, the only one that holds
    /// the partition's lock (until the commit that follows): the records
    /// with their producer's id and epoch, the producer's new sequence
    /// state (`$13`, the batches kept, plus this one), and the first
    /// offset of the transaction on the partition when this is its first
    /// write there. Otherwise as the produce statement (see
    /// `streams::produce::PRODUCE`), the end of the last segment included.
    append_txn = "
WITH p AS (
    UPDATE {s}partitions SET next_offset = next_offset + $2
             WHERE id = $1
             RETURNING id, next_offset - $2 AS base
), ins AS (
    INSERT INTO {s}records (partition_id, \"offset\", ts, key, value, headers, producer_id, producer_epoch)
             SELECT p.id, p.base + r.ord - 1, coalesce(r.ts, now()), r.key, r.value, r.headers, $9, $10
             FROM p, unnest($3::timestamptz[], $4::bytea[], $5::bytea[], $6::jsonb[])
                     WITH ORDINALITY AS r(ts, key, value, headers, ord)
), st AS (
    UPDATE {s}kafka_producer_state ps
       SET epoch = $10, last_seq = $12,
           batches = $13::jsonb || jsonb_build_array(jsonb_build_array($11::int, $12::int, p.base)),
           updated_at = now()
      FROM p WHERE ps.producer_id = $9 AND ps.partition_id = p.id
), f AS (
    UPDATE {s}kafka_txn_partitions x SET first_offset = p.base
      FROM p WHERE x.transactional_id = $14 AND x.partition_id = p.id AND x.first_offset IS NULL
)
SELECT p.base,
       (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = p.id),
       (SELECT pg_notify($7, p.id::text)
        WHERE EXISTS (SELECT 1 FROM {s}waiters w
                               WHERE w.partition_id = p.id AND w.until > now() AND w.listener <> $8))
FROM p";
    /// [`check_append`](Statements::check_append) for a round of appends,
    /// pair `i` being producer `$1[i]` on partition `$2[i]`: one row per
    /// pair whose producer holds a transactional id, as `check_append`'s,
    /// then the pair's number (from 1). The transactional ids' rows are share-locked
    /// in byte order of the id, the order decisions lock them in.
    check_appends = "WITH i AS (
                         INSERT INTO {s}kafka_producer_state (producer_id, partition_id, epoch, last_seq, batches)
                         SELECT r.producer_id, r.partition_id, -1, -1, '[]'
                           FROM unnest($1::bigint[], $2::bigint[]) AS r(producer_id, partition_id)
                          ORDER BY r.partition_id, r.producer_id
                         ON CONFLICT DO NOTHING
                     )
                     SELECT k.transactional_id, k.epoch, k.state, x.partition_id IS NOT NULL,
                            coalesce((SELECT p.next_offset FROM {s}partitions p WHERE p.id = r.partition_id), 0),
                            (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s
                              WHERE s.partition_id = r.partition_id),
                            r.ord
                     FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS r(producer_id, partition_id, ord)
                     JOIN {s}kafka_transactions k ON k.producer_id = r.producer_id
                     LEFT JOIN {s}kafka_txn_partitions x
                            ON x.transactional_id = k.transactional_id AND x.partition_id = r.partition_id
                     ORDER BY k.transactional_id COLLATE \"C\"
                     FOR SHARE OF k";
    /// The producers' states of a round of appends (pairs as in
    /// `check_appends`), locked in partition then producer order: each
    /// row as `streams`' `lock_producer_state`'s, then the pair's number.
    lock_states = "SELECT ps.epoch, ps.last_seq, ps.batches, r.ord
                   FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS r(producer_id, partition_id, ord)
                   JOIN {s}kafka_producer_state ps
                     ON ps.producer_id = r.producer_id AND ps.partition_id = r.partition_id
                   ORDER BY ps.partition_id, ps.producer_id
                   FOR UPDATE OF ps";
    /// A round of transactional appends in one statement, its partitions
    /// locked by `lock_partitions` before it: partition `$1[i]` takes
    /// `$2[i]` records. Record `j` goes to partition `$3[j]` at `$4[j]`
    /// past its first new offset, with columns `$5`..`$8` and producer
    /// `$9[j]` at epoch `$10[j]`. Batch `b` (producer `$11[b]` on partition
    /// `$12[b]` at epoch `$13[b]`, sequences `$14[b]` to `$15[b]`, kept
    /// batches `$16[b]`, transactional id `$17[b]`) starts `$18[b]` past
    /// that offset: its producer's state and its transaction's first
    /// offset on the partition are set as `append_txn` sets them. Returns
    /// each partition's first new offset and the end of its last segment,
    /// and notifies other brokers' waiters as `append_txn` does.
    append_round = "
WITH p AS (
    UPDATE {s}partitions q SET next_offset = q.next_offset + c.n
      FROM unnest($1::bigint[], $2::bigint[]) AS c(id, n)
     WHERE q.id = c.id
     RETURNING q.id, q.next_offset - c.n AS base
), ins AS (
    INSERT INTO {s}records (partition_id, \"offset\", ts, key, value, headers, producer_id, producer_epoch)
    SELECT p.id, p.base + r.rel, coalesce(r.ts, now()), r.key, r.value, r.headers, r.producer, r.epoch
      FROM unnest($3::bigint[], $4::bigint[], $5::timestamptz[], $6::bytea[], $7::bytea[], $8::jsonb[],
                  $9::bigint[], $10::smallint[]) AS r(pid, rel, ts, key, value, headers, producer, epoch)
      JOIN p ON p.id = r.pid
), b AS (
    SELECT x.producer, x.pid, x.epoch, x.base_seq, x.last_seq, x.kept, x.txn, p.base + x.rel AS base_offset
      FROM unnest($11::bigint[], $12::bigint[], $13::smallint[], $14::int[], $15::int[], $16::jsonb[],
                  $17::text[], $18::bigint[]) AS x(producer, pid, epoch, base_seq, last_seq, kept, txn, rel)
      JOIN p ON p.id = x.pid
), st AS (
    UPDATE {s}kafka_producer_state ps
       SET epoch = b.epoch, last_seq = b.last_seq,
           batches = b.kept || jsonb_build_array(jsonb_build_array(b.base_seq, b.last_seq, b.base_offset)),
           updated_at = now()
      FROM b WHERE ps.producer_id = b.producer AND ps.partition_id = b.pid
), f AS (
    UPDATE {s}kafka_txn_partitions x SET first_offset = b.base_offset
      FROM b WHERE x.transactional_id = b.txn AND x.partition_id = b.pid AND x.first_offset IS NULL
)
SELECT p.id, p.base,
       (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = p.id),
       (SELECT pg_notify($19, p.id::text)
        WHERE EXISTS (SELECT 1 FROM {s}waiters w
                               WHERE w.partition_id = p.id AND w.until > now() AND w.listener <> $20))
FROM p";
    /// Locks a decision's partitions (`$1`) in id order before
    /// `write_markers`, waiting, as `streams::produce::OUTBOX_LOCK` does,
    /// for a segment creation under way on any of them.
    lock_partitions = "SELECT id,
                              pg_advisory_lock_shared(hashtext('pgbroker.segments'), hashtext(id::text)) IS NULL,
                              pg_advisory_unlock_shared(hashtext('pgbroker.segments'), hashtext(id::text))
                       FROM {s}partitions WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE";
    /// A decision's markers, one statement for all its partitions
    /// (`$1`, locked by `lock_partitions`, with the transaction's first
    /// offset on each in `$2`): appends a control record (key `$4`,
    /// value `$5`) of producer `$6` at epoch `$7` to each and, for an abort
    /// (`$8`), records each aborted range up to its marker. Returns each
    /// partition's marker offset and the end of its last segment, and
    /// notifies other brokers' waiters as the produce statement does.
    write_markers = "
WITH p AS (
    UPDATE {s}partitions q SET next_offset = q.next_offset + 1
      WHERE q.id = ANY($1::bigint[])
      RETURNING q.id, q.next_offset - 1 AS at
), ins AS (
    INSERT INTO {s}records (partition_id, \"offset\", ts, key, value, headers, producer_id, producer_epoch, control)
    SELECT p.id, p.at, $3, $4, $5, NULL, $6, $7, true FROM p
), ab AS (
    INSERT INTO {s}kafka_aborted_txns (partition_id, first_offset, last_offset, producer_id)
    SELECT p.id, x.first, p.at, $6
      FROM p JOIN unnest($1::bigint[], $2::bigint[]) AS x(id, first) ON x.id = p.id
     WHERE $8
    ON CONFLICT DO NOTHING
)
SELECT p.id, p.at,
       (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = p.id),
       (SELECT pg_notify($9, p.id::text)
        WHERE EXISTS (SELECT 1 FROM {s}waiters w
                               WHERE w.partition_id = p.id AND w.until > now() AND w.listener <> $10))
FROM p";
    }
}

#[cfg(test)]
mod tests {
    use super::Statements;
    use crate::sql::{Schema, NO_FLUSH_WAIT};

    #[test]
    fn only_the_joins_commit_without_the_flush() {
        let s = Statements::new(&Schema::new("my_schema").expect("valid"));
        for join in [&s.join_partitions, &s.join_group] {
            assert_eq!(join.matches(NO_FLUSH_WAIT).count(), 1, "{join}");
        }
        for (name, sql) in s.all() {
            if name != "join_partitions" && name != "join_group" {
                assert!(!sql.contains("synchronous_commit"), "{name}: {sql}");
            }
        }
    }
}
