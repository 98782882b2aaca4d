//! Queue maintenance: partition rotation, archive expiry and clean-up of
//! rows left by deleted queues.
//!
//! Every acknowledged or claimed message leaves a dead row version and dead
//! index entries behind. Vacuum removes them only when no transaction
//! anywhere in the cluster is older; one long transaction elsewhere and a
//! busy queue table grows without bound, and every claim walks the dead
//! entries at the front of its index. So messages live in two partitions:
//! sends go to the current one; a rotation locks the other one, copies its
//! few live rows into the current one, TRUNCATEs it (which frees its
//! space at once, whatever snapshots are open) and makes it current. The
//! older partition drains first, since claims take the oldest messages
//! first, so a rotation moves little. It is skipped while the older
//! partition holds more than [`MAX_MOVE`] live rows (a backlog): then it
//! drains first, and vacuum keeps up meanwhile.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use crate::broker::Broker;
use crate::error::Result;

/// How often a broker that uses queues checks whether maintenance is due.
const TICK: Duration = Duration::from_secs(1);
/// Least time between two scheduled rotations.
const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(1);
/// Scheduled rotations wait until the partitions hold this much. Each
/// rotation briefly holds back every statement on the queue tables and
/// makes every connection plan its statements again: at 4 MiB, a queue
/// at 3,000 messages a second rotated every second and those pauses
/// nearly doubled its 99th-percentile latency.
const ROTATE_MIN_BYTES: i64 = 8 << 20;
/// Most live rows a rotation moves; more and it waits for them to drain.
pub(crate) const MAX_MOVE: i64 = 20_000;
/// Sets how long a rotation waits for its lock. Statements on the queue tables
/// queue behind a waiting rotation, so this bounds the stall it can cause.
const ROTATE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '200ms'";
/// The current partition is analyzed once it holds this much after a
/// rotation.
const ANALYZE_MIN_BYTES: i64 = 64 << 10;
/// When, after a rotation, to try that (the maintenance tick tries too).
const ANALYZE_AFTER: [Duration; 3] = [
    Duration::from_millis(150),
    Duration::from_millis(350),
    Duration::from_millis(700),
];
/// Least time between two explicit vacuums of the older partition, run
/// while a backlog keeps it from being rotated.
const VACUUM_INTERVAL: Duration = Duration::from_secs(10);
const ARCHIVE_INTERVAL: Duration = Duration::from_secs(10);
const ORPHAN_INTERVAL: Duration = Duration::from_secs(60);

/// When each maintenance step is next due, per broker.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// Rotations that could not get their lock in a row; each one doubles
    /// the pause before the next try, up to 8 s.
    failures: u32,
    next_rotation: Option<Instant>,
    next_archive: Option<Instant>,
    next_orphans: Option<Instant>,
    next_vacuum: Option<Instant>,
    /// The rotation (by its time) after which the current partition was
    /// last analyzed.
    analyzed_for: Option<f64>,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueMaintenance {
    /// Whether the message partitions were rotated.
    pub rotated: bool,
    /// Live messages moved by the rotation.
    pub moved: u64,
    /// Bytes given back to the operating system by the rotation.
    pub reclaimed_bytes: i64,
    /// Archived messages deleted for being past their queue's retention.
    pub archive_expired: u64,
    /// Rows of deleted queues removed.
    pub orphans_removed: u64,
}

impl Broker {
    /// Starts this broker's background queue maintenance unless it runs:
    /// a task that checks every second whether a rotation, an archive
    /// expiry or a clean-up is due. It holds only a weak reference and ends
    /// with the broker. Brokers sharing a schema coordinate through an
    /// advisory lock.
    pub(crate) fn start_queue_maintenance(&self) {
        if self.inner.queues.maintenance_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at((Instant::now() + TICK).into(), TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let broker = Broker { inner };
                if let Err(e) = broker.queue_maintenance_pass(false).await {
                    tracing::warn!(error = %e, "queue maintenance failed");
                }
            }
        });
    }

    /// Runs every queue maintenance step now: a rotation of the message
    /// partitions (unless the older one holds too many live messages or a
    /// lock cannot be had at once), archive expiry and clean-up. Brokers
    /// that use queues also run these steps in the background as they come
    /// due; call this from a scheduler of your own, or `pgbroker maintain`,
    /// if you prefer.
    pub async fn maintain_queues(&self) -> Result<QueueMaintenance> {
        self.queue_maintenance_pass(true).await
    }

    async fn queue_maintenance_pass(&self, now: bool) -> Result<QueueMaintenance> {
        let due = |at: Option<Instant>| now || at.is_none_or(|t| Instant::now() >= t);
        let (rotate, archive, orphans) = match self.inner.queues.maintenance.lock() {
            Ok(s) => (due(s.next_rotation), due(s.next_archive), due(s.next_orphans)),
            Err(_) => (false, false, false),
        };
        let mut report = QueueMaintenance::default();
        if rotate {
            let outcome = self.rotate(now).await;
            let pause = match &outcome {
                Ok(_) => {
                    self.set_schedule(|s| s.failures = 0);
                    TICK
                }
                Err(_) => {
                    let mut failures = 0;
                    self.set_schedule(|s| {
                        s.failures = (s.failures + 1).min(3);
                        failures = s.failures;
                    });
                    TICK * 2u32.pow(failures)
                }
            };
            self.set_schedule(|s| s.next_rotation = Some(Instant::now() + pause));
            match outcome {
                Ok(Some((moved, reclaimed))) => {
                    report.rotated = true;
                    report.moved = moved;
                    report.reclaimed_bytes = reclaimed;
                }
                Ok(None) => {}
                Err(e @ crate::error::Error::Busy(_)) => {
                    tracing::debug!(error = %e, "queue partition rotation postponed")
                }
                Err(e) => tracing::warn!(error = %e, "queue partition rotation failed"),
            }
        }
        if report.rotated {
            let broker = self.clone();
            tokio::spawn(async move {
                for delay in ANALYZE_AFTER {
                    tokio::time::sleep(delay).await;
                    if broker.analyze_current().await.unwrap_or(true) {
                        break;
                    }
                }
            });
        } else if let Err(e) = self.analyze_current().await {
            tracing::debug!(error = %e, "analyzing the current queue partition failed");
        }
        let client = self.client().await?;
        if archive {
            let n = client.execute(&self.inner.queues.sql.archive_expiry, &[]).await?;
            report.archive_expired = n;
            client.execute(&self.inner.queues.sql.mark_maintained, &[]).await?;
            self.set_schedule(|s| s.next_archive = Some(Instant::now() + ARCHIVE_INTERVAL));
        }
        if orphans {
            let sql = &self.inner.queues.sql;
            for orphans in [&sql.orphan_groups, &sql.orphan_dedup, &sql.orphan_archive] {
                report.orphans_removed += client.execute(orphans, &[]).await?;
            }
            // Registrations of long-gone long polls (stream retention also
            // clears them, but a queue-only deployment may never run it).
            client.execute(&self.inner.sql.streams.expire_waiters, &[]).await?;
            self.set_schedule(|s| s.next_orphans = Some(Instant::now() + ORPHAN_INTERVAL));
        }
        Ok(report)
    }

    /// Analyzes the current partition once per rotation, when it has grown
    /// a little. A rotation leaves it truncated, and statements planned
    /// then (the pool keeps generic plans) take it for a tiny table and
    /// look messages up by a sequential scan; new statistics make every
    /// connection plan again, with index scans, for the rest of the
    /// rotation.
    /// Returns whether the partition is analyzed for the current rotation.
    async fn analyze_current(&self) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_one(&self.inner.queues.sql.current_partition_size, &[])
            .await?;
        let (current, rotated_at, size): (i16, f64, i64) = (row.get(0), row.get(1), row.get(2));
        let done = match self.inner.queues.maintenance.lock() {
            Ok(s) => s.analyzed_for == Some(rotated_at),
            Err(_) => true,
        };
        if done {
            return Ok(true);
        }
        if size < ANALYZE_MIN_BYTES {
            return Ok(false);
        }
        client
            .batch_execute(&self.inner.queues.sql.analyze.with(partition(current)))
            .await?;
        self.set_schedule(|s| s.analyzed_for = Some(rotated_at));
        Ok(true)
    }

    fn set_schedule(&self, f: impl FnOnce(&mut Schedule)) {
        if let Ok(mut s) = self.inner.queues.maintenance.lock() {
            f(&mut s);
        }
    }

    /// One rotation, if worthwhile (always when `force`, unless too many
    /// rows would move). Returns the rows moved and the bytes freed, `None`
    /// when it did not rotate, an error when its lock was not available.
    async fn rotate(&self, force: bool) -> Result<Option<(u64, i64)>> {
        let mut client = self.client().await?;
        let row = client.query_one(&self.inner.queues.sql.partition_sizes, &[]).await?;
        let (current, age, size0, size1): (i16, f64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let other = 1 - current;
        let other_size = if other == 0 { size0 } else { size1 };
        let worthwhile = size0 + size1 >= ROTATE_MIN_BYTES && age >= MIN_ROTATION_INTERVAL.as_secs_f64();
        if !force && !worthwhile {
            return Ok(None);
        }
        // The statistics' live-row estimate spares a backlog the exact
        // count, a scan of the whole partition, on every tick.
        let estimate: i64 = client
            .query_one(&self.inner.queues.sql.live_estimate, &[&partition(other)])
            .await?
            .get(0);
        let live: i64 = if estimate > 2 * MAX_MOVE {
            estimate
        } else {
            client
                .query_one(
                    &self.inner.queues.sql.count_up_to.with(partition(other)),
                    &[&(MAX_MOVE + 1)],
                )
                .await?
                .get(0)
        };
        if live > MAX_MOVE {
            // A backlog: it drains first (claims take the oldest first).
            // Meanwhile vacuum clears the dead entries its claims walk past.
            let vacuum_due = match self.inner.queues.maintenance.lock() {
                Ok(s) => s.next_vacuum.is_none_or(|t| Instant::now() >= t),
                Err(_) => false,
            };
            if vacuum_due && other_size >= ROTATE_MIN_BYTES {
                self.set_schedule(|s| s.next_vacuum = Some(Instant::now() + VACUUM_INTERVAL));
                tracing::debug!(live, "vacuuming the older queue partition while it drains");
                client
                    .batch_execute(&self.inner.queues.sql.vacuum.with(partition(other)))
                    .await?;
            }
            return Ok(None);
        }
        let tx = client.transaction().await?;
        tx.batch_execute(ROTATE_LOCK_TIMEOUT).await?;
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtext('pgbroker.queues.rotate'), hashtext($1::text))",
                &[&self.inner.schema],
            )
            .await?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let now_current: i16 = tx.query_one(&self.inner.queues.sql.lock_rotation, &[]).await?.get(0);
        if now_current != current {
            return Ok(None); // another broker rotated meanwhile
        }
        let sql = &self.inner.queues.sql;
        let from = partition(other);
        if let Err(e) = tx.batch_execute(&sql.lock_partition.with(from)).await {
            return Err(if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                crate::error::Error::Busy("queue partition in use".into())
            } else {
                e.into()
            });
        }
        let moved = tx
            .execute(
                if current == 0 {
                    &sql.move_into_0
                } else {
                    &sql.move_into_1
                },
                &[&current],
            )
            .await?;
        tx.batch_execute(&sql.truncate.with(from)).await?;
        tx.execute(&sql.set_rotation, &[&other]).await?;
        tx.commit().await?;
        let after: i64 = client.query_one(&sql.partition_size.with(from), &[]).await?.get(0);
        tracing::debug!(moved, freed = other_size - after, "rotated queue partitions");
        Ok(Some((moved, other_size - after)))
    }
}

/// The partition of slot `n`: one of the two names of
/// [`super::statements::PARTITIONS`], the only ones placed around the
/// rotation's statements.
fn partition(slot: i16) -> &'static str {
    super::statements::PARTITIONS[usize::from(slot != 0)]
}
