//! Share-partitions: one group's progress through one partition, with the
//! in-flight window of records between its start and end offsets.
//!
//! Every call locks the share-partition's row (`share_partitions`) for one
//! short transaction, as a queue claim locks what it takes: it first puts
//! back records whose lock ran out (the queue engine's leases, applied by
//! whoever comes next, never by a timer), then acquires or settles, then
//! moves the start offset past the records that are done and forgets them,
//! so the window stays bounded.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::Transaction;

use super::config::{AutoOffsetReset, ShareIsolation, ShareSettings};
use super::statements::Statements;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::types::{GroupId, TopicName};

/// Most records in flight in one share-partition (Kafka's
/// `group.share.partition.max.record.locks`): no new records are acquired
/// while the window holds this many.
pub const MAX_IN_FLIGHT: i64 = 2_000;

/// Kafka's acknowledgement types.
pub mod ack {
    /// An offset that holds no record (removed by compaction, or a
    /// transaction marker): archived.
    pub const GAP: i8 = 0;
    /// Processed: the record is done.
    pub const ACCEPT: i8 = 1;
    /// Not processed: the record becomes available again (archived when
    /// it reached the delivery count limit).
    pub const RELEASE: i8 = 2;
    /// Cannot be processed: the record is archived.
    pub const REJECT: i8 = 3;
}

/// Consecutive offsets acquired with the same delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquiredRange {
    /// First offset.
    pub first: i64,
    /// Last offset (inclusive).
    pub last: i64,
    /// How many times these records have now been delivered.
    pub delivery_count: i16,
}

/// What one acquisition in one share-partition got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acquisition {
    /// The records acquired, in offset order.
    pub ranges: Vec<AcquiredRange>,
    /// The partition's high watermark when the window's end reached the
    /// end of what may be acquired (the high watermark, or the last stable
    /// offset for read_committed): nothing new can be acquired before a
    /// producer writes past it.
    pub caught_up_at: Option<i64>,
}

impl Acquisition {
    /// How many records were acquired.
    pub fn count(&self) -> i64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }
}

/// An acknowledgement of a range of offsets: one type for all of them, or
/// one per offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckBatch {
    /// First offset.
    pub first: i64,
    /// Last offset (inclusive).
    pub last: i64,
    /// One of [`ack`]'s types, for each offset or for all.
    pub types: Vec<i8>,
}

/// The offsets and their types, checked: ranges in order, at most
/// [`MAX_IN_FLIGHT`] offsets in all, known types.
pub(crate) fn expand(batches: &[AckBatch]) -> Result<(Vec<i64>, Vec<i16>)> {
    let refuse = |why: String| Error::invalid(Invalid::Acknowledgement, why);
    let mut offsets = Vec::new();
    let mut kinds = Vec::new();
    for b in batches {
        let len = b.last.checked_sub(b.first).and_then(|d| d.checked_add(1)).unwrap_or(0);
        if b.first < 0 || len <= 0 || len > MAX_IN_FLIGHT {
            return Err(refuse(format!("offsets {} to {}", b.first, b.last)));
        }
        if b.types.len() != 1 && i64::try_from(b.types.len()).ok() != Some(len) {
            return Err(refuse(format!("{} types for {len} offsets", b.types.len())));
        }
        if let Some(t) = b.types.iter().find(|t| !(ack::GAP..=ack::REJECT).contains(*t)) {
            return Err(refuse(format!("unknown acknowledgement type {t}")));
        }
        if offsets.last().is_some_and(|last| *last >= b.first) {
            return Err(refuse("overlapping or unordered ranges".into()));
        }
        if i64::try_from(offsets.len()).unwrap_or(i64::MAX) + len > MAX_IN_FLIGHT {
            return Err(refuse(format!("more than {MAX_IN_FLIGHT} offsets")));
        }
        for (i, o) in (b.first..=b.last).enumerate() {
            offsets.push(o);
            kinds.push(i16::from(*b.types.get(i).or(b.types.first()).unwrap_or(&ack::ACCEPT)));
        }
    }
    Ok((offsets, kinds))
}

/// The share-partition's row id, locked, with its window and the
/// partition's watermarks; created at the auto-offset-reset position when
/// the group has not read the partition before.
struct Window {
    id: i64,
    start: i64,
    end: i64,
    log_start: i64,
    high_watermark: i64,
    /// The last stable offset: the first offset of the oldest transaction
    /// still open on the partition, else the high watermark.
    last_stable: i64,
}

impl Window {
    /// Where acquisition stops for a group of this isolation level.
    fn limit(&self, isolation: ShareIsolation) -> i64 {
        match isolation {
            ShareIsolation::ReadUncommitted => self.high_watermark,
            ShareIsolation::ReadCommitted => self.last_stable,
        }
    }
}

async fn lock(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    id: i64,
    settings: &ShareSettings,
) -> Result<Window> {
    let mut locked = tx.query_opt(&sql.lock_partition, &[&group, &id]).await?;
    if locked.is_none() {
        let marks = tx.query_one(&sql.partition, &[&id]).await?;
        let at: i64 = match settings.auto_offset_reset {
            AutoOffsetReset::Earliest => marks.get(0),
            AutoOffsetReset::Latest => marks.get(1),
        };
        tx.execute(&sql.create_partition, &[&group, &id, &at]).await?;
        locked = tx.query_opt(&sql.lock_partition, &[&group, &id]).await?;
    }
    let r = locked.ok_or_else(|| Error::UnknownGroup(group.to_string()))?;
    let high_watermark: i64 = r.get(3);
    let mut w = Window {
        id,
        start: r.get(0),
        end: r.get(1),
        log_start: r.get(2),
        high_watermark,
        last_stable: r
            .get::<_, Option<i64>>(4)
            .map_or(high_watermark, |o| o.min(high_watermark)),
    };
    tx.execute(&sql.expire_locks, &[&group, &id, &settings.delivery_count_limit])
        .await?;
    if w.log_start > w.start {
        // Retention removed records the group had not finished: they are
        // gone, whatever their state.
        tx.execute(&sql.forget_below, &[&group, &id, &w.log_start]).await?;
        w.start = w.log_start;
        w.end = w.end.max(w.log_start);
    }
    Ok(w)
}

/// Moves the start past the records that are done, forgets them and
/// stores the window.
async fn settle_window(sql: &Statements, tx: &Transaction<'_>, group: &str, w: &mut Window) -> Result<()> {
    let open: Option<i64> = tx.query_one(&sql.first_open, &[&group, &w.id]).await?.get(0);
    let start = open.unwrap_or(w.end);
    if start > w.start {
        tx.execute(&sql.forget_below, &[&group, &w.id, &start]).await?;
        w.start = start;
    }
    tx.execute(&sql.set_window, &[&group, &w.id, &w.start, &w.end]).await?;
    Ok(())
}

/// Merges acquired offsets into ranges of one delivery count.
fn ranges(mut got: Vec<(i64, i16)>) -> Vec<AcquiredRange> {
    got.sort_unstable();
    let mut out: Vec<AcquiredRange> = Vec::new();
    for (o, dc) in got {
        match out.last_mut() {
            Some(r) if r.last + 1 == o && r.delivery_count == dc => r.last = o,
            _ => out.push(AcquiredRange {
                first: o,
                last: o,
                delivery_count: dc,
            }),
        }
    }
    out
}

/// Acquires up to `max` records of one partition for a member; see
/// [`super::ShareGroups::acquire`].
pub(crate) async fn acquire(
    broker: &Broker,
    group: &GroupId,
    member: &str,
    topic: &TopicName,
    partition: i32,
    max: i64,
    settings: &ShareSettings,
) -> Result<Acquisition> {
    let sql = &broker.inner.sql.share;
    let g = group.as_str();
    // The partition's id comes first: looking it up may take a
    // connection of the pool, which must not happen inside the transaction.
    let (_, id) = broker.partition_id(topic, partition).await?;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let mut w = lock(sql, &tx, g, id, settings).await?;
    let lock_ms = settings.lock_ms();
    let rows = tx
        .query(&sql.acquire_available, &[&g, &w.id, &member, &lock_ms, &max.max(0)])
        .await?;
    let mut got: Vec<(i64, i16)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let taken = i64::try_from(got.len()).unwrap_or(i64::MAX);
    let limit = w.limit(settings.isolation);
    let room = (max - taken).min(limit - w.end).min(MAX_IN_FLIGHT - (w.end - w.start));
    if room > 0 {
        let to = w.end + room;
        tx.execute(&sql.acquire_new, &[&g, &w.id, &member, &lock_ms, &w.end, &to])
            .await?;
        // Below the last stable offset every transaction is decided: the
        // records of aborted ones are archived, never delivered.
        let aborted: BTreeSet<i64> = match settings.isolation {
            ShareIsolation::ReadUncommitted => BTreeSet::new(),
            ShareIsolation::ReadCommitted => tx
                .query(&sql.archive_aborted, &[&g, &w.id, &w.end, &to])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        got.extend((w.end..to).filter(|o| !aborted.contains(o)).map(|o| (o, 1)));
        w.end = to;
    }
    settle_window(sql, &tx, g, &mut w).await?;
    tx.commit().await?;
    // Nothing new before a write: a record, or the marker that ends the
    // transaction holding the last stable offset back.
    Ok(Acquisition {
        ranges: ranges(got),
        caught_up_at: (w.end >= limit).then_some(w.high_watermark),
    })
}

/// Applies a member's acknowledgements in one partition, all or none;
/// see [`super::ShareGroups::acknowledge`].
pub(crate) async fn acknowledge(
    broker: &Broker,
    group: &GroupId,
    member: &str,
    topic: &TopicName,
    partition: i32,
    batches: &[AckBatch],
    settings: &ShareSettings,
) -> Result<()> {
    let (offsets, kinds) = expand(batches)?;
    if offsets.is_empty() {
        return Ok(());
    }
    let sql = &broker.inner.sql.share;
    let g = group.as_str();
    // The partition's id comes first: looking it up may take a
    // connection of the pool, which must not happen inside the transaction.
    let (_, id) = broker.partition_id(topic, partition).await?;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let mut w = lock(sql, &tx, g, id, settings).await?;
    let n = tx
        .execute(
            &sql.acknowledge,
            &[&g, &w.id, &settings.delivery_count_limit, &offsets, &kinds, &member],
        )
        .await?;
    if usize::try_from(n).ok() != Some(offsets.len()) {
        // Roll back: report the first offset the member does not hold.
        drop(tx);
        let offset = first_not_held(broker, g, topic, partition, member, &offsets).await?;
        return Err(Error::InvalidRecordState {
            group: g.to_string(),
            member: member.to_string(),
            topic: topic.to_string(),
            partition,
            offset,
        });
    }
    settle_window(sql, &tx, g, &mut w).await?;
    tx.commit().await?;
    Ok(())
}

/// The first of `offsets` that the member does not hold now (for the
/// error message; the first offset when it cannot tell).
async fn first_not_held(
    broker: &Broker,
    group: &str,
    topic: &TopicName,
    partition: i32,
    member: &str,
    offsets: &[i64],
) -> Result<i64> {
    let held: BTreeMap<i64, ()> = held_by(broker, group, topic, partition, member)
        .await?
        .into_iter()
        .map(|o| (o, ()))
        .collect();
    Ok(offsets
        .iter()
        .find(|o| !held.contains_key(o))
        .or(offsets.first())
        .copied()
        .unwrap_or(0))
}

/// The offsets of a partition a member holds under live locks, ascending.
pub(crate) async fn held_by(
    broker: &Broker,
    group: &str,
    topic: &TopicName,
    partition: i32,
    member: &str,
) -> Result<Vec<i64>> {
    let sql = &broker.inner.sql.share;
    let client = broker.client().await?;
    let rows = client
        .query(&sql.held, &[&group, &topic.as_str(), &partition, &member])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Puts back every record a member holds, in every partition; returns
/// how many. Used when the member leaves, is removed, or closes its
/// session.
pub(crate) async fn release_member(
    tx: &Transaction<'_>,
    sql: &Statements,
    group: &str,
    member: &str,
    settings: &ShareSettings,
) -> Result<u64> {
    Ok(tx
        .execute(&sql.release_member, &[&group, &member, &settings.delivery_count_limit])
        .await?)
}

/// One record of a share-partition's in-flight window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlightRecord {
    /// Its offset.
    pub offset: i64,
    /// Kafka's state: 0 Available, 1 Acquired, 2 Acknowledged, 4 Archived.
    pub state: i16,
    /// How many times it was delivered.
    pub delivery_count: i16,
    /// The member holding it, while acquired.
    pub member_id: Option<String>,
}

/// A share-partition's window: every offset below `start` is done, every
/// offset from `end` on was never delivered, and `records` are the ones in
/// between.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct InFlight {
    /// The start offset.
    pub start: i64,
    /// The end of the window.
    pub end: i64,
    /// The records in between, by offset.
    pub records: Vec<InFlightRecord>,
}

/// The window of one share-partition; `None` when the group has not read
/// the partition. Read-only; locks that ran out show as acquired until the
/// next call on the share-partition applies them.
pub(crate) async fn in_flight(
    broker: &Broker,
    group: &GroupId,
    topic: &TopicName,
    partition: i32,
) -> Result<Option<InFlight>> {
    let sql = &broker.inner.sql.share;
    let client = broker.client().await?;
    let rows = client
        .query(&sql.in_flight, &[&group.as_str(), &topic.as_str(), &partition])
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut w = InFlight {
        start: first.get(0),
        end: first.get(1),
        records: Vec::new(),
    };
    for r in &rows {
        if let Some(offset) = r.get::<_, Option<i64>>(2) {
            w.records.push(InFlightRecord {
                offset,
                state: r.get(3),
                delivery_count: r.get(4),
                member_id: r.get(5),
            });
        }
    }
    Ok(Some(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquired_offsets_merge_by_delivery_count() {
        let r = ranges(vec![(5, 1), (3, 2), (4, 2), (6, 1), (9, 1)]);
        assert_eq!(
            r,
            vec![
                AcquiredRange {
                    first: 3,
                    last: 4,
                    delivery_count: 2
                },
                AcquiredRange {
                    first: 5,
                    last: 6,
                    delivery_count: 1
                },
                AcquiredRange {
                    first: 9,
                    last: 9,
                    delivery_count: 1
                },
            ]
        );
    }

    #[test]
    fn acknowledgements_expand_and_refuse_bad_ranges() {
        let one = AckBatch {
            first: 10,
            last: 12,
            types: vec![ack::ACCEPT],
        };
        let each = AckBatch {
            first: 14,
            last: 15,
            types: vec![ack::RELEASE, ack::REJECT],
        };
        let (o, k) = expand(&[one.clone(), each]).expect("valid");
        assert_eq!(o, vec![10, 11, 12, 14, 15]);
        assert_eq!(k, vec![1, 1, 1, 2, 3]);
        let bad = [
            AckBatch {
                first: 5,
                last: 4,
                types: vec![1],
            },
            AckBatch {
                first: 1,
                last: 3,
                types: vec![1, 1],
            },
            AckBatch {
                first: 1,
                last: 1,
                types: vec![7],
            },
            AckBatch {
                first: -1,
                last: 1,
                types: vec![1],
            },
            AckBatch {
                first: 0,
                last: MAX_IN_FLIGHT,
                types: vec![1],
            },
        ];
        for b in bad {
            assert!(expand(std::slice::from_ref(&b)).is_err(), "{b:?}");
        }
        assert!(expand(&[one.clone(), one]).is_err(), "overlap");
    }
}
