//! Every operation of Kafka's consumer group protocol (KIP-848) in one
//! place; each delegates to [`super`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ConsumerGroupDescription, ConsumerHeartbeat, HeartbeatAnswer};
use crate::broker::Broker;
use crate::error::Result;
use crate::types::{GroupId, TopicName};

/// The consumer-protocol group operations of a [`Broker`]; see
/// [`Broker::consumer_groups`].
#[derive(Debug, Clone, Copy)]
pub struct ConsumerGroups<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Groups of Kafka's consumer protocol (KIP-848), as the Kafka front
    /// end serves them.
    pub fn consumer_groups(&self) -> ConsumerGroups<'_> {
        ConsumerGroups { broker: self }
    }
}

impl ConsumerGroups<'_> {
    /// ConsumerGroupHeartbeat. Epoch 0 joins (a missing group is created;
    /// a classic or library group without live members is taken over),
    /// [`super::LEAVE_EPOCH`] and [`super::STATIC_LEAVE_EPOCH`] leave, any
    /// other epoch must be the member's own (or its previous one, when
    /// the member owns nothing beyond its assignment: a lost answer).
    /// Moves the group to a new epoch and recomputes the target assignment
    /// when membership, a subscription or the subscribed topics'
    /// partitions changed, then reconciles this member: partitions it
    /// loses are revoked first (its epoch stays until it reports them
    /// gone), then it moves to the group epoch with the target partitions
    /// no other member still holds. The answer carries the assignment
    /// when it changed, on a join and whenever the member reported what
    /// it owns.
    ///
    /// Errors: [`Error::UnknownMember`](crate::Error::UnknownMember) for a
    /// member the group does not have (it left or its session expired);
    /// [`Error::FencedMemberEpoch`](crate::Error::FencedMemberEpoch) for
    /// any other epoch (rejoin with 0);
    /// [`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol)
    /// when a group of another protocol has live members;
    /// [`Error::UnreleasedInstanceId`](crate::Error::UnreleasedInstanceId)
    /// when a static member joins with an instance id an active member
    /// holds (one that left with [`super::STATIC_LEAVE_EPOCH`] keeps its
    /// partitions for its session timeout, and a join with its instance id
    /// takes its place, epoch and partitions);
    /// [`Error::Invalid`](crate::Error::Invalid) for an unknown assignor
    /// or a join without subscription.
    pub async fn heartbeat(self, req: &ConsumerHeartbeat) -> Result<HeartbeatAnswer> {
        super::heartbeat(self.broker, req).await
    }

    /// ConsumerGroupDescribe: the group epoch, the assignor and each
    /// member with its epoch, assignment and target. Removes expired
    /// members first. [`Error::UnknownGroup`](crate::Error::UnknownGroup)
    /// when there is no consumer-protocol group of that name.
    pub async fn describe(self, group: &GroupId) -> Result<ConsumerGroupDescription> {
        super::describe(self.broker, group).await
    }

    /// The member fence of an OffsetFetch (version 9): in a
    /// consumer-protocol group a fetch that names a member needs a live
    /// member ([`Error::UnknownMember`](crate::Error::UnknownMember)) at
    /// that epoch ([`Error::StaleMemberEpoch`](crate::Error::StaleMemberEpoch)).
    /// Fetches naming no member (empty id, negative epoch) and groups of
    /// other protocols pass.
    pub async fn check_fetch(self, group: &GroupId, member_id: &str, epoch: i32) -> Result<()> {
        super::check_fetch(self.broker, group, member_id, epoch).await
    }

    /// Topic names by topic id (ids of topics that do not exist are left
    /// out).
    pub async fn topic_names(self, ids: &[[u8; 16]]) -> Result<BTreeMap<[u8; 16], TopicName>> {
        super::topic_names(self.broker, ids).await
    }

    /// Sets Kafka's `group.consumer.session.timeout.ms`: a member that
    /// has not heartbeated for this long is removed by the next call on
    /// its group. Defaults to
    /// [`super::DEFAULT_CONSUMER_SESSION_TIMEOUT`]; between 100 ms and 1 h.
    pub fn set_session_timeout(self, timeout: Duration) {
        let d = timeout.clamp(Duration::from_millis(100), Duration::from_secs(3600));
        let ms = u64::try_from(d.as_millis()).unwrap_or(45_000);
        self.broker.inner.consumer_session_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets Kafka's `group.consumer.heartbeat.interval.ms`, the interval
    /// members are told to heartbeat at. Defaults to
    /// [`super::DEFAULT_CONSUMER_HEARTBEAT_INTERVAL`]; between 10 ms and 1 min.
    pub fn set_heartbeat_interval(self, interval: Duration) {
        let d = interval.clamp(Duration::from_millis(10), Duration::from_secs(60));
        let ms = u64::try_from(d.as_millis()).unwrap_or(5_000);
        self.broker.inner.consumer_heartbeat_ms.store(ms, Ordering::Relaxed);
    }
}
