//! A decision: the locked, ongoing transaction's new state, its offsets
//! settled, its partitions and groups forgotten, then its markers and the
//! commit. The first part (`settle`) is one statement; the markers come
//! last (one statement locking the partitions in id order, one writing
//! the markers, and the COMMIT, sent together), because they take the partitions' locks, which every producer to those
//! partitions waits for until the commit. Segments the markers need are
//! made in between, without those locks.

use std::time::SystemTime;

use deadpool_postgres::ClientWrapper;
use futures_util::future::{try_join, try_join3};
use tokio_postgres::Statement;

use super::coordinator::{Finish, TxnRow};
use super::pipelined::Pipelined;
use super::{marker_key, marker_value};
use crate::broker::Broker;
use crate::error::Result;

/// The statements of a decision, prepared on its connection before any
/// is sent: a statement prepared between two that are sent together
/// could let the COMMIT overtake it.
pub(super) struct DecideStatements {
    settle: Statement,
    lock_partitions: Statement,
    markers: Statement,
}

impl DecideStatements {
    /// Prepares (or finds prepared) every statement of a decision.
    pub(super) async fn prepare(broker: &Broker, client: &ClientWrapper) -> Result<DecideStatements> {
        let sql = &broker.inner.sql.txn;
        let (settle, lock_partitions, markers) = try_join3(
            client.prepare_cached(&sql.settle),
            client.prepare_cached(&sql.lock_partitions),
            client.prepare_cached(&sql.write_markers),
        )
        .await?;
        Ok(DecideStatements {
            settle,
            lock_partitions,
            markers,
        })
    }
}

/// A partition a deciding transaction wrote to, as `settle` returns it.
pub(super) struct Written {
    /// The partition's id.
    pub(super) pid: i64,
    /// The transaction's first offset there.
    pub(super) first: i64,
    segment_records: i64,
    /// The partition's next offset, read without a lock.
    next: i64,
    /// The end of its last segment, read without a lock.
    segments_end: i64,
}

/// The first part of a decision on `client`'s open transaction, in one
/// statement (`settle`): records the new state (`finish`: state, epoch
/// and last epoch, when given), makes the pending offsets the groups'
/// (commit), forgets the partitions, groups and pending offsets. Returns
/// the partitions written to, in id order.
pub(super) async fn settle(
    st: &DecideStatements,
    client: &ClientWrapper,
    id: &str,
    commit: bool,
    finish: Option<Finish>,
) -> Result<Vec<Written>> {
    let (state, epoch, last) = finish.map_or(("", 0, 0), |(state, epoch, last)| (state.as_str(), epoch, last));
    let written = client
        .query(&st.settle, &[&id, &commit, &finish.is_some(), &state, &epoch, &last])
        .await?;
    Ok(written
        .iter()
        .map(|w| Written {
            pid: w.get(0),
            first: w.get(1),
            segment_records: w.get(2),
            next: w.get(3),
            segments_end: w.get(4),
        })
        .collect())
}

/// Makes room for `markers` more records on a written partition, without
/// its lock, when its last segment is half used (or `always`).
pub(super) async fn make_room(broker: &Broker, w: &Written, markers: i64, always: bool) -> Result<()> {
    if always {
        crate::streams::segments::ensure_segments_after_miss(broker, w.pid, w.next + markers, w.segment_records)
            .await?;
    } else if w.segments_end - w.next <= w.segment_records / 2 {
        crate::streams::segments::ensure_segments(broker, w.pid, w.next + markers, w.segment_records).await?;
    }
    Ok(())
}

/// Locks partitions `pids` in id order (sent before any `write_markers`
/// of the same transaction).
pub(super) async fn lock_partitions(st: &DecideStatements, client: &ClientWrapper, pids: &[i64]) -> Result<()> {
    client.query(&st.lock_partitions, &[&pids]).await?;
    Ok(())
}

/// The markers of one decided transaction (`row`'s producer and epoch) on
/// the partitions it wrote to (locked by [`lock_partitions`]), with the
/// aborted ranges of an abort.
pub(super) async fn write_markers(
    broker: &Broker,
    st: &DecideStatements,
    client: &ClientWrapper,
    row: &TxnRow,
    commit: bool,
    written: &[Written],
    now: SystemTime,
) -> Result<()> {
    let pids: Vec<i64> = written.iter().map(|w| w.pid).collect();
    let firsts: Vec<i64> = written.iter().map(|w| w.first).collect();
    let (key, value, aborted) = (marker_key(commit), marker_value(), !commit);
    client
        .query(
            &st.markers,
            &[
                &pids,
                &firsts,
                &now,
                &key,
                &value,
                &row.producer_id,
                &row.epoch,
                &aborted,
                &broker.inner.channel,
                &broker.inner.wakeups.listener_id(),
            ],
        )
        .await?;
    Ok(())
}

/// Decides the locked, ongoing transaction `id` and commits `tx`: see the
/// module's documentation (`make_room`: make room for the markers even
/// when the last look said there was some). Returns the partitions
/// written to.
pub(super) async fn decide_locked(
    broker: &Broker,
    tx: &Pipelined,
    id: &str,
    row: &TxnRow,
    commit: bool,
    finish: Option<Finish>,
    always_make_room: bool,
) -> Result<Vec<i64>> {
    let client = tx.client();
    let st = DecideStatements::prepare(broker, client).await?;
    let written = settle(&st, client, id, commit, finish).await?;
    for w in &written {
        make_room(broker, w, 1, always_make_room).await?;
    }
    let pids: Vec<i64> = written.iter().map(|w| w.pid).collect();
    if pids.is_empty() {
        tx.commit().await?;
        return Ok(pids);
    }
    let now = crate::streams::produce::truncate_to_micros(SystemTime::now());
    // The locks in id order by one statement, the markers by the next,
    // and the COMMIT, sent together: one round trip.
    tx.commit_with(try_join(
        lock_partitions(&st, client, &pids),
        write_markers(broker, &st, client, row, commit, &written, now),
    ))
    .await?;
    Ok(pids)
}
