//! A share-group member for library callers: a stream topic read as a
//! work queue, each record acquired under a lock and then accepted,
//! released or rejected, as Kafka's share consumers do over the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::partition::{ack, AckBatch};
use super::{ShareHeartbeat, ShareSettings, LEAVE_EPOCH};
use crate::broker::Broker;
use crate::error::Result;
use crate::streams::{Isolation, ManyLimits, PartitionRead};
use crate::types::{GroupId, StoredRecord, TopicName};

/// Most records one [`ShareConsumer::poll`] acquires per partition.
const MAX_PER_PARTITION: i64 = 500;
/// Longest sleep between two acquisitions while records are held by
/// other members.
const RETRY: Duration = Duration::from_millis(200);

/// A record acquired by a [`ShareConsumer`]: it must be acknowledged
/// before its lock (`share.record.lock.duration.ms`) runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRecord {
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: i32,
    /// How many times it was delivered, this time included.
    pub delivery_count: i16,
    /// The record.
    pub record: StoredRecord,
}

/// How a [`ShareConsumer`] settles a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Processed: never delivered again.
    Accept,
    /// Not processed: delivered again (archived at the delivery limit).
    Release,
    /// Cannot be processed: archived.
    Reject,
}

impl Settle {
    fn kind(self) -> i8 {
        match self {
            Settle::Accept => ack::ACCEPT,
            Settle::Release => ack::RELEASE,
            Settle::Reject => ack::REJECT,
        }
    }
}

/// One member of a share group, subscribed to some topics; every member
/// reads every partition, and the records are shared among them.
#[derive(Debug)]
pub struct ShareConsumer {
    broker: Broker,
    group: GroupId,
    member_id: String,
    epoch: i32,
    partitions: Vec<(TopicName, i32)>,
    settings: ShareSettings,
    next_heartbeat: Instant,
    interval: Duration,
}

impl ShareConsumer {
    /// Joins `group` as a new member subscribed to `topics`.
    pub async fn join(broker: Broker, group: GroupId, topics: Vec<TopicName>) -> Result<Self> {
        let member_id = format!("pgbroker-{:032x}", rand::random::<u128>());
        let answer = broker
            .share_groups()
            .heartbeat(&beat(&group, &member_id, 0, Some(topics)))
            .await?;
        let settings = broker.share_groups().settings(&group).await?;
        let mut c = ShareConsumer {
            broker,
            group,
            member_id: answer.member_id.clone(),
            epoch: answer.member_epoch,
            partitions: Vec::new(),
            settings,
            next_heartbeat: Instant::now() + answer.heartbeat_interval,
            interval: answer.heartbeat_interval,
        };
        c.assign(answer.assignment);
        Ok(c)
    }

    /// The member's id in its group.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    fn assign(&mut self, assignment: Option<Vec<super::super::consumer::AssignedTopic>>) {
        if let Some(topics) = assignment {
            self.partitions = topics
                .into_iter()
                .flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p)))
                .collect();
        }
    }

    async fn heartbeat_if_due(&mut self) -> Result<()> {
        if Instant::now() < self.next_heartbeat {
            return Ok(());
        }
        let answer = self
            .broker
            .share_groups()
            .heartbeat(&beat(&self.group, &self.member_id, self.epoch, None))
            .await?;
        self.epoch = answer.member_epoch;
        self.interval = answer.heartbeat_interval;
        self.next_heartbeat = Instant::now() + self.interval;
        self.assign(answer.assignment);
        self.settings = self.broker.share_groups().settings(&self.group).await?;
        Ok(())
    }

    /// Acquires up to `max` records, waiting up to `wait` for some; an
    /// empty answer means none came.
    pub async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SharedRecord>> {
        let deadline = Instant::now() + wait;
        loop {
            self.heartbeat_if_due().await?;
            let mut waits = Vec::new();
            let mut out = Vec::new();
            for (topic, partition) in self.partitions.clone() {
                let room = i64::try_from(max.saturating_sub(out.len()))
                    .unwrap_or(0)
                    .min(MAX_PER_PARTITION);
                if room <= 0 {
                    break;
                }
                let got = self
                    .broker
                    .share_groups()
                    .acquire(&self.group, &self.member_id, &topic, partition, room, &self.settings)
                    .await?;
                if let Some(at) = got.caught_up_at {
                    waits.push(PartitionRead {
                        topic: topic.clone(),
                        partition,
                        offset: at,
                        max_bytes: 1,
                    });
                }
                let offsets: Vec<(i64, i16)> = got
                    .ranges
                    .iter()
                    .flat_map(|r| (r.first..=r.last).map(move |o| (o, r.delivery_count)))
                    .collect();
                out.extend(self.read(&topic, partition, &offsets).await?);
            }
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            let left = (deadline - now).min(self.next_heartbeat.saturating_duration_since(now));
            if !waits.is_empty() && waits.len() == self.partitions.len() {
                let limits = ManyLimits {
                    min_bytes: 1,
                    max_bytes: 1,
                    max_records: 1,
                    max_wait: left,
                    isolation: Isolation::ReadUncommitted,
                };
                self.broker.streams().fetch_many(&waits, limits).await;
            } else {
                tokio::time::sleep(left.min(RETRY)).await;
            }
        }
    }

    /// The records at the acquired offsets. Offsets that hold no record to
    /// deliver (transaction markers, records compaction removed) are
    /// acknowledged as gaps at once; acquired records this read did not
    /// reach are released.
    async fn read(&self, topic: &TopicName, partition: i32, offsets: &[(i64, i16)]) -> Result<Vec<SharedRecord>> {
        let (Some(first), Some(last)) = (offsets.first(), offsets.last()) else {
            return Ok(Vec::new());
        };
        let limits = crate::streams::FetchLimits {
            max_records: usize::try_from(last.0 - first.0 + 1).unwrap_or(usize::MAX),
            ..crate::streams::FetchLimits::default()
        };
        let fetched = self.broker.streams().fetch(topic, partition, first.0, limits).await?;
        let markers: BTreeSet<i64> = fetched
            .producers
            .iter()
            .filter(|p| p.control)
            .map(|p| p.offset)
            .collect();
        let mut by_offset: BTreeMap<i64, &StoredRecord> = fetched
            .records
            .iter()
            .filter(|r| !markers.contains(&r.offset))
            .map(|r| (r.offset, r))
            .collect();
        let mut out = Vec::new();
        let (mut gaps, mut unread) = (Vec::new(), Vec::new());
        for &(offset, delivery_count) in offsets {
            match by_offset.remove(&offset) {
                Some(record) => out.push(SharedRecord {
                    topic: topic.clone(),
                    partition,
                    delivery_count,
                    record: record.clone(),
                }),
                None if offset < fetched.next_offset => gaps.push(offset),
                None => unread.push(offset),
            }
        }
        let sg = self.broker.share_groups();
        for (offsets, kind) in [(gaps, ack::GAP), (unread, ack::RELEASE)] {
            let batches: Vec<AckBatch> = offsets
                .iter()
                .map(|o| AckBatch {
                    first: *o,
                    last: *o,
                    types: vec![kind],
                })
                .collect();
            if !batches.is_empty() {
                sg.acknowledge(&self.group, &self.member_id, topic, partition, &batches, &self.settings)
                    .await?;
            }
        }
        Ok(out)
    }

    /// Settles records this member holds, all or none per partition.
    pub async fn acknowledge(&self, records: &[SharedRecord], how: Settle) -> Result<()> {
        let mut by_partition: BTreeMap<(&TopicName, i32), Vec<i64>> = BTreeMap::new();
        for r in records {
            by_partition
                .entry((&r.topic, r.partition))
                .or_default()
                .push(r.record.offset);
        }
        for ((topic, partition), mut offsets) in by_partition {
            offsets.sort_unstable();
            offsets.dedup();
            let batches: Vec<AckBatch> = offsets
                .iter()
                .map(|o| AckBatch {
                    first: *o,
                    last: *o,
                    types: vec![how.kind()],
                })
                .collect();
            self.broker
                .share_groups()
                .acknowledge(&self.group, &self.member_id, topic, partition, &batches, &self.settings)
                .await?;
        }
        Ok(())
    }

    /// Leaves the group: records still held are put back at once.
    pub async fn close(self) -> Result<()> {
        self.broker
            .share_groups()
            .heartbeat(&beat(&self.group, &self.member_id, LEAVE_EPOCH, None))
            .await?;
        Ok(())
    }
}

/// A heartbeat of this library's member.
fn beat(group: &GroupId, member_id: &str, epoch: i32, topics: Option<Vec<TopicName>>) -> ShareHeartbeat {
    ShareHeartbeat {
        group: group.clone(),
        member_id: member_id.to_string(),
        member_epoch: epoch,
        rack_id: None,
        client_id: "pgbroker".to_string(),
        client_host: "library".to_string(),
        subscribed_topics: topics,
    }
}
