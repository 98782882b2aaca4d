//! Keeping every session's map of a bucket's segments current.
//!
//! Postgres gives each session a cached map of a partitioned table's
//! partitions, rebuilt after another session attaches or drops one. A
//! session that rebuilds a bucket's map while a segment is being attached
//! or dropped can take in the notice of that change before its rebuild
//! ends, and then keep the map it built from the catalogue as it was
//! before: without the new segment (inserts into it find no partition,
//! reads through `records` skip it) or with a dropped one. It keeps that
//! map until the bucket changes again. So every change to a bucket that
//! this process makes is followed, a moment later, by a change that
//! alters nothing (`_pb_refresh_bucket`), which makes every session
//! rebuild its map from a catalogue that has the first change; and an
//! insert that meets a map without its segment refreshes at once
//! ([`crate::streams::segments::ensure_segments_after_miss`]).

use std::time::Duration;

use crate::broker::Broker;
use crate::error::Result;

/// How long after a change to a bucket its follow-up refresh runs: long
/// enough for every session that was rebuilding its map to have finished.
const FOLLOW_UP: Duration = Duration::from_millis(100);

/// How long the refresh waits for the bucket's lock before it gives up:
/// the next change to the bucket brings another.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '200ms'";

/// Refreshes, a moment from now and in the background, every session's
/// map of the bucket of partition `partition_id`, whose segments just
/// changed. At most one refresh per partition waits at a time.
pub(crate) fn refresh_later(broker: &Broker, partition_id: i64) {
    if !crate::streams::segments::claim(&broker.inner.refreshing, partition_id) {
        return;
    }
    let broker = broker.clone();
    tokio::spawn(async move {
        tokio::time::sleep(FOLLOW_UP).await;
        // Released before the refresh: a change from now on needs one
        // of its own.
        if let Ok(mut waiting) = broker.inner.refreshing.lock() {
            waiting.remove(&partition_id);
        }
        if let Err(e) = refresh(&broker, partition_id).await {
            tracing::debug!(partition_id, error = %e, "refreshing a bucket's map failed");
        }
    });
}

/// Makes every session rebuild its map of partition `partition_id`'s
/// bucket, now.
async fn refresh(broker: &Broker, partition_id: i64) -> Result<()> {
    let mut client = broker.segment_client().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(LOCK_TIMEOUT).await?;
    tx.execute(&broker.inner.sql.streams.refresh_bucket, &[&partition_id])
        .await?;
    tx.commit().await?;
    Ok(())
}
