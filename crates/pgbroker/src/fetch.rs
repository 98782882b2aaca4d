//! Consuming: reading a partition from an offset, resolving offsets, and
//! long-poll fetches woken by producers' notifications.

use std::time::{Duration, Instant, SystemTime};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::headers;
use crate::notify::{ensure_listener, POLL_FALLBACK};
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
    /// Records in offset order, consecutive from the requested offset.
    pub records: Vec<StoredRecord>,
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

/// The fetch statement. `$1` is used, not the joined row's id, so that
/// Postgres prunes segments at plan time and locks only those it reads.
const FETCH_SQL: &str = "SELECT p.log_start, p.next_offset, r.\"offset\", r.ts, r.key, r.value, r.headers
     FROM partitions p
     LEFT JOIN LATERAL (
         SELECT \"offset\", ts, key, value, headers FROM records
         WHERE partition_id = $1 AND \"offset\" >= $2
         ORDER BY \"offset\" LIMIT $3
     ) r ON p.next_offset > $2
     WHERE p.id = $1";

impl Broker {
    /// Reads records of one partition from `offset`. When there are none
    /// yet, waits up to `limits.max_wait` for a producer's commit. An offset
    /// below the log start or above the high watermark is
    /// [`Error::OffsetOutOfRange`].
    pub async fn fetch(
        &self,
        topic: &TopicName,
        partition: i32,
        offset: i64,
        limits: FetchLimits,
    ) -> Result<FetchResult> {
        let (_, pid) = self.partition_id(topic, partition).await?;
        if limits.max_wait.is_zero() {
            return self.fetch_once(topic, partition, pid, offset, limits).await;
        }
        ensure_listener(&self.inner);
        let deadline = Instant::now() + limits.max_wait;
        let wake = self.inner.wakeups.waiter(pid);
        loop {
            // Register before reading, so a commit between the read and the
            // wait still wakes us.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let result = self.fetch_once(topic, partition, pid, offset, limits).await?;
            let now = Instant::now();
            if !result.records.is_empty() || now >= deadline {
                return Ok(result);
            }
            if self.register_waiter(&[pid]).await? {
                continue;
            }
            let nap = (deadline - now).min(POLL_FALLBACK);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn fetch_once(
        &self,
        topic: &TopicName,
        partition: i32,
        pid: i64,
        offset: i64,
        limits: FetchLimits,
    ) -> Result<FetchResult> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(FETCH_SQL).await?;
        let max = i64::try_from(limits.max_records.max(1)).unwrap_or(i64::MAX);
        let rows = client.query(&stmt, &[&pid, &offset, &max]).await?;
        let Some(first) = rows.first() else {
            self.forget_topic(topic.as_str());
            return Err(Error::UnknownTopic(topic.to_string()));
        };
        let (log_start, hw): (i64, i64) = (first.get(0), first.get(1));
        let out_of_range = Error::OffsetOutOfRange {
            offset,
            log_start,
            high_watermark: hw,
        };
        if offset < log_start || offset > hw {
            return Err(out_of_range);
        }
        let mut records = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for row in &rows {
            let Some(off) = row.get::<_, Option<i64>>(2) else {
                break;
            };
            let record = StoredRecord {
                partition,
                offset: off,
                timestamp: row.get(3),
                key: row.get(4),
                value: row.get(5),
                headers: headers::from_json(row.get(6)),
            };
            let size = record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len);
            if !records.is_empty() && bytes + size > limits.max_bytes {
                break;
            }
            bytes += size;
            records.push(record);
        }
        // Retention may have dropped the segment between our read of the
        // log start and of the records: never skip silently.
        if offset < hw && records.first().map(|r| r.offset) != Some(offset) {
            return Err(out_of_range);
        }
        Ok(FetchResult {
            high_watermark: hw.max(records.last().map_or(hw, |r| r.offset + 1)),
            log_start_offset: log_start,
            records,
        })
    }

    /// Resolves earliest, latest or a timestamp to an offset of a partition.
    pub async fn resolve_offset(&self, topic: &TopicName, partition: i32, spec: OffsetSpec) -> Result<i64> {
        let (_, pid) = self.partition_id(topic, partition).await?;
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT log_start, next_offset FROM partitions WHERE id = $1", &[&pid])
            .await?
            .ok_or_else(|| Error::UnknownTopic(topic.to_string()))?;
        let (start, hw): (i64, i64) = (row.get(0), row.get(1));
        match spec {
            OffsetSpec::Earliest => Ok(start),
            OffsetSpec::Latest => Ok(hw),
            OffsetSpec::Timestamp(t) => {
                let row = client
                    .query_one(
                        "SELECT min(\"offset\") FROM records
                         WHERE partition_id = $1 AND \"offset\" >= $2 AND ts >= $3",
                        &[&pid, &start, &t],
                    )
                    .await?;
                Ok(row.get::<_, Option<i64>>(0).unwrap_or(hw))
            }
        }
    }

    /// Log start and high watermark of a partition.
    pub async fn watermarks(&self, topic: &TopicName, partition: i32) -> Result<(i64, i64)> {
        let start = self.resolve_offset(topic, partition, OffsetSpec::Earliest).await?;
        let end = self.resolve_offset(topic, partition, OffsetSpec::Latest).await?;
        Ok((start, end))
    }
}

/// Milliseconds since the epoch of a stored record's timestamp.
pub fn timestamp_ms(record: &StoredRecord) -> i64 {
    to_millis(record.timestamp)
}
