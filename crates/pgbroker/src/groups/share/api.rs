//! Every operation of share groups (KIP-932) in one place; each delegates
//! to [`super`].

use super::{
    AckBatch, Acquisition, GroupConfigEntry, InFlight, ShareGroupDescription, ShareHeartbeat, ShareHeartbeatAnswer,
    ShareSettings,
};
use crate::broker::Broker;
use crate::error::Result;
use crate::types::{GroupId, TopicName};

/// The share group operations of a [`Broker`]; see [`Broker::share_groups`].
#[derive(Debug, Clone, Copy)]
pub struct ShareGroups<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Share groups (Kafka's KIP-932): a topic read as a work queue, as the
    /// Kafka front end serves them.
    pub fn share_groups(&self) -> ShareGroups<'_> {
        ShareGroups { broker: self }
    }
}

impl ShareGroups<'_> {
    /// ShareGroupHeartbeat. Epoch 0 joins (a missing group is created; a
    /// group of another type without live members is taken over) and needs
    /// a subscription; [`super::LEAVE_EPOCH`] leaves, putting back what the
    /// member holds; any other epoch must be the member's own. The group
    /// moves to a new epoch when membership, a subscription or the
    /// partitions of a subscribed topic change; a member behind it moves
    /// to it and is sent its assignment: every partition of its topics.
    ///
    /// Errors: [`Error::UnknownMember`](crate::Error::UnknownMember) for a
    /// member the group does not have (it left or its session expired);
    /// [`Error::FencedMemberEpoch`](crate::Error::FencedMemberEpoch) for
    /// another epoch (rejoin with 0);
    /// [`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol)
    /// when a group of another type has live members;
    /// [`Error::Invalid`](crate::Error::Invalid) for a join without topics.
    pub async fn heartbeat(self, req: &ShareHeartbeat) -> Result<ShareHeartbeatAnswer> {
        super::heartbeat(self.broker, req).await
    }

    /// ShareGroupDescribe: the group epoch and each member with its
    /// assignment. Removes expired members first.
    /// [`Error::UnknownGroup`](crate::Error::UnknownGroup) when there is no
    /// share group of that name.
    pub async fn describe(self, group: &GroupId) -> Result<ShareGroupDescription> {
        super::describe(self.broker, group).await
    }

    /// Whether `member` is a live member of the share group `group`.
    pub async fn is_member(self, group: &GroupId, member: &str) -> Result<bool> {
        super::is_member(self.broker, group, member).await
    }

    /// Acquires up to `max` records of a partition for a member, each
    /// under a lock of the group's lock duration: first records put back
    /// (released, or whose lock ran out), by offset, then records never
    /// delivered, up to the high watermark (the last stable offset for a
    /// `read_committed` group, which never gets records of aborted
    /// transactions: they are archived) and while fewer than
    /// [`super::MAX_IN_FLIGHT`] are in flight. A group reading the
    /// partition for the first time starts at `share.auto.offset.reset`.
    /// Does not wait: see [`Acquisition::caught_up_at`] for when waiting
    /// for producers makes sense.
    pub async fn acquire(
        self,
        group: &GroupId,
        member: &str,
        topic: &TopicName,
        partition: i32,
        max: i64,
        settings: &ShareSettings,
    ) -> Result<Acquisition> {
        super::partition::acquire(self.broker, group, member, topic, partition, max, settings).await
    }

    /// Accepts, releases or rejects records the member holds in one
    /// partition, all or none:
    /// [`Error::InvalidRecordState`](crate::Error::InvalidRecordState) when
    /// it does not hold one of them (never acquired, settled, or its lock
    /// ran out), [`Error::Invalid`](crate::Error::Invalid) for unordered
    /// or overlapping ranges or an unknown type.
    pub async fn acknowledge(
        self,
        group: &GroupId,
        member: &str,
        topic: &TopicName,
        partition: i32,
        batches: &[AckBatch],
        settings: &ShareSettings,
    ) -> Result<()> {
        super::partition::acknowledge(self.broker, group, member, topic, partition, batches, settings).await
    }

    /// Puts back every record a member holds (archiving those at the
    /// delivery count limit); returns how many.
    pub async fn release_member(self, group: &GroupId, member: &str) -> Result<u64> {
        super::release(self.broker, group, member).await
    }

    /// A share-partition's window and in-flight records; `None` when the
    /// group has not read the partition.
    pub async fn in_flight(self, group: &GroupId, topic: &TopicName, partition: i32) -> Result<Option<InFlight>> {
        super::partition::in_flight(self.broker, group, topic, partition).await
    }

    /// The settings a group runs with (its stored settings over the
    /// defaults).
    pub async fn settings(self, group: &GroupId) -> Result<ShareSettings> {
        super::config::settings(self.broker, group).await
    }

    /// Every group setting with its value, for DescribeConfigs.
    pub async fn configs(self, group: &GroupId) -> Result<Vec<GroupConfigEntry>> {
        super::config::configs(self.broker, group).await
    }

    /// Sets (`Some`) or removes (`None`, back to the default) settings of
    /// a group, all or none: an unknown name or a value out of range is
    /// [`Error::Invalid`](crate::Error::Invalid) and changes nothing. The
    /// group need not exist yet.
    pub async fn alter_configs(self, group: &GroupId, changes: &[(String, Option<String>)]) -> Result<()> {
        super::config::alter(self.broker, group, changes).await
    }
}
