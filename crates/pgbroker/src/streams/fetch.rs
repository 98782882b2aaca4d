//! Consuming: reading a partition from an offset, resolving offsets, and
//! long-poll fetches woken by producers' notifications.

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
) -> Result<FetchResult> {
    let (_, mut pid) = broker.partition_id(topic, partition).await?;
    if limits.max_wait.is_zero() {
        return match fetch_cached(broker, topic, partition, pid, offset, limits).await {
            // A partition id cached for a topic of the same name that
            // was deleted since: `fetch_once` forgot it; look again.
            Err(Error::UnknownTopic(_)) => {
                pid = broker.partition_id(topic, partition).await?.1;
                fetch_cached(broker, topic, partition, pid, offset, limits).await
            }
            other => other,
        };
    }
    ensure_listener(&broker.inner);
    let deadline = Instant::now() + limits.max_wait;
    let wake = broker.inner.wakeups.waiter(pid);
    loop {
        // Register before reading, so a commit between the read and the
        // wait still wakes us.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let result = fetch_cached(broker, topic, partition, pid, offset, limits).await?;
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

/// Serves the fetch from the record cache when it holds the offset,
/// else from Postgres, caching what Postgres returned.
async fn fetch_cached(
    broker: &Broker,
    topic: &TopicName,
    partition: i32,
    pid: i64,
    offset: i64,
    limits: FetchLimits,
) -> Result<FetchResult> {
    let cache = &broker.inner.cache;
    // A compacted topic is served from the cache only in its active
    // segment, which the cleaner never rewrites: the cache may hold
    // records that a cleaner elsewhere has removed since.
    let meta = broker.topic_meta(topic).await?;
    let uncompacted = |hw: i64| !meta.compacted || offset >= hw - hw.rem_euclid(meta.segment_records);
    if let Some((mut records, log_start, high_watermark)) = cache
        .read(pid, offset, limits.max_records, limits.max_bytes)
        .filter(|(_, _, hw)| uncompacted(*hw))
    {
        records.iter_mut().for_each(|r| r.partition = partition);
        return Ok(FetchResult {
            next_offset: records.last().map_or(offset, |r| r.offset + 1),
            records,
            high_watermark,
            log_start_offset: log_start,
        });
    }
    if let Some(log_start) = cache.current_tail(pid, offset) {
        return Ok(FetchResult {
            records: Vec::new(),
            next_offset: offset,
            high_watermark: offset,
            log_start_offset: log_start,
        });
    }
    let result = fetch_once(broker, topic, partition, pid, offset, limits).await?;
    cache.note_watermarks(pid, result.log_start_offset, result.high_watermark);
    // The cache holds consecutive runs only: a read across compaction's
    // holes is not kept.
    let consecutive = result
        .records
        .last()
        .is_some_and(|r| r.offset - offset + 1 == i64::try_from(result.records.len()).unwrap_or(-1));
    if consecutive {
        cache.insert(pid, offset, result.records.clone());
    }
    Ok(result)
}

async fn fetch_once(
    broker: &Broker,
    topic: &TopicName,
    partition: i32,
    pid: i64,
    offset: i64,
    limits: FetchLimits,
) -> Result<FetchResult> {
    let segment_records = broker.topic_meta(topic).await?.segment_records;
    let client = broker.client().await?;
    if client.statement_cache.size() > STATEMENT_CACHE_LIMIT {
        client.statement_cache.clear();
    }
    let stmt = client.prepare_cached(&broker.inner.sql.streams.watermarks).await?;
    let Some(row) = client.query_opt(&stmt, &[&pid]).await? else {
        broker.forget_topic(topic.as_str());
        return Err(Error::UnknownTopic(topic.to_string()));
    };
    let (log_start, hw): (i64, i64) = (row.get(0), row.get(1));
    let out_of_range = |log_start, high_watermark| Error::OffsetOutOfRange {
        offset,
        log_start,
        high_watermark,
    };
    if offset < log_start || offset > hw {
        return Err(out_of_range(log_start, hw));
    }
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut next = offset;
    // One segment at a time, until a limit or the high watermark. A
    // compacted segment has holes: the read goes on from the next record
    // present, and from the next segment once this one has no more.
    'segments: while next < hw && records.len() < limits.max_records.max(1) {
        let base = next - next.rem_euclid(segment_records);
        let want = i64::try_from(limits.max_records.max(1) - records.len()).unwrap_or(i64::MAX);
        let rows = match client
            .prepare_cached(&broker.inner.sql.streams.segment_fetch.with(&segment_table(pid, base)))
            .await
        {
            Ok(stmt) => client.query(&stmt, &[&pid, &next, &want]).await,
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
            let record = StoredRecord {
                partition,
                offset: off,
                timestamp: row.get(1),
                key: row.get(2),
                value: row.get(3),
                headers: headers::from_json(row.get(4)),
            };
            let size = record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len);
            if !records.is_empty() && bytes + size > limits.max_bytes {
                break 'segments;
            }
            bytes += size;
            records.push(record);
            next = off + 1;
        }
        if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= want {
            break; // the record limit
        }
        // This segment has nothing more below the high watermark.
        next = next.max((base + segment_records).min(hw));
    }
    // Records below the high watermark were there when we looked: if
    // none came back and the read covered nothing, retention removed them
    // meanwhile. Never skip.
    if records.is_empty() && offset < hw && next == offset {
        let (start, end) = broker.streams().watermarks(topic, partition).await?;
        return Err(out_of_range(start, end));
    }
    Ok(FetchResult {
        high_watermark: hw.max(next),
        log_start_offset: log_start,
        next_offset: next,
        records,
    })
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
