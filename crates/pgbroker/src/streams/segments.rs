//! Segments: the leaf tables of the partitioned `records` table, each
//! holding one fixed offset range of one topic partition. Creating them
//! ahead of producers and dropping them whole for retention is what keeps
//! the log free of DELETE-driven bloat.

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::statements::Statements;
use crate::broker::Broker;
use crate::error::{Error, Result};

/// The name of the segment table for `partition_id` starting at `base`.
/// Built from two integers only, so it is safe to place in SQL text.
pub(crate) fn segment_table(partition_id: i64, base: i64) -> String {
    format!("seg_{partition_id}_{base}")
}

/// Creates the segment `[base, end)` of a partition in its bucket of
/// `records` (the bucket too, when it is the first) and records it.
pub(crate) async fn create_segment(
    tx: &impl GenericClient,
    sql: &Statements,
    partition_id: i64,
    base: i64,
    end: i64,
) -> Result<()> {
    tx.execute(&sql.add_segment, &[&partition_id, &base, &end]).await?;
    Ok(())
}

/// Makes sure segments exist below `at_least` and for at least
/// `headroom` offsets past the partition's committed high watermark.
/// Idempotent; concurrent callers serialise per partition on an
/// advisory lock, which appends also wait on before they insert (see
/// `OUTBOX_LOCK`). It never locks the partition's row, so it can run
/// while a caller's open transaction holds that row (the outbox path).
pub(crate) async fn ensure_segments(broker: &Broker, partition_id: i64, at_least: i64, headroom: i64) -> Result<()> {
    ensure(broker, partition_id, at_least, headroom, false).await
}

/// [`ensure_segments`] after an insert found no segment for its offsets.
/// When the catalogue already has every segment the insert needed, the
/// inserting session's map of the partition's bucket missed one (see
/// [`crate::streams::bucket_maps`]): this makes every session rebuild
/// that map.
pub(crate) async fn ensure_segments_after_miss(
    broker: &Broker,
    partition_id: i64,
    at_least: i64,
    headroom: i64,
) -> Result<()> {
    ensure(broker, partition_id, at_least, headroom, true).await
}

async fn ensure(broker: &Broker, partition_id: i64, at_least: i64, headroom: i64, missed: bool) -> Result<()> {
    let mut client = broker.segment_client().await?;
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('pgbroker.segments'), hashtext($1::text))",
        &[&partition_id.to_string()],
    )
    .await?;
    let row = tx
        .query_opt(&broker.inner.sql.streams.segment_extent, &[&partition_id])
        .await?
        .ok_or_else(|| Error::Busy(format!("partition {partition_id} was deleted")))?;
    let (next, size, mut end): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let up_to = at_least.max(next + headroom);
    if end >= up_to {
        if missed {
            tracing::warn!(
                partition_id,
                "an insert found no segment the catalogue has; refreshing its bucket's map"
            );
            tx.execute(&broker.inner.sql.streams.refresh_bucket, &[&partition_id])
                .await
                .map_err(|e| lock_busy(e, "refreshing a bucket's map"))?;
            tx.commit().await?;
        }
        return Ok(());
    }
    while end < up_to {
        create_segment(&*tx, &broker.inner.sql.streams, partition_id, end, end + size)
            .await
            .map_err(|e| match e {
                Error::Db(e) => lock_busy(e, "creating a segment"),
                other => other,
            })?;
        end += size;
    }
    tx.commit().await?;
    crate::streams::bucket_maps::refresh_later(broker, partition_id);
    Ok(())
}

/// Makes room ahead for partition `partition_id` in the background, so
/// that the answer to a committed batch does not wait for the next
/// segment's DDL. At most one such task runs per partition; a failure is
/// logged and left to the next producer, or to the fallback path of one
/// that meets no segment.
pub(crate) fn make_room_ahead(broker: &Broker, partition_id: i64, headroom: i64) {
    if !claim(&broker.inner.making_room, partition_id) {
        return;
    }
    let guard = RoomGuard {
        broker: broker.clone(),
        partition_id,
    };
    tokio::spawn(async move {
        if let Err(e) = ensure_segments(&guard.broker, guard.partition_id, 0, headroom).await {
            tracing::warn!(partition_id = guard.partition_id, error = %e, "creating the next segment ahead failed");
        }
        drop(guard);
    });
}

/// Adds `partition_id` to `set`; false when it was there already (or the
/// set's lock is poisoned).
pub(crate) fn claim(set: &std::sync::Mutex<std::collections::HashSet<i64>>, partition_id: i64) -> bool {
    set.lock().map(|mut busy| busy.insert(partition_id)).unwrap_or(false)
}

/// Releases a partition's claim in `making_room`, however its task ends.
struct RoomGuard {
    broker: Broker,
    partition_id: i64,
}

impl Drop for RoomGuard {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.broker.inner.making_room.lock() {
            busy.remove(&self.partition_id);
        }
    }
}

/// One pass of retention: drops every closed segment that is past its
/// topic's retention time or beyond its retention bytes, advancing the
/// partition's log start first, and drops segment tables left over from
/// deleted topics. Returns how many segment tables were dropped.
pub(crate) async fn enforce_retention(broker: &Broker) -> Result<usize> {
    let client = broker.client().await?;
    client.execute(&broker.inner.sql.streams.expire_waiters, &[]).await?;
    let rows = client
        .query(&broker.inner.sql.streams.retention_candidates, &[])
        .await?;
    let mut expired: Vec<(i64, i64)> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let pid: i64 = rows[i].get(0);
        let group: Vec<_> = rows[i..].iter().take_while(|r| r.get::<_, i64>(0) == pid).collect();
        i += group.len();
        let mut total: i64 = group.iter().map(|r| r.get::<_, i64>(6)).sum();
        for r in &group {
            let (end, next): (i64, i64) = (r.get(2), r.get(5));
            let (retention_ms, retention_bytes): (Option<i64>, Option<i64>) = (r.get(3), r.get(4));
            let size: i64 = r.get(6);
            if end > next {
                break; // the active segment is never dropped
            }
            let over_size = retention_bytes.is_some_and(|limit| total - size >= limit);
            let too_old = match retention_ms {
                Some(ms) => last_record_older_than(broker, &client, pid, r.get(1), end - 1, ms).await?,
                None => false,
            };
            if !(over_size || too_old) {
                break;
            }
            total -= size;
            expired.push((pid, end));
        }
    }
    for (pid, end) in &expired {
        broker.inner.cache.advance_log_start(*pid, *end);
        client.execute(&broker.inner.sql.streams.cut_log, &[pid, end]).await?;
    }
    drop_pending_segments(broker).await
}

/// Whether the record at `offset`, in the segment starting at `base`,
/// is older than the retention time. A missing record or segment counts
/// as expired.
async fn last_record_older_than(
    broker: &Broker,
    client: &tokio_postgres::Client,
    partition_id: i64,
    base: i64,
    offset: i64,
    retention_ms: i64,
) -> Result<bool> {
    let table = segment_table(partition_id, base);
    let row = client
        .query_opt(
            &broker.inner.sql.streams.segment_record_older.with(&table),
            &[&partition_id, &offset, &(retention_ms as f64)],
        )
        .await;
    match row {
        Ok(row) => Ok(row.is_none_or(|r| r.get::<_, bool>(0))),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Drops segment tables already cut off from the log (by retention or a
/// deleted topic). Tables that cannot be locked quickly stay for the
/// next pass. Returns how many were dropped.
pub(crate) async fn drop_pending_segments(broker: &Broker) -> Result<usize> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.streams.segments_to_drop, &[]).await?;
    let mut dropped = 0;
    for row in rows {
        let table: String = row.get(0);
        if !is_segment_name(&table) {
            continue;
        }
        let sql = broker.inner.sql.streams.segment_drop.with(&table);
        let outcome = client.batch_execute(&sql).await;
        if let Err(e) = outcome {
            client.batch_execute("RESET lock_timeout").await?;
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                tracing::debug!(table, "segment already gone");
            } else {
                tracing::debug!(table, error = %e, "segment drop postponed");
                continue;
            }
        }
        if let Some(pid) = segment_partition(&table) {
            crate::streams::bucket_maps::refresh_later(broker, pid);
        }
        client
            .execute(&broker.inner.sql.streams.forget_segment, &[&table])
            .await?;
        client
            .execute(&broker.inner.sql.streams.forget_orphan_segment, &[&table])
            .await?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Runs retention, compaction, segment clean-up and segment creation ahead of
/// producers every `interval`, and queue maintenance, until the
/// returned task is aborted. Errors are logged and the loop goes on.
pub(crate) fn spawn_maintenance(broker: &Broker, interval: Duration) -> tokio::task::JoinHandle<()> {
    let broker = broker.clone();
    // Applications that use queues only through the SQL functions
    // rely on this process for queue maintenance too.
    crate::queues::maintain::start_queue_maintenance(&broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match broker.maintenance().enforce_retention().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(segments = n, "retention dropped segments"),
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
            if let Err(e) = broker.maintenance().compact(false).await {
                tracing::warn!(error = %e, "compaction pass failed");
            }
            if let Err(e) = crate::sql_api::ahead::create_segments_ahead(&broker).await {
                tracing::warn!(error = %e, "creating segments ahead failed");
            }
        }
    })
}

/// True for names produced by [`segment_table`]; anything else found in the
/// catalog is never placed in SQL text.
fn is_segment_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("seg_") else {
        return false;
    };
    let mut parts = rest.split('_');
    let ok = |p: Option<&str>| p.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The partition id in a segment table's name.
fn segment_partition(name: &str) -> Option<i64> {
    name.strip_prefix("seg_")?.split('_').next()?.parse().ok()
}

/// Maps a lock timeout to [`Error::Busy`]; anything else stays a database
/// error.
pub(crate) fn lock_busy(e: tokio_postgres::Error, doing: &str) -> Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
        Error::Busy(format!("lock not available while {doing}"))
    } else {
        Error::Db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert!(is_segment_name(&segment_table(12, 3400)));
        for bad in ["seg_1", "seg_1_2_3", "seg_a_1", "x; drop", "seg_1_"] {
            assert!(!is_segment_name(bad));
        }
        assert_eq!(segment_partition(&segment_table(12, 3400)), Some(12));
        assert_eq!(segment_partition("seg_a_1"), None);
    }
}
