//! Consuming: reading a partition from an offset, resolving offsets, and
//! long-poll fetches woken by producers' notifications.

use bytes::Bytes;
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::error::SqlState;

use super::segments::segment_table;
use crate::broker::notify::ensure_listener;
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::headers;
use crate::types::{to_millis, StoredRecord, TopicName};

/// Bounds on one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Most records returned.
    pub max_records: usize,
    /// Most bytes (key, value, headers) returned; the first record is
    /// returned even when larger, so a consumer can always progress.
    pub max_bytes: usize,
    /// How long to wait for a record when there is none yet at the offset.
    pub max_wait: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_records: 500,
            max_bytes: 1 << 20,
            max_wait: Duration::ZERO,
        }
    }
}

/// What a fetch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// Records in offset order from the requested offset: consecutive,
    /// except where compaction removed records (a compacted topic's log
    /// has holes; offsets never change).
    pub records: Vec<StoredRecord>,
    /// Where the next fetch continues: one past the last offset this read
    /// covered. Past the last record when compaction removed the records
    /// after it, so a reader steps over a removed tail instead of asking
    /// for it again.
    pub next_offset: i64,
    /// One past the last committed offset, as of the read.
    pub high_watermark: i64,
    /// First offset still stored.
    pub log_start_offset: i64,
    /// Where read_committed reads stop: the first offset of the oldest
    /// transaction still open, else the high watermark.
    pub last_stable_offset: i64,
    /// The records above written by transactional producers, and the
    /// commit and abort markers among them, by offset. Empty when there
    /// are none.
    pub producers: Vec<RecordProducer>,
    /// For a read_committed fetch, the aborted transactions overlapping
    /// the records returned, by first offset.
    pub aborted: Vec<AbortedTxn>,
}

/// Which records a fetch may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Up to the high watermark, transactions open or not.
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset, with the aborted transactions of the
    /// range, as Kafka's read_committed.
    ReadCommitted,
}

/// The producer of one record of a transaction, or of a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordProducer {
    /// The record's offset.
    pub offset: i64,
    /// The transactional producer's id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// A commit or abort marker (a control record) rather than data.
    pub control: bool,
}

/// An aborted transaction of a partition: the producer's records from
/// `first_offset` to its abort marker at `last_offset` are to be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer id.
    pub producer_id: i64,
    /// Its first record in the partition.
    pub first_offset: i64,
    /// Its abort marker.
    pub last_offset: i64,
}

impl FetchResult {
    /// Keeps only what a reader of committed data sees: drops the markers
    /// and the records of aborted transactions (a read_committed fetch
    /// already stopped at the last stable offset). `next_offset` is kept,
    /// so a reader steps over what was dropped.
    pub fn keep_committed(&mut self) {
        if self.producers.is_empty() {
            return;
        }
        let (producers, aborted) = (&self.producers, &self.aborted);
        let dropped = |offset: i64| {
            producers.iter().find(|p| p.offset == offset).is_some_and(|p| {
                p.control
                    || aborted
                        .iter()
                        .any(|a| a.producer_id == p.producer_id && a.first_offset <= offset && offset < a.last_offset)
            })
        };
        self.records.retain(|r| !dropped(r.offset));
        let kept: Vec<i64> = self.records.iter().map(|r| r.offset).collect();
        self.producers.retain(|p| kept.binary_search(&p.offset).is_ok());
    }
}

impl FetchResult {
    /// Keeps the records that fit in `max_bytes` of keys and values, the
    /// first one always; when any is dropped, the read ends after the last
    /// one kept.
    pub(crate) fn keep_bytes(&mut self, max_bytes: usize) {
        let mut bytes = 0usize;
        let fit = self
            .records
            .iter()
            .position(|r| {
                bytes += r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len);
                bytes > max_bytes
            })
            .map_or(self.records.len(), |at| at.max(1));
        if fit < self.records.len() {
            self.records.truncate(fit);
            self.next_offset = self.records.last().map_or(self.next_offset, |r| r.offset + 1);
            self.trim_to_next();
        }
    }

    /// Drops every record: the read returns only the watermarks and ends
    /// where it began, at `offset`.
    pub(crate) fn leave_out(&mut self, offset: i64) {
        self.records.clear();
        self.next_offset = offset;
        self.trim_to_next();
    }

    /// Forgets the producers and aborted transactions at or past
    /// `next_offset`.
    fn trim_to_next(&mut self) {
        let next = self.next_offset;
        self.producers.retain(|p| p.offset < next);
        self.aborted.retain(|a| a.first_offset < next);
    }
}

/// An offset to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first stored offset.
    Earliest,
    /// The high watermark: the next offset to be written.
    Latest,
    /// The first offset whose timestamp is at or after this time (the high
    /// watermark when there is none).
    Timestamp(SystemTime),
}

/// Prepared statements kept per connection before the cache is emptied:
/// fetches prepare one statement per segment table, and segments roll.
const STATEMENT_CACHE_LIMIT: usize = 512;

/// Reads records of one partition from `offset`. When there are none
/// yet, waits up to `limits.max_wait` for a producer's commit. An offset
/// below the log start or above the high watermark is
/// [`Error::OffsetOutOfRange`].
pub(crate) async fn fetch(
    broker: &Broker,
    topic: &TopicName,
    partition: i32,
    offset: i64,
    limits: FetchLimits,
    isolation: Isolation,
) -> Result<FetchResult> {
    let (_, mut pid) = broker.partition_id(topic, partition).await?;
    let read = Read {
        topic,
        partition,
        offset,
        limits,
        isolation,
    };
    if limits.max_wait.is_zero() {
        return match fetch_cached(broker, pid, &read).await {
            // A partition id cached for a topic of the same name that
            // was deleted since: `fetch_once` forgot it; look again.
            Err(Error::UnknownTopic(_)) => {
                pid = broker.partition_id(topic, partition).await?.1;
                fetch_cached(broker, pid, &read).await
            }
            other => other,
        };
    }
    ensure_listener(&broker.inner);
    let deadline = Instant::now() + limits.max_wait;
    let wake = broker.inner.wakeups.fetch_waiter(pid, isolation);
    loop {
        // Register before reading, so a commit between the read and the
        // wait still wakes us.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let result = fetch_cached(broker, pid, &read).await?;
        let now = Instant::now();
        if !result.records.is_empty() || now >= deadline {
            return Ok(result);
        }
        if crate::broker::notify::register_waiter(broker, &[pid]).await? {
            continue;
        }
        let nap = (deadline - now).min(broker.inner.poll_interval);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// One partition read.
pub(super) struct Read<'a> {
    pub topic: &'a TopicName,
    pub partition: i32,
    pub offset: i64,
    pub limits: FetchLimits,
    pub isolation: Isolation,
}

/// Serves the fetch from the record cache when it holds the offset,
/// else from Postgres, caching what Postgres returned. The cache holds no
/// record of a transaction: a read_committed read of it stops at the last
/// stable offset read with the watermarks, and goes to Postgres when that
/// may have moved.
async fn fetch_cached(broker: &Broker, pid: i64, read: &Read<'_>) -> Result<FetchResult> {
    let (partition, offset, limits) = (read.partition, read.offset, read.limits);
    let cache = &broker.inner.cache;
    // A compacted topic is served from the cache only in its active
    // segment, which the cleaner never rewrites: the cache may hold
    // records that a cleaner elsewhere has removed since.
    let meta = broker.topic_meta(read.topic).await?;
    let uncompacted = |hw: i64| !meta.compacted || offset >= hw - hw.rem_euclid(meta.segment_records);
    let bound = cache.committed_bound(pid);
    let usable = read.isolation == Isolation::ReadUncommitted || bound.is_some();
    let bound = bound.unwrap_or(i64::MAX);
    if usable {
        if let Some((mut records, log_start, high_watermark)) = cache
            .read(pid, offset, limits.max_records, limits.max_bytes)
            .filter(|(_, _, hw)| uncompacted(*hw))
        {
            if read.isolation == Isolation::ReadCommitted {
                records.retain(|r| r.offset < bound);
            }
            records.iter_mut().for_each(|r| r.partition = partition);
            return Ok(FetchResult {
                next_offset: records.last().map_or(offset, |r| r.offset + 1),
                records,
                high_watermark,
                log_start_offset: log_start,
                last_stable_offset: bound.min(high_watermark),
                producers: Vec::new(),
                aborted: Vec::new(),
            });
        }
        if let Some(log_start) = cache.current_tail(pid, offset) {
            return Ok(FetchResult {
                records: Vec::new(),
                next_offset: offset,
                high_watermark: offset,
                log_start_offset: log_start,
                last_stable_offset: bound.min(offset),
                producers: Vec::new(),
                aborted: Vec::new(),
            });
        }
    }
    // A read_committed read at the start of the oldest open transaction,
    // confirmed since no decision: nothing to read yet.
    if read.isolation == Isolation::ReadCommitted {
        if let Some((log_start, high_watermark)) = cache.committed_tail(pid, offset) {
            return Ok(FetchResult {
                records: Vec::new(),
                next_offset: offset,
                high_watermark,
                log_start_offset: log_start,
                last_stable_offset: offset,
                producers: Vec::new(),
                aborted: Vec::new(),
            });
        }
    }
    let era = cache.era();
    let result = fetch_once(broker, pid, read).await?;
    cache.note_watermarks(pid, result.log_start_offset, result.high_watermark);
    cache.note_stable(
        pid,
        (result.last_stable_offset < result.high_watermark).then_some(result.last_stable_offset),
        era,
    );
    // The cache holds consecutive runs of plain records only: a read
    // across compaction's holes is not kept, nor anything from the first
    // record of a transaction on.
    let plain = result.producers.first().map_or(result.records.len(), |p| {
        usize::try_from(p.offset - offset)
            .unwrap_or(0)
            .min(result.records.len())
    });
    let run = &result.records[..plain];
    let consecutive = run
        .last()
        .is_some_and(|r| r.offset - offset + 1 == i64::try_from(run.len()).unwrap_or(-1));
    if consecutive {
        cache.insert_read(pid, offset, run);
    }
    Ok(result)
}

async fn fetch_once(broker: &Broker, pid: i64, read: &Read<'_>) -> Result<FetchResult> {
    let (topic, partition, offset) = (read.topic, read.partition, read.offset);
    let segment_records = broker.topic_meta(topic).await?.segment_records;
    let client = broker.client().await?;
    trim_statement_cache(&client);
    // A read_committed fetch learns the aborted transactions with the
    // watermarks, on the primary (a standby may not have replayed yet the
    // abort of a transaction whose records it has), in the same snapshot:
    // every transaction below the last stable offset read is decided.
    let committed = read.isolation == Isolation::ReadCommitted;
    let found = if committed {
        let stmt = client
            .prepare_cached(&broker.inner.sql.txn.watermarks_committed)
            .await?;
        client.query_opt(&stmt, &[&pid, &offset]).await?
    } else {
        let stmt = client.prepare_cached(&broker.inner.sql.streams.watermarks).await?;
        client.query_opt(&stmt, &[&pid]).await?
    };
    let Some(row) = found else {
        broker.forget_topic(topic.as_str());
        return Err(Error::UnknownTopic(topic.to_string()));
    };
    let (log_start, hw, open): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
    let lso = open.map_or(hw, |o| o.min(hw));
    let out_of_range = |log_start, high_watermark| Error::OffsetOutOfRange {
        offset,
        log_start,
        high_watermark,
    };
    if offset < log_start || offset > hw {
        return Err(out_of_range(log_start, hw));
    }
    // read_committed stops at the last stable offset.
    let end = match read.isolation {
        Isolation::ReadUncommitted => hw,
        Isolation::ReadCommitted => lso,
    };
    let found = match super::fetch_replica::read(broker, pid, read, segment_records, end).await {
        Some(found) => found,
        None => {
            if offset < end {
                crate::broker::replicas::primary_served();
            }
            read_segments(broker, &client, pid, read, segment_records, end).await?
        }
    };
    let Found {
        records,
        producers,
        next,
    } = found;
    // Records below the end were there when we looked: if none came back
    // and the read covered nothing, retention removed them meanwhile.
    // Never skip.
    if records.is_empty() && offset < end && next == offset {
        let (start, end) = broker.streams().watermarks(topic, partition).await?;
        return Err(out_of_range(start, end));
    }
    // The aborted transactions overlapping what was read.
    let mut aborted = Vec::new();
    if committed && producers.iter().any(|p| !p.control) {
        let (ids, firsts, lasts): (Vec<i64>, Vec<i64>, Vec<i64>) = (row.get(3), row.get(4), row.get(5));
        aborted = ids
            .into_iter()
            .zip(firsts.into_iter().zip(lasts))
            .filter(|(_, (first, _))| *first < next)
            .map(|(producer_id, (first_offset, last_offset))| AbortedTxn {
                producer_id,
                first_offset,
                last_offset,
            })
            .collect();
    }
    Ok(FetchResult {
        high_watermark: hw.max(next),
        log_start_offset: log_start,
        last_stable_offset: lso,
        next_offset: next,
        records,
        producers,
        aborted,
    })
}

/// Forgets the prepared statements of a connection that has collected too
/// many (one per segment table read).
pub(super) fn trim_statement_cache(client: &deadpool_postgres::ClientWrapper) {
    if client.statement_cache.size() > STATEMENT_CACHE_LIMIT {
        client.statement_cache.clear();
    }
}

/// What the segment tables gave for a read.
pub(super) struct Found {
    pub records: Vec<StoredRecord>,
    pub producers: Vec<RecordProducer>,
    /// The offset after the last record read, or after the stretch known
    /// to hold none.
    pub next: i64,
}

/// Reads `read`'s records below `end` from the segment tables, on
/// `client`'s server (the primary, or a standby that has replayed them).
pub(super) async fn read_segments(
    broker: &Broker,
    client: &deadpool_postgres::ClientWrapper,
    pid: i64,
    read: &Read<'_>,
    segment_records: i64,
    end: i64,
) -> Result<Found> {
    let (partition, offset, limits) = (read.partition, read.offset, read.limits);
    let mut records = Vec::new();
    let mut producers = Vec::new();
    let mut bytes = 0usize;
    let mut next = offset;
    // One segment at a time, until a limit or the end. A compacted
    // segment has holes: the read goes on from the next record present,
    // and from the next segment once this one has no more.
    'segments: while next < end && records.len() < limits.max_records.max(1) {
        if !records.is_empty() && bytes >= limits.max_bytes {
            break;
        }
        let base = next - next.rem_euclid(segment_records);
        let rows_left = limits.max_records.max(1) - records.len();
        let want = i64::try_from(rows_to_ask(rows_left, records.len(), bytes, limits.max_bytes)).unwrap_or(i64::MAX);
        let rows = match client
            .prepare_cached(&broker.inner.sql.streams.segment_fetch.with(&segment_table(pid, base)))
            .await
        {
            Ok(stmt) => client.query(&stmt, &[&pid, &next, &want, &end]).await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(rows) => rows,
            // Retention dropped the segment since we read the log start.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => break,
            Err(e) => return Err(e.into()),
        };
        for row in &rows {
            let off: i64 = row.get(0);
            if off >= end {
                next = end;
                break 'segments;
            }
            let record = StoredRecord {
                partition,
                offset: off,
                timestamp: row.get(1),
                key: row.get::<_, Option<&[u8]>>(2).map(Bytes::copy_from_slice),
                value: row.get::<_, Option<&[u8]>>(3).map(Bytes::copy_from_slice),
                headers: headers::from_json(row.get(4)),
            };
            let size = record.key.as_ref().map_or(0, Bytes::len) + record.value.as_ref().map_or(0, Bytes::len);
            if !records.is_empty() && bytes + size > limits.max_bytes {
                break 'segments;
            }
            if let Some(producer_id) = row.get::<_, Option<i64>>(5) {
                producers.push(RecordProducer {
                    offset: off,
                    producer_id,
                    epoch: row.get::<_, Option<i16>>(6).unwrap_or(0),
                    control: row.get::<_, Option<bool>>(7).unwrap_or(false),
                });
            }
            bytes += size;
            records.push(record);
            next = off + 1;
        }
        if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= want {
            continue; // this segment may hold more: the loop's limits decide
        }
        // This segment has nothing more below the end.
        next = next.max((base + segment_records).min(end));
    }
    Ok(Found {
        records,
        producers,
        next,
    })
}

/// Rows asked of the first query of a read: enough for a consumer at the
/// tail, few enough that a read of large records does not fetch many
/// it must drop.
const FIRST_ROWS: usize = 32;

/// How many rows the next query of a read asks for, `rows_left` at most:
/// [`FIRST_ROWS`] first, then what the bytes left would hold at the
/// average size read so far, with an eighth more. Asking for the record
/// limit instead would have Postgres read, send and the broker decode
/// rows past the byte limit only to drop them: more than half of a
/// 10,000-record read of 256-byte records under 1 MiB.
fn rows_to_ask(rows_left: usize, read: usize, bytes: usize, max_bytes: usize) -> usize {
    if read == 0 {
        return rows_left.min(FIRST_ROWS);
    }
    let average = (bytes / read).max(1);
    let fit = max_bytes.saturating_sub(bytes) / average;
    (fit + fit / 8 + 1).min(rows_left)
}

/// Resolves earliest, latest or a timestamp to an offset of a partition.
pub(crate) async fn resolve_offset(
    broker: &Broker,
    topic: &TopicName,
    partition: i32,
    spec: OffsetSpec,
) -> Result<i64> {
    let (_, mut pid) = broker.partition_id(topic, partition).await?;
    let client = broker.client().await?;
    let watermarks = &broker.inner.sql.streams.watermarks;
    let mut found = client.query_opt(watermarks, &[&pid]).await?;
    if found.is_none() {
        // The cached partition id may belong to a topic of the same
        // name deleted since: look the name up afresh, once.
        broker.forget_topic(topic.as_str());
        pid = broker.partition_id(topic, partition).await?.1;
        found = client.query_opt(watermarks, &[&pid]).await?;
    }
    let row = found.ok_or_else(|| Error::UnknownTopic(topic.to_string()))?;
    let (start, hw): (i64, i64) = (row.get(0), row.get(1));
    match spec {
        OffsetSpec::Earliest => Ok(start),
        OffsetSpec::Latest => Ok(hw),
        OffsetSpec::Timestamp(t) => {
            let row = client
                .query_one(&broker.inner.sql.streams.offset_for_time, &[&pid, &start, &t])
                .await?;
            Ok(row.get::<_, Option<i64>>(0).unwrap_or(hw))
        }
    }
}

/// Log start and high watermark of a partition.
pub(crate) async fn watermarks(broker: &Broker, topic: &TopicName, partition: i32) -> Result<(i64, i64)> {
    let start = broker
        .streams()
        .resolve_offset(topic, partition, OffsetSpec::Earliest)
        .await?;
    let end = broker
        .streams()
        .resolve_offset(topic, partition, OffsetSpec::Latest)
        .await?;
    Ok((start, end))
}

/// Milliseconds since the epoch of a stored record's timestamp.
pub fn timestamp_ms(record: &StoredRecord) -> i64 {
    to_millis(record.timestamp)
}

#[cfg(test)]
mod tests {
    use super::{rows_to_ask, AbortedTxn, FetchResult, RecordProducer, FIRST_ROWS};
    use crate::types::StoredRecord;
    use std::time::SystemTime;

    /// Records of 100 bytes at offsets 10, 11, 13, 14 (12 compacted away),
    /// the last two a transaction's, read to offset 20.
    fn read() -> FetchResult {
        let rec = |offset| StoredRecord {
            partition: 0,
            offset,
            timestamp: SystemTime::UNIX_EPOCH,
            key: None,
            value: Some(vec![1; 100].into()),
            headers: Vec::new(),
        };
        let tag = |offset| RecordProducer {
            offset,
            producer_id: 7,
            epoch: 0,
            control: false,
        };
        FetchResult {
            records: vec![rec(10), rec(11), rec(13), rec(14)],
            next_offset: 20,
            high_watermark: 20,
            log_start_offset: 0,
            last_stable_offset: 20,
            producers: vec![tag(13), tag(14)],
            aborted: vec![AbortedTxn {
                producer_id: 7,
                first_offset: 13,
                last_offset: 15,
            }],
        }
    }

    fn offsets(r: &FetchResult) -> Vec<i64> {
        r.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_read_keeps_what_its_share_of_the_budget_holds() {
        let mut all = read();
        all.keep_bytes(400);
        assert_eq!(
            (offsets(&all), all.next_offset, all.producers.len()),
            (vec![10, 11, 13, 14], 20, 2)
        );
        let mut two = read();
        two.keep_bytes(299);
        assert_eq!((offsets(&two), two.next_offset), (vec![10, 11], 12));
        assert!(
            two.producers.is_empty() && two.aborted.is_empty(),
            "nothing of the transaction is left"
        );
        let mut first = read();
        first.keep_bytes(1);
        assert_eq!(
            (offsets(&first), first.next_offset),
            (vec![10], 11),
            "the first record always"
        );
        let mut none = read();
        none.leave_out(10);
        assert_eq!(
            (offsets(&none), none.next_offset, none.high_watermark),
            (vec![], 10, 20)
        );
        assert!(none.producers.is_empty() && none.aborted.is_empty());
    }

    #[test]
    fn reads_ask_for_about_what_the_bytes_left_hold() {
        // First a few rows, never more than the records left.
        assert_eq!(rows_to_ask(10_000, 0, 0, 1 << 20), FIRST_ROWS);
        assert_eq!(rows_to_ask(5, 0, 0, 1 << 20), 5);
        // 32 records of 256 bytes read: the 1 MiB holds 4,064 more; an
        // eighth more is asked, not the 10,000 records left.
        assert_eq!(rows_to_ask(9_968, 32, 32 * 256, 1 << 20), 4_064 + 508 + 1);
        // Bytes spent: one more row, which the byte limit then refuses.
        assert_eq!(rows_to_ask(100, 10, 5_000, 4_000), 1);
        // Never above the records left.
        assert_eq!(rows_to_ask(7, 32, 320, 1 << 20), 7);
    }
}
