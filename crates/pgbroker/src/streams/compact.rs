//! The cleaner of compacted topics: keeps the latest record of each key.
//!
//! Kafka's rules, on pgbroker's segment tables:
//! - Only closed segments below the *cleanable limit* are touched: the
//!   active segment, anything at or above the last stable offset
//!   ([`last_stable_offset`]) and anything younger than
//!   `min.compaction.lag.ms` stay as written.
//! - Offsets never change: a rewritten segment keeps each survivor's
//!   offset, so the log gains holes that fetches step over.
//! - A record survives when it is the latest of its key below the limit.
//!   A tombstone (a key with no value) survives too, until its segment was
//!   first compacted `delete.retention.ms` ago. Records without a key
//!   (written before the topic became compacted) are kept.
//! - Records of aborted transactions are removed (they are nobody's latest
//!   value); commit and abort markers are kept until the horizon (below),
//!   so that clients' skipping of aborted ranges still finds each range's
//!   end.
//!
//! No row is ever deleted in place. A segment is rewritten in one
//! transaction on one connection: its survivors are copied into a
//! temporary table (reading the segment takes no lock that stops
//! readers: a closed segment no longer changes), then the segment is
//! locked `ACCESS EXCLUSIVE` with a short lock timeout, `TRUNCATE`d, which
//! gives the table a new, empty file, and the survivors are copied back.
//! At commit Postgres unlinks the old file; the lock made sure no reader
//! had it open, and a reader that waited on the lock reads the new file.
//! The segment keeps its name, so fetches still find it from the offset
//! alone, and `records` is never locked (detaching and attaching a
//! partition would lock it and stall every producer). A segment from
//! which nothing would be removed is left alone.
//!
//! Transaction markers wait for the same horizon as tombstones
//! (`delete.retention.ms` after their segment's first cleaning), as in
//! Kafka. Then a commit marker goes, and an abort marker goes with its
//! aborted range (`kafka_aborted_txns`) once none of the transaction's
//! records can be left: the keyed ones are gone with their segments'
//! cleaning, and a record without a key keeps the marker for good.
//!
//! Each pass records, per partition, a checkpoint: the offset below which
//! everything has been compacted, the records left below it, and when the
//! next kept tombstone comes due. A partition is cleaned again when its
//! dirty share reaches `min.cleanable.dirty.ratio`, when its oldest dirty
//! record is older than `max.compaction.lag.ms`, or when a tombstone
//! comes due. Concurrent cleaners (several `pgbroker serve` processes) take
//! a per-partition advisory lock in each rewrite's transaction and skip a
//! partition another one is cleaning.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_postgres::error::SqlState;

use super::segments::segment_table;
use crate::broker::Broker;
use crate::error::Result;

/// What one cleaner pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactionReport {
    /// Partitions of compacted topics that were cleaned.
    pub partitions_cleaned: usize,
    /// Segment tables rewritten.
    pub segments_rewritten: usize,
    /// Records removed (superseded records and expired tombstones).
    pub records_removed: i64,
    /// Bytes of segment tables (indexes included) given back.
    pub bytes_reclaimed: i64,
    /// Partitions skipped because another cleaner held them or a segment
    /// was busy; they are retried on the next pass.
    pub partitions_busy: usize,
}

/// The offset below which transactions are decided. Nothing at or above it
/// is compacted: records of an open transaction may still be aborted.
async fn last_stable_offset(
    client: &tokio_postgres::Client,
    broker: &Broker,
    pid: i64,
    high_watermark: i64,
) -> Result<i64> {
    let row = client.query_one(&broker.inner.sql.txn.last_stable, &[&pid]).await?;
    Ok(row
        .get::<_, Option<i64>>(0)
        .map_or(high_watermark, |o| o.min(high_watermark)))
}

/// One compacted partition as the candidates statement reads it.
struct Candidate {
    pid: i64,
    topic: String,
    partition: i32,
    segment_records: i64,
    log_start: i64,
    next_offset: i64,
    min_lag_ms: i64,
    max_lag_ms: i64,
    delete_retention_ms: i64,
    min_dirty_ratio: f64,
    clean_offset: Option<i64>,
    clean_records: i64,
    tombstones_due: bool,
}

/// One pass over every partition of every compacted topic. With `force`,
/// partitions are cleaned whatever their dirty ratio (the other limits
/// still hold).
pub(crate) async fn compact(broker: &Broker, force: bool) -> Result<CompactionReport> {
    let client = broker.client().await?;
    let rows = client
        .query(&broker.inner.sql.streams.compaction_candidates, &[])
        .await?;
    drop(client);
    let mut report = CompactionReport::default();
    for r in rows {
        let c = Candidate {
            pid: r.get(0),
            topic: r.get(1),
            partition: r.get(2),
            segment_records: r.get(3),
            log_start: r.get(4),
            next_offset: r.get(5),
            min_lag_ms: r.get(6),
            max_lag_ms: r.get(7),
            delete_retention_ms: r.get(8),
            min_dirty_ratio: r.get(9),
            clean_offset: r.get(10),
            clean_records: r.get::<_, Option<i64>>(11).unwrap_or(0),
            tombstones_due: r.get::<_, Option<bool>>(12).unwrap_or(false),
        };
        match clean_partition(broker, &c, force).await {
            Ok(Some(p)) => {
                report.partitions_cleaned += 1;
                report.segments_rewritten += p.segments_rewritten;
                report.records_removed += p.records_removed;
                report.bytes_reclaimed += p.bytes_reclaimed;
            }
            Ok(None) => {}
            Err(Busy) => report.partitions_busy += 1,
        }
    }
    if report.bytes_reclaimed > 0 {
        metrics::counter!("pgbroker_compaction_bytes_reclaimed_total")
            .increment(u64::try_from(report.bytes_reclaimed).unwrap_or(0));
    }
    if report.records_removed > 0 {
        metrics::counter!("pgbroker_compaction_records_removed_total")
            .increment(u64::try_from(report.records_removed).unwrap_or(0));
    }
    Ok(report)
}

/// A partition left for the next pass.
struct Busy;

/// What cleaning one partition did.
#[derive(Default)]
struct PartitionPass {
    segments_rewritten: usize,
    records_removed: i64,
    bytes_reclaimed: i64,
}

/// Cleans one partition when it is due. `Ok(None)`: nothing to do.
async fn clean_partition(
    broker: &Broker,
    c: &Candidate,
    force: bool,
) -> std::result::Result<Option<PartitionPass>, Busy> {
    match try_clean_partition(broker, c, force).await {
        Ok(done) => Ok(done),
        Err(e) => {
            tracing::debug!(topic = c.topic, partition = c.partition, error = %e, "compaction postponed");
            Err(Busy)
        }
    }
}

async fn try_clean_partition(broker: &Broker, c: &Candidate, force: bool) -> Result<Option<PartitionPass>> {
    let sql = &broker.inner.sql.streams;
    let seg = c.segment_records;
    let client = broker.client().await?;
    let stable = last_stable_offset(&client, broker, c.pid, c.next_offset).await?;
    // Whole segments only: the active one (holding the high watermark)
    // and any holding the last stable offset stay as they are.
    let mut limit = (c.next_offset.min(stable) / seg) * seg;
    let clean_from = c.clean_offset.unwrap_or(c.log_start).max(c.log_start);
    if c.min_lag_ms > 0 && limit > c.log_start {
        let row = client
            .query_one(&sql.compaction_young, &[&c.pid, &c.log_start, &limit, &c.min_lag_ms])
            .await?;
        if let Some(young) = row.get::<_, Option<i64>>(0) {
            limit = (young / seg) * seg;
        }
    }
    let dirty = (limit - clean_from).max(0);
    let lag_gauge = |v: i64| {
        metrics::gauge!("pgbroker_compaction_dirty_records", "topic" => c.topic.clone(), "partition" => c.partition.to_string())
            .set(v as f64);
    };
    lag_gauge(c.next_offset - clean_from);
    if limit <= c.log_start || (dirty == 0 && !c.tombstones_due) {
        return Ok(None);
    }
    let ratio = dirty as f64 / (dirty + c.clean_records).max(1) as f64;
    let overdue = dirty > 0 && c.max_lag_ms < i64::MAX && {
        let row = client
            .query_one(&sql.compaction_oldest_dirty, &[&c.pid, &clean_from, &c.max_lag_ms])
            .await?;
        row.get::<_, Option<bool>>(0).unwrap_or(false)
    };
    if !(force || ratio >= c.min_dirty_ratio || overdue || c.tombstones_due) {
        return Ok(None);
    }
    // The latest offset of each key below the limit: Kafka's offset map,
    // held as the set of offsets that survive.
    let latest: HashSet<i64> = client
        .query(&sql.compaction_latest, &[&c.pid, &c.log_start, &limit])
        .await?
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    let segments = client
        .query(
            &sql.compaction_segments,
            &[&c.pid, &c.log_start, &limit, &c.delete_retention_ms],
        )
        .await?;
    drop(client);
    let mut pass = PartitionPass::default();
    let mut kept_total = 0i64;
    let mut tombstones_due: Option<SystemTime> = None;
    let retention = Duration::from_millis(u64::try_from(c.delete_retention_ms).unwrap_or(0));
    for s in segments {
        let (base, end): (i64, i64) = (s.get(0), s.get(1));
        let cleaned_at: Option<SystemTime> = s.get(2);
        let horizon_passed: bool = s.get(3);
        let survivors: Vec<i64> = latest.iter().copied().filter(|o| (base..end).contains(o)).collect();
        let outcome = rewrite_segment(broker, c.pid, (base, end), &survivors, horizon_passed).await?;
        pass.segments_rewritten += usize::from(outcome.rewritten);
        pass.records_removed += outcome.removed;
        pass.bytes_reclaimed += outcome.bytes_before - outcome.bytes_after;
        kept_total += outcome.kept;
        // Past the horizon, what is left waits for no date (a marker kept
        // for records that remain).
        if outcome.tombstones_kept > 0 && !horizon_passed {
            let due = cleaned_at.unwrap_or_else(SystemTime::now) + retention;
            tombstones_due = Some(tombstones_due.map_or(due, |t| t.min(due)));
        }
    }
    let client = broker.client().await?;
    client
        .execute(
            &sql.compaction_checkpoint,
            &[&c.pid, &limit, &kept_total, &tombstones_due, &pass.bytes_reclaimed],
        )
        .await?;
    broker.inner.cache.forget(c.pid);
    lag_gauge(c.next_offset - limit);
    tracing::info!(
        topic = c.topic,
        partition = c.partition,
        segments = pass.segments_rewritten,
        removed = pass.records_removed,
        bytes = pass.bytes_reclaimed,
        "compacted"
    );
    Ok(Some(pass))
}

/// What rewriting one segment did.
struct SegmentOutcome {
    rewritten: bool,
    removed: i64,
    kept: i64,
    tombstones_kept: i64,
    bytes_before: i64,
    bytes_after: i64,
}

/// Rewrites the closed segment `[base, end)` to hold only `survivors`
/// (and records without a key, and transaction markers), dropping
/// tombstones and markers no reader needs too when `past_horizon`, in one
/// transaction; leaves it alone when nothing would go. Marks the segment
/// as cleaned either way.
async fn rewrite_segment(
    broker: &Broker,
    pid: i64,
    (base, end): (i64, i64),
    survivors: &[i64],
    past_horizon: bool,
) -> Result<SegmentOutcome> {
    let sql = &broker.inner.sql.streams;
    let table = segment_table(pid, base);
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    // Advisory locks are database-wide: the key names the schema too, so
    // that brokers of other schemas with the same partition id do not
    // block each other.
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtext('pgbroker.compact'), hashtext($1::text))",
            &[&format!("{}.{pid}", broker.inner.schema)],
        )
        .await?
        .get(0);
    if !locked {
        return Err(crate::error::Error::Busy(format!(
            "partition {pid} is being compacted elsewhere"
        )));
    }
    let stats = |row: tokio_postgres::Row| -> (i64, i64, i64) { (row.get(0), row.get(1), row.get(2)) };
    let before = match tx.query_one(&sql.compaction_segment_stats.with(&table), &[]).await {
        Ok(row) => stats(row),
        // Retention or a topic deletion dropped it meanwhile.
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            return Ok(SegmentOutcome {
                rewritten: false,
                removed: 0,
                kept: 0,
                tombstones_kept: 0,
                bytes_before: 0,
                bytes_after: 0,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let (rows_before, tombstones_before, bytes_before) = before;
    tx.batch_execute(&sql.compaction_keep_table).await?;
    let kept = tx
        .execute(
            &sql.compaction_keep.with(&table),
            &[&pid, &survivors, &past_horizon, &base],
        )
        .await?;
    let kept = i64::try_from(kept).unwrap_or(i64::MAX);
    let mut outcome = SegmentOutcome {
        rewritten: false,
        removed: 0,
        kept: rows_before,
        tombstones_kept: tombstones_before,
        bytes_before,
        bytes_after: bytes_before,
    };
    if kept < rows_before {
        tx.batch_execute(&sql.compaction_swap.with(&table))
            .await
            .map_err(|e| super::segments::lock_busy(e, "compacting a segment"))?;
        tx.execute(&sql.compaction_forget_aborted.with(&table), &[&pid, &base, &end])
            .await?;
        let (rows_after, tombstones_after, bytes_after) =
            stats(tx.query_one(&sql.compaction_segment_stats.with(&table), &[]).await?);
        outcome = SegmentOutcome {
            rewritten: true,
            removed: rows_before - rows_after,
            kept: rows_after,
            tombstones_kept: tombstones_after,
            bytes_before,
            bytes_after,
        };
    }
    tx.execute(&sql.compaction_mark_cleaned, &[&pid, &base]).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The cleaner's state of one partition of a compacted topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanerStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Every offset below this has been compacted (the log start when the
    /// cleaner has not run yet).
    pub clean_offset: i64,
    /// Offsets written and not yet compacted: the cleaner's lag.
    pub dirty_offsets: i64,
    /// Bytes the cleaner has given back in this partition so far.
    pub bytes_reclaimed: i64,
    /// When the cleaner last passed, milliseconds since the epoch.
    pub cleaned_at_ms: Option<i64>,
}

/// The cleaner's state of every partition of every compacted topic.
pub(crate) async fn cleaner_status(broker: &Broker) -> Result<Vec<CleanerStatus>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.streams.cleaner_status, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (log_start, next): (i64, i64) = (r.get(2), r.get(3));
            let clean = r.get::<_, Option<i64>>(4).unwrap_or(log_start).max(log_start);
            CleanerStatus {
                topic: r.get(0),
                partition: r.get(1),
                clean_offset: clean,
                dirty_offsets: next - clean,
                bytes_reclaimed: r.get::<_, Option<i64>>(5).unwrap_or(0),
                cleaned_at_ms: r.get::<_, Option<SystemTime>>(6).map(crate::types::to_millis),
            }
        })
        .collect())
}
