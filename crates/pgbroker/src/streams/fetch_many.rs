//! Reading several partitions in one call, with one long poll across all of
//! them: what a Kafka Fetch request asks of a broker.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, select_all};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::notify::ensure_listener;
use crate::broker::Broker;
use crate::error::Result;
use crate::streams::fetch::{FetchLimits, FetchResult, Isolation};
use crate::types::TopicName;

/// One partition to read in [`crate::streams::Streams::fetch_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    /// Topic.
    pub topic: TopicName,
    /// Partition.
    pub partition: i32,
    /// First offset to read.
    pub offset: i64,
    /// Most bytes from this partition (the first record is returned even
    /// when larger).
    pub max_bytes: usize,
}

/// Limits on a whole [`crate::streams::Streams::fetch_many`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManyLimits {
    /// Wait until at least this many bytes are available in all
    /// partitions together, or `max_wait` passes.
    pub min_bytes: usize,
    /// Most bytes over all partitions; partitions past it return nothing.
    pub max_bytes: usize,
    /// Most records per partition.
    pub max_records: usize,
    /// Longest wait for `min_bytes`.
    pub max_wait: Duration,
    /// Read committed records only, or everything.
    pub isolation: Isolation,
}

fn bytes_of(result: &Result<FetchResult>) -> usize {
    match result {
        Ok(r) => r
            .records
            .iter()
            .map(|r| r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len))
            .sum(),
        Err(_) => 0,
    }
}

/// Reads each partition from its offset, returning one result per read
/// in input order (an error for one partition, such as
/// [`crate::Error::OffsetOutOfRange`], does not fail the others). When
/// fewer than `limits.min_bytes` are available and no partition failed,
/// waits up to `limits.max_wait`, woken within milliseconds by a commit
/// to any of the partitions.
pub(crate) async fn fetch_many(
    broker: &Broker,
    reads: &[PartitionRead],
    limits: ManyLimits,
) -> Vec<Result<FetchResult>> {
    let deadline = Instant::now() + limits.max_wait;
    let mut pids = Vec::with_capacity(reads.len());
    let mut waiters: Vec<Arc<Notify>> = Vec::with_capacity(reads.len());
    if !limits.max_wait.is_zero() {
        ensure_listener(&broker.inner);
        for r in reads {
            if let Ok((_, pid)) = broker.partition_id(&r.topic, r.partition).await {
                pids.push(pid);
                waiters.push(broker.inner.wakeups.fetch_waiter(pid, limits.isolation));
            }
        }
    }
    loop {
        // Arm the wake-ups before reading, so a commit between the read
        // and the wait still wakes us.
        let mut notified: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            waiters.iter().map(|w| Box::pin(w.notified())).collect();
        for n in &mut notified {
            n.as_mut().enable();
        }
        let results = read_each(broker, reads, limits).await;
        let total: usize = results.iter().map(bytes_of).sum();
        let failed = results.iter().any(|r| r.is_err());
        let now = Instant::now();
        if failed || total >= limits.min_bytes.max(1) || now >= deadline || waiters.is_empty() {
            return results;
        }
        match crate::broker::notify::register_waiter(broker, &pids).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(_) => return results,
        }
        let nap = (deadline - now).min(broker.inner.poll_interval);
        tokio::select! {
            _ = select_all(notified) => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// Most partitions of one fetch read at the same time.
const READS_AT_ONCE: usize = 8;

/// Reads the partitions in turns of [`READS_AT_ONCE`] at a time, each turn
/// bounded by the byte budget left before it; the budget is then spent in
/// request order, so a partition of a turn gets what the ones before it
/// left, as if they had been read one after another. A partition past the
/// budget returns no records. Reading a turn at once keeps a consumer of
/// many partitions from waiting for each read (of the cache or Postgres)
/// in sequence.
async fn read_each(broker: &Broker, reads: &[PartitionRead], limits: ManyLimits) -> Vec<Result<FetchResult>> {
    let mut out = Vec::with_capacity(reads.len());
    let mut budget = limits.max_bytes;
    for turn in reads.chunks(READS_AT_ONCE) {
        let left = budget;
        let results = join_all(turn.iter().map(|r| read_one(broker, r, left, limits))).await;
        for (r, mut result) in turn.iter().zip(results) {
            if let Ok(res) = &mut result {
                if budget == 0 {
                    res.leave_out(r.offset);
                } else {
                    res.keep_bytes(budget);
                }
            }
            budget = budget.saturating_sub(bytes_of(&result));
            out.push(result);
        }
    }
    out
}

/// One partition of a turn, bounded by the budget left before the turn.
async fn read_one(broker: &Broker, r: &PartitionRead, budget: usize, limits: ManyLimits) -> Result<FetchResult> {
    if budget == 0 {
        return fetch_nothing(broker, r, limits.isolation).await;
    }
    let one = FetchLimits {
        max_records: limits.max_records,
        max_bytes: r.max_bytes.min(budget).max(1),
        max_wait: Duration::ZERO,
    };
    crate::streams::fetch::fetch(broker, &r.topic, r.partition, r.offset, one, limits.isolation).await
}

/// A result with no records but current watermarks, for a partition
/// left out by the request's byte budget.
async fn fetch_nothing(broker: &Broker, r: &PartitionRead, limits_isolation: Isolation) -> Result<FetchResult> {
    let (log_start_offset, high_watermark) = broker.streams().watermarks(&r.topic, r.partition).await?;
    let last_stable_offset = match limits_isolation {
        Isolation::ReadUncommitted => high_watermark,
        Isolation::ReadCommitted => crate::txn::coordinator::last_stable_offset(broker, &r.topic, r.partition).await?,
    };
    Ok(FetchResult {
        records: Vec::new(),
        next_offset: r.offset,
        high_watermark,
        log_start_offset,
        last_stable_offset,
        producers: Vec::new(),
        aborted: Vec::new(),
    })
}
