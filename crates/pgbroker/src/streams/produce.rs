//! Producing: appending batches to a partition with gap-free offsets, by
//! key or explicit partition, on pgbroker's pool or inside a caller's own
//! transaction.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::try_join_all;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, ToStatement};

use crate::broker::{Broker, TopicMeta};
use crate::error::{Error, Invalid, Result};
use crate::headers;
use crate::streams::partitioner::partition_for_key;
use crate::types::{Record, RecordPosition, StoredRecord, TopicName};

/// The single statement that appends a batch.
///
/// It sends a NOTIFY only when a broker other than `$8` waits on the
/// partition; waiters in this process are woken directly after the commit.
/// The UPDATE takes the partition row's lock and reserves `$2` consecutive
/// offsets; the lock is held until commit, so batches of one partition
/// commit in offset order and a reader never sees offset `n + 1` before `n`.
/// A rolled-back batch rolls back its reservation too: no gaps.
pub(crate) const PRODUCE: &str = "
WITH p AS (
    UPDATE {s}partitions SET next_offset = next_offset + $2
             WHERE id = $1
             RETURNING id, next_offset - $2 AS base
), ins AS (
    INSERT INTO {s}records (partition_id, \"offset\", ts, key, value, headers)
             SELECT p.id, p.base + r.ord - 1, coalesce(r.ts, now()), r.key, r.value, r.headers
             FROM p, unnest($3::timestamptz[], $4::bytea[], $5::bytea[], $6::jsonb[])
                     WITH ORDINALITY AS r(ts, key, value, headers, ord)
)
SELECT p.base,
       (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = p.id),
                (SELECT pg_notify($7, p.id::text)
        WHERE EXISTS (SELECT 1 FROM {s}waiters w
                               WHERE w.partition_id = p.id AND w.until > now() AND w.listener <> $8))
FROM p";

/// Locks a partition's row inside a caller's transaction and returns its
/// next offset and the end of its last segment. NO KEY UPDATE, the same
/// strength the produce UPDATE takes, so that segment creation (whose
/// foreign key takes KEY SHARE on this row) is not blocked by it.
///
/// It also waits for a segment creation under way on the partition to
/// finish (it holds the partition's segment lock, see
/// [`crate::streams::segments::ensure_segments`]). A creating transaction is visible as
/// committed a moment before it tells other sessions that `records` has a
/// new partition, and releases that lock only after; an insert in that
/// moment would be routed by the old partition list and fail. Taking and
/// dropping the lock in shared mode after the snapshot closes the gap.
pub(crate) const OUTBOX_LOCK: &str = "
SELECT next_offset,
       (SELECT coalesce(max(s.end_offset), 0) FROM {s}segments s WHERE s.partition_id = $1),
                pg_advisory_lock_shared(hashtext('pgbroker.segments'), hashtext($1::text)) IS NULL,
                pg_advisory_unlock_shared(hashtext('pgbroker.segments'), hashtext($1::text))
FROM {s}partitions WHERE id = $1 FOR NO KEY UPDATE";

/// Attempts of the locked append after an insert found no segment for one
/// of its offsets.
pub(crate) const SEGMENT_RETRIES: usize = 3;

/// An insert that found no segment (partition of `records`) for a row.
pub(crate) fn no_segment(e: &Error) -> bool {
    matches!(e, Error::Db(e) if e.code() == Some(&SqlState::CHECK_VIOLATION))
}

/// The answer when an insert still found no segment after every retry:
/// retriable, logged with what Postgres said.
pub(crate) fn still_no_segment(e: Error, partition_id: Option<i64>) -> Error {
    if !no_segment(&e) {
        return e;
    }
    tracing::warn!(?partition_id, error = %e, "no segment for a write after {SEGMENT_RETRIES} attempts");
    Error::Busy(format!("no segment for the write yet ({e}); try again"))
}

/// Columns of one batch, in the shape the produce statement binds.
struct Columns<'a> {
    ts: Vec<Option<SystemTime>>,
    keys: Vec<Option<&'a [u8]>>,
    values: Vec<Option<&'a [u8]>>,
    headers: Vec<Option<Value>>,
}

impl<'a> Columns<'a> {
    /// Records without a timestamp get `now`: the client fixes every
    /// timestamp, so what this process caches equals what Postgres stores.
    fn new<'r>(records: impl Iterator<Item = &'r Record>, now: SystemTime) -> Self
    where
        'r: 'a,
    {
        let mut c = Columns {
            ts: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
            headers: Vec::new(),
        };
        for r in records {
            c.ts.push(Some(r.timestamp.map_or(now, truncate_to_micros)));
            c.keys.push(r.key.as_deref());
            c.values.push(r.value.as_deref());
            c.headers.push(headers::to_json(&r.headers));
        }
        c
    }
}

/// Records of one call split by target partition, with their input indexes.
type Split = BTreeMap<i32, Vec<usize>>;

/// Produces records to a topic and returns where each landed, in input
/// order. With `partition` the records all go there; otherwise a keyed
/// record goes where Kafka's default partitioner would put it, and
/// records without a key go together to one partition chosen round-robin.
///
/// Records for one partition are written by one statement in one
/// transaction: all of them or none (with other calls' records to the
/// partition that waited at the same time, see
/// [`crate::streams::append_batch`]).
pub(crate) async fn produce(
    broker: &Broker,
    topic: &TopicName,
    partition: Option<i32>,
    records: &[Record],
) -> Result<Vec<RecordPosition>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let (meta, split) = split(broker, topic, partition, records).await?;
    let appends = split.iter().map(|(p, idx)| {
        let meta = meta.clone();
        async move {
            let pid = meta.partition_ids[usize::try_from(*p).unwrap_or(0)];
            let base = broker
                .inner
                .plain_appends
                .append(broker, meta.clone(), pid, records, idx)
                .await?;
            Ok::<_, Error>((*p, idx, base))
        }
    });
    let results = try_join_all(appends).await?;
    Ok(positions(records.len(), results))
}

/// Produces inside the caller's open transaction (the transactional
/// outbox): the records become visible if and only if that transaction
/// commits. Partition choice is as in [`crate::streams::Streams::produce`].
///
/// The partition's row lock is held until the caller commits, so other
/// producers to the same partitions wait for it: keep such transactions
/// short.
pub(crate) async fn produce_in(
    broker: &Broker,
    client: &impl GenericClient,
    topic: &TopicName,
    partition: Option<i32>,
    records: &[Record],
) -> Result<Vec<RecordPosition>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let (meta, split) = split(broker, topic, partition, records).await?;
    let mut results = Vec::with_capacity(split.len());
    for (p, idx) in &split {
        let pid = meta.partition_ids[usize::try_from(*p).unwrap_or(0)];
        let now = truncate_to_micros(SystemTime::now());
        let base = append_locked(broker, client, true, now, &meta, pid, records, idx).await?;
        // The records appear when the caller commits, which this process
        // cannot see: the partition's cached tail must be checked again.
        broker.inner.cache.mark_stale(pid);
        results.push((*p, idx, base));
    }
    Ok(positions(records.len(), results))
}

/// The rules every append path applies to a topic's records: each within
/// the topic's size limit, each with a key on a compacted topic, and no
/// header key with a NUL character.
pub(crate) fn check_records(meta: &TopicMeta, topic: &TopicName, records: &[Record]) -> Result<()> {
    for r in records {
        // Header keys are stored as JSON text, which Postgres cannot hold
        // with a NUL character in it.
        if let Some(h) = r.headers.iter().find(|h| h.key.contains('\0')) {
            return Err(Error::invalid(
                Invalid::HeaderKey,
                format!("{:?} contains a NUL character", h.key),
            ));
        }
        if meta.compacted && r.key.is_none() {
            return Err(Error::invalid(
                Invalid::RecordKey,
                format!("topic {topic} is compacted: every record needs a key"),
            ));
        }
        let size = r.size();
        if size > meta.max_message_bytes {
            return Err(Error::RecordTooLarge {
                size,
                max: meta.max_message_bytes,
            });
        }
    }
    Ok(())
}

/// Validates the records and groups their indexes by target partition.
async fn split(
    broker: &Broker,
    topic: &TopicName,
    partition: Option<i32>,
    records: &[Record],
) -> Result<(std::sync::Arc<TopicMeta>, Split)> {
    let meta = broker.topic_meta(topic).await?;
    let count = meta.partition_ids.len();
    check_records(&meta, topic, records)?;
    let mut split = Split::new();
    if let Some(p) = partition {
        if usize::try_from(p).map_or(true, |p| p >= count) {
            broker.forget_topic(topic.as_str());
            return Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition: p,
                count,
            });
        }
        split.insert(p, (0..records.len()).collect());
        return Ok((meta, split));
    }
    let sticky = i32::try_from(broker.next_round_robin() % count.max(1)).unwrap_or(0);
    for (i, r) in records.iter().enumerate() {
        let p = match &r.key {
            Some(k) => partition_for_key(k, count),
            None => sticky,
        };
        split.entry(p).or_default().push(i);
    }
    Ok((meta, split))
}

/// Appends on a pooled connection with the single produce statement.
/// If the batch reaches past the last segment, falls back to
/// [`crate::streams::produce::append_locked`] in a transaction of its own. When the
/// partition's spare room runs low, has the next segment created ahead of
/// time, in the background, so that producers rarely meet a missing one.
pub(super) async fn append_pooled(
    broker: &Broker,
    meta: &TopicMeta,
    pid: i64,
    records: &[Record],
    idx: &[usize],
) -> Result<i64> {
    let n = i64::try_from(idx.len()).unwrap_or(i64::MAX);
    let mut client = broker.client().await?;
    let stmt = client.prepare_cached(&broker.inner.produce_sql).await?;
    let raw: &tokio_postgres::Client = &client;
    let now = truncate_to_micros(SystemTime::now());
    match append_on(broker, raw, &stmt, false, now, meta, pid, records, idx).await {
        Ok((base, segments_end)) => {
            drop(client);
            cache_committed(broker, pid, base, now, records, idx);
            broker.inner.wakeups.wake(pid);
            // The batch is committed: making room ahead is not its
            // work (nor its failure, which a client would answer by
            // sending it again).
            if segments_end - (base + n) <= meta.segment_records / 2 {
                crate::streams::segments::make_room_ahead(broker, pid, meta.segment_records);
            }
            Ok(base)
        }
        Err(e) if no_segment(&e) => {
            let mut attempt = 1;
            loop {
                let tx = client.transaction().await?;
                match append_locked(broker, &*tx, false, now, meta, pid, records, idx).await {
                    Ok(base) => {
                        tx.commit().await?;
                        cache_committed(broker, pid, base, now, records, idx);
                        broker.inner.wakeups.wake(pid);
                        return Ok(base);
                    }
                    Err(e) if no_segment(&e) && attempt < SEGMENT_RETRIES => {
                        tx.rollback().await?;
                        tracing::warn!(partition_id = pid, attempt, "no segment for a produce; retrying");
                        crate::streams::segments::ensure_segments_after_miss(broker, pid, 0, meta.segment_records)
                            .await?;
                        attempt += 1;
                    }
                    Err(e) => return Err(still_no_segment(e, Some(pid))),
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// Appends within an open transaction: takes the partition's lock first,
/// to learn exactly which offsets this batch gets, then creates any
/// missing segment on pgbroker's own connection (DDL inside the caller's
/// transaction would hold its locks until the caller commits), then
/// inserts. Returns the base offset.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn append_locked(
    broker: &Broker,
    client: &impl GenericClient,
    in_caller_tx: bool,
    now: SystemTime,
    meta: &TopicMeta,
    pid: i64,
    records: &[Record],
    idx: &[usize],
) -> Result<i64> {
    let n = i64::try_from(idx.len()).unwrap_or(i64::MAX);
    let row = client.query_one(broker.inner.outbox_lock_sql.as_str(), &[&pid]).await?;
    let (next, segments_end): (i64, i64) = (row.get(0), row.get(1));
    if segments_end < next + n {
        crate::streams::segments::ensure_segments(broker, pid, next + n, meta.segment_records).await?;
    }
    let sql = broker.inner.produce_sql.as_str();
    let (base, _) = append_on(broker, client, sql, in_caller_tx, now, meta, pid, records, idx).await?;
    Ok(base)
}

/// Runs the produce statement for the records at `idx`; returns the base
/// offset and the end of the partition's last segment.
#[allow(clippy::too_many_arguments)]
async fn append_on<S: ToStatement + Sync + Send + ?Sized>(
    broker: &Broker,
    client: &impl GenericClient,
    stmt: &S,
    in_caller_tx: bool,
    now: SystemTime,
    meta: &TopicMeta,
    pid: i64,
    records: &[Record],
    idx: &[usize],
) -> Result<(i64, i64)> {
    let n = i64::try_from(idx.len()).unwrap_or(i64::MAX);
    // Inside a caller's transaction the commit is not ours to see, so
    // every waiter, this process's too, must hear of it by NOTIFY.
    let listener = if in_caller_tx {
        ""
    } else {
        broker.inner.wakeups.listener_id()
    };
    let cols = Columns::new(idx.iter().map(|&i| &records[i]), now);
    let row = client
        .query_opt(
            stmt,
            &[
                &pid,
                &n,
                &cols.ts,
                &cols.keys,
                &cols.values,
                &cols.headers,
                &broker.inner.channel,
                &listener,
            ],
        )
        .await?;
    match row {
        Some(row) => Ok((row.get(0), row.get(1))),
        None => {
            broker.forget_topic(meta.name.as_str());
            Err(Error::UnknownTopic(meta.name.to_string()))
        }
    }
}

/// After a commit of ours: caches the batch and wakes local waiters.
pub(crate) fn after_commit(broker: &Broker, pid: i64, base: i64, now: SystemTime, records: &[Record], idx: &[usize]) {
    cache_committed(broker, pid, base, now, records, idx);
    broker.inner.wakeups.wake(pid);
}

/// Hands a committed batch to the record cache. The cache is keyed by
/// partition id; readers fill in the partition number.
fn cache_committed(broker: &Broker, pid: i64, base: i64, now: SystemTime, records: &[Record], idx: &[usize]) {
    let run = idx
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let r = &records[i];
            StoredRecord {
                partition: 0,
                offset: base + i64::try_from(k).unwrap_or(i64::MAX),
                timestamp: r.timestamp.map_or(now, truncate_to_micros),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            }
        })
        .collect();
    broker.inner.cache.insert(pid, base, run);
}

/// Postgres keeps microseconds; so does everything pgbroker hands out.
pub(crate) fn truncate_to_micros(t: SystemTime) -> SystemTime {
    from_micros(to_micros(t))
}

fn to_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

fn from_micros(us: i64) -> SystemTime {
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn positions(len: usize, results: Vec<(i32, &Vec<usize>, i64)>) -> Vec<RecordPosition> {
    let mut out = vec![
        RecordPosition {
            partition: 0,
            offset: 0
        };
        len
    ];
    for (partition, idx, base) in results {
        for (k, &i) in idx.iter().enumerate() {
            out[i] = RecordPosition {
                partition,
                offset: base + i64::try_from(k).unwrap_or(i64::MAX),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::sql::{check_statement, Schema};

    #[test]
    fn statements_are_complete_and_qualified() {
        let schema = Schema::new("my_schema").expect("valid");
        for template in [super::PRODUCE, super::OUTBOX_LOCK] {
            let sql = schema.qualify(template);
            let problems = check_statement(
                &sql,
                "\"my_schema\".",
                &["partitions", "records", "segments", "waiters"],
            );
            assert!(problems.is_empty(), "{problems:?}\n{sql}");
        }
    }
}
