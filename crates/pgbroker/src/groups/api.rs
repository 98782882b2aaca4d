//! Every operation on consumer groups of the library's own protocol and
//! on committed offsets of any group, in one place. The operations of
//! Kafka's classic group protocol are in [`super::classic::ClassicGroups`].
//! Each method is documented here and delegates to the file that
//! implements it.

use super::{CommittedOffset, GroupDescription, GroupLag, JoinOptions, Membership, OffsetCommit, ResetTo};
use crate::broker::Broker;
use crate::error::Result;
use crate::types::{GroupId, TopicName};
use tokio_postgres::GenericClient;

/// The group operations of a [`Broker`]; see [`Broker::groups`].
#[derive(Debug, Clone, Copy)]
pub struct Groups<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Consumer groups of the library's protocol, and committed offsets.
    pub fn groups(&self) -> Groups<'_> {
        Groups { broker: self }
    }
}

impl Groups<'_> {
    /// Joins a group (or rejoins, with the id from an earlier join) and
    /// returns this member's partitions for the current generation.
    /// Rejoining with an unchanged subscription does not rebalance.
    /// A group of Kafka clients (classic protocol) with live members is
    /// [`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol); one without is taken over.
    pub async fn join(
        self,
        group: &GroupId,
        member_id: Option<&str>,
        topics: &[TopicName],
        options: &JoinOptions,
    ) -> Result<Membership> {
        super::join_group(self.broker, group, member_id, topics, options).await
    }

    /// Keeps a member alive. Fails with [`Error::RebalanceInProgress`](crate::Error::RebalanceInProgress) when
    /// the group has moved to a newer generation (join again), and with
    /// [`Error::UnknownMember`](crate::Error::UnknownMember) when the member was removed
    /// ([`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol) for a Kafka clients' group).
    pub async fn heartbeat(self, group: &GroupId, member_id: &str, generation: i32) -> Result<()> {
        super::heartbeat(self.broker, group, member_id, generation).await
    }

    /// Leaves a group at once; its partitions go to the other members.
    /// ([`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol) for a Kafka clients' group.)
    pub async fn leave(self, group: &GroupId, member_id: &str) -> Result<()> {
        super::leave_group(self.broker, group, member_id).await
    }

    /// Commits offsets for a group. With `member` (id and generation) the
    /// commit is fenced: the member must be live, in the current generation
    /// and assigned every partition it commits. Without it, the commit is
    /// accepted only while the group has no live members (tools, resets).
    /// Members of a Kafka clients' group use
    /// [`crate::groups::classic::ClassicGroups::commit`] instead
    /// ([`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol)).
    pub async fn commit(self, group: &GroupId, member: Option<(&str, i32)>, offsets: &[OffsetCommit]) -> Result<()> {
        super::commit_offsets(self.broker, group, member, offsets).await
    }

    /// Commits offsets inside the caller's open transaction, with the same
    /// fence as [`Groups::commit`]: together with
    /// [`crate::streams::Streams::produce_in`] and the caller's own writes,
    /// consuming, producing and committing become one Postgres transaction.
    /// The group's row stays share-locked until the caller's transaction
    /// ends, so a rebalance waits for it: keep such transactions short.
    pub async fn commit_in(
        self,
        client: &impl GenericClient,
        group: &GroupId,
        member: Option<(&str, i32)>,
        offsets: &[OffsetCommit],
    ) -> Result<()> {
        super::commit_offsets_in(self.broker, client, group, member, offsets).await
    }

    /// The group's committed offsets for one topic, by partition.
    pub async fn offsets(self, group: &GroupId, topic: &TopicName) -> Result<Vec<CommittedOffset>> {
        super::inspect::committed_offsets(self.broker, group, topic).await
    }

    /// Every committed offset of a group (OffsetFetch without topics), by
    /// topic and partition.
    pub async fn all_offsets(self, group: &GroupId) -> Result<Vec<(TopicName, CommittedOffset)>> {
        super::classic::offsets::all_committed_offsets(self.broker, group).await
    }

    /// Moves an inactive group's committed offsets for one topic. Returns
    /// the new offset of every partition.
    pub async fn reset_offsets(self, group: &GroupId, topic: &TopicName, to: ResetTo) -> Result<Vec<CommittedOffset>> {
        super::inspect::reset_offsets(self.broker, group, topic, to).await
    }

    /// Every group that has members or committed offsets, by name.
    pub async fn list(self) -> Result<Vec<GroupId>> {
        super::inspect::list_groups(self.broker).await
    }

    /// A group's live members and, per partition, committed offset, high
    /// watermark, lag and owner.
    pub async fn describe(self, group: &GroupId) -> Result<GroupDescription> {
        super::inspect::describe_group(self.broker, group).await
    }

    /// Every group's lag on every partition of the topics it has committed
    /// on or its members subscribe to, in one statement, by group, topic
    /// and partition: what a metrics scrape needs without describing each
    /// group in turn.
    pub async fn lag_all(self) -> Result<Vec<GroupLag>> {
        super::inspect::lag_of_all_groups(self.broker).await
    }

    /// Deletes an inactive group and its committed offsets; a group with
    /// live members (library or Kafka clients) is [`Error::GroupNotEmpty`](crate::Error::GroupNotEmpty)
    /// (Kafka's `NON_EMPTY_GROUP`).
    pub async fn delete(self, group: &GroupId) -> Result<()> {
        super::inspect::delete_group(self.broker, group).await
    }
}
