//! A ready-made consumer: joins a group (or reads whole topics without one),
//! tracks positions, heartbeats, follows rebalances, long-polls across its
//! partitions and commits. The CLI's `consume` is built on it.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use tokio::sync::Notify;
use tokio_postgres::GenericClient;

use crate::broker::notify::ensure_listener;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::groups::{JoinOptions, Membership, OffsetCommit};
use crate::streams::fetch::{FetchLimits, Isolation, OffsetSpec};
use crate::types::{GroupId, StoredRecord, TopicName, TopicPartition};

/// Where a consumer starts on a partition with no committed offset, or
/// after its position fell out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The high watermark: only new records.
    #[default]
    Latest,
}

/// How a [`Consumer`] behaves.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Topics to read.
    pub topics: Vec<TopicName>,
    /// Group to join; without one the consumer reads every partition and
    /// commits nothing.
    pub group: Option<GroupId>,
    /// Membership settings when in a group.
    pub join: JoinOptions,
    /// Start position without a committed offset.
    pub reset: OffsetReset,
    /// Most records per partition per fetch.
    pub max_records: usize,
    /// Most bytes per partition per fetch.
    pub max_bytes: usize,
}

impl ConsumerConfig {
    /// Reads `topics`, in `group` if given, with default settings.
    pub fn new(topics: Vec<TopicName>, group: Option<GroupId>) -> Self {
        ConsumerConfig {
            topics,
            group,
            join: JoinOptions::default(),
            reset: OffsetReset::default(),
            max_records: 500,
            max_bytes: 1 << 20,
        }
    }
}

/// A record with the topic it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: TopicName,
    /// The record, with partition and offset.
    pub record: StoredRecord,
}

/// A consumer of one or more topics. Not shared between tasks: one per
/// reading loop, like a Kafka consumer.
#[derive(Debug)]
pub struct Consumer {
    broker: Broker,
    config: ConsumerConfig,
    membership: Option<Membership>,
    positions: BTreeMap<TopicPartition, i64>,
    last_heartbeat: Instant,
}

impl Consumer {
    /// Creates the consumer, joining its group if it has one.
    pub async fn new(broker: Broker, config: ConsumerConfig) -> Result<Consumer> {
        let mut c = Consumer {
            broker,
            config,
            membership: None,
            positions: BTreeMap::new(),
            last_heartbeat: Instant::now(),
        };
        match c.config.group.clone() {
            Some(_) => c.rejoin().await?,
            None => {
                let mut all = Vec::new();
                for t in &c.config.topics {
                    let meta = c.broker.topic_meta(t).await?;
                    for p in 0..meta.partition_ids.len() {
                        all.push(TopicPartition {
                            topic: t.clone(),
                            partition: i32::try_from(p).unwrap_or(i32::MAX),
                        });
                    }
                }
                c.assign(all, &BTreeMap::new()).await?;
            }
        }
        Ok(c)
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// The group membership, when in a group.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// The next offset this consumer reads on a partition.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied()
    }

    /// Moves the position on an assigned partition.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        match self.positions.get_mut(tp) {
            Some(p) => {
                *p = offset;
                Ok(())
            }
            None => Err(Error::invalid(
                Invalid::Seek,
                format!("{}/{} is not assigned", tp.topic, tp.partition),
            )),
        }
    }

    /// Returns the next records from any assigned partition, waiting up to
    /// `max_wait` when there are none. Heartbeats and follows rebalances.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>> {
        ensure_listener(&self.broker.inner);
        let deadline = Instant::now() + max_wait;
        loop {
            self.maybe_heartbeat().await?;
            let mut waiters: Vec<Arc<Notify>> = Vec::with_capacity(self.positions.len());
            let mut pids = Vec::with_capacity(self.positions.len());
            for tp in self.positions.keys() {
                let (_, pid) = self.broker.partition_id(&tp.topic, tp.partition).await?;
                waiters.push(self.broker.inner.wakeups.fetch_waiter(pid, Isolation::ReadCommitted));
                pids.push(pid);
            }
            let mut notified: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
                waiters.iter().map(|w| Box::pin(w.notified())).collect();
            for n in &mut notified {
                n.as_mut().enable();
            }
            let out = self.fetch_all().await?;
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            if crate::broker::notify::register_waiter(&self.broker, &pids).await? {
                continue;
            }
            let nap = (deadline - now)
                .min(self.broker.inner.poll_interval)
                .min(self.heartbeat_interval());
            if notified.is_empty() {
                tokio::time::sleep(nap).await;
            } else {
                tokio::select! {
                    _ = select_all(notified) => {}
                    _ = tokio::time::sleep(nap) => {}
                }
            }
        }
    }

    async fn fetch_all(&mut self) -> Result<Vec<ConsumedRecord>> {
        let limits = FetchLimits {
            max_records: self.config.max_records,
            max_bytes: self.config.max_bytes,
            max_wait: Duration::ZERO,
        };
        let mut out = Vec::new();
        let tps: Vec<(TopicPartition, i64)> = self.positions.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (tp, pos) in tps {
            match self
                .broker
                .streams()
                .fetch_committed(&tp.topic, tp.partition, pos, limits)
                .await
            {
                Ok(res) => {
                    if res.next_offset > pos {
                        self.positions.insert(tp.clone(), res.next_offset);
                    }
                    out.extend(res.records.into_iter().map(|record| ConsumedRecord {
                        topic: tp.topic.clone(),
                        record,
                    }));
                }
                Err(Error::OffsetOutOfRange { .. }) => {
                    let reset = self.reset_position(&tp).await?;
                    tracing::info!(topic = %tp.topic, partition = tp.partition, from = pos, to = reset, "position out of range; reset");
                    self.positions.insert(tp, reset);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn reset_position(&self, tp: &TopicPartition) -> Result<i64> {
        let spec = match self.config.reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        };
        self.broker
            .streams()
            .resolve_offset(&tp.topic, tp.partition, spec)
            .await
    }

    /// Commits the current positions of all assigned partitions. After a
    /// rebalance, positions of partitions this member still owns are
    /// committed under the new generation; those it lost are not.
    pub async fn commit(&mut self) -> Result<()> {
        let Some(group) = self.config.group.clone() else {
            return Ok(());
        };
        for attempt in 0..3 {
            let Some(m) = self.membership.clone() else {
                return Ok(());
            };
            let offsets = self.position_commits();
            if offsets.is_empty() {
                return Ok(());
            }
            match self
                .broker
                .groups()
                .commit(&group, Some((&m.member_id, m.generation)), &offsets)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.needs_rejoin() && attempt < 2 => self.rejoin().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Commits the current positions inside the caller's open transaction,
    /// fenced as [`Consumer::commit`] is (without its rejoin and retry):
    /// with [`crate::streams::Streams::produce_in`] and the caller's own
    /// writes, the records polled are processed exactly once, all in one
    /// Postgres transaction. When that transaction rolls back, call
    /// [`Consumer::rewind`] before polling again.
    pub async fn commit_in(&self, client: &impl GenericClient) -> Result<()> {
        let (Some(group), Some(m)) = (&self.config.group, &self.membership) else {
            return Ok(());
        };
        let offsets = self.position_commits();
        if offsets.is_empty() {
            return Ok(());
        }
        self.broker
            .groups()
            .commit_in(client, group, Some((&m.member_id, m.generation)), &offsets)
            .await
    }

    /// Moves every assigned partition back to its committed offset (or to
    /// where the reset policy says when none is committed): what was polled
    /// since is delivered again. For use after the transaction of
    /// [`Consumer::commit_in`] rolled back.
    pub async fn rewind(&mut self) -> Result<()> {
        let Some(group) = self.config.group.clone() else {
            return Ok(());
        };
        let mut committed = BTreeMap::new();
        for t in &self.config.topics {
            for c in self.broker.groups().offsets(&group, t).await? {
                committed.insert((t.clone(), c.partition), c.offset);
            }
        }
        let assignment = self.assignment();
        self.positions.clear();
        self.assign(assignment, &committed).await
    }

    fn position_commits(&self) -> Vec<OffsetCommit> {
        self.positions
            .iter()
            .map(|(tp, off)| OffsetCommit {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *off,
                metadata: None,
            })
            .collect()
    }

    /// Commits and leaves the group, so its partitions move at once. When
    /// the group keeps rebalancing (its other members leaving too), the
    /// positions that cannot be committed are given up: their records will
    /// be delivered again, as at-least-once allows.
    pub async fn close(mut self) -> Result<()> {
        match self.commit().await {
            Err(e) if e.needs_rejoin() => {
                tracing::debug!(error = %e, "final commit abandoned");
            }
            other => other?,
        }
        if let (Some(group), Some(m)) = (&self.config.group, &self.membership) {
            match self.broker.groups().leave(group, &m.member_id).await {
                Err(Error::UnknownMember { .. }) => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn heartbeat_interval(&self) -> Duration {
        (self.config.join.session_timeout / 3).max(Duration::from_millis(30))
    }

    async fn maybe_heartbeat(&mut self) -> Result<()> {
        let (Some(group), Some(m)) = (self.config.group.clone(), self.membership.clone()) else {
            return Ok(());
        };
        if self.last_heartbeat.elapsed() < self.heartbeat_interval() {
            return Ok(());
        }
        match self.broker.groups().heartbeat(&group, &m.member_id, m.generation).await {
            Ok(()) => {
                self.last_heartbeat = Instant::now();
                Ok(())
            }
            Err(e) if e.needs_rejoin() => self.rejoin().await,
            Err(e) => Err(e),
        }
    }

    async fn rejoin(&mut self) -> Result<()> {
        let Some(group) = self.config.group.clone() else {
            return Ok(());
        };
        let previous = self.membership.as_ref().map(|m| m.member_id.clone());
        let joined = match self
            .broker
            .groups()
            .join(&group, previous.as_deref(), &self.config.topics, &self.config.join)
            .await
        {
            Err(Error::UnknownMember { .. }) => {
                self.broker
                    .groups()
                    .join(&group, None, &self.config.topics, &self.config.join)
                    .await?
            }
            other => other?,
        };
        self.last_heartbeat = Instant::now();
        let mut committed = BTreeMap::new();
        for t in &self.config.topics {
            for c in self.broker.groups().offsets(&group, t).await? {
                committed.insert((t.clone(), c.partition), c.offset);
            }
        }
        let assignment = joined.assignment.clone();
        self.membership = Some(joined);
        self.assign(assignment, &committed).await
    }

    /// Replaces the assignment. Partitions kept keep their in-memory
    /// position; new ones start from the committed offset or the reset
    /// policy.
    async fn assign(&mut self, tps: Vec<TopicPartition>, committed: &BTreeMap<(TopicName, i32), i64>) -> Result<()> {
        let mut next = BTreeMap::new();
        for tp in tps {
            let pos = match self.positions.get(&tp) {
                Some(p) => *p,
                None => match committed.get(&(tp.topic.clone(), tp.partition)) {
                    Some(c) => *c,
                    None => self.reset_position(&tp).await?,
                },
            };
            next.insert(tp, pos);
        }
        self.positions = next;
        Ok(())
    }
}
