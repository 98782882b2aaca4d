//! Every operation of Kafka's classic consumer-group protocol, in one
//! place: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! DescribeGroups and ListGroups. Each method is documented here and
//! delegates to the file that implements it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ClassicGroupDescription, ClassicJoinRequest, ClassicJoinResponse, GroupListing};
use crate::broker::Broker;
use crate::error::Result;
use crate::groups::OffsetCommit;
use crate::types::GroupId;

/// The classic group operations of a [`Broker`]; see
/// [`Broker::classic_groups`].
#[derive(Debug, Clone, Copy)]
pub struct ClassicGroups<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Groups of Kafka's classic protocol, as the Kafka front end serves
    /// them.
    pub fn classic_groups(&self) -> ClassicGroups<'_> {
        ClassicGroups { broker: self }
    }
}

impl ClassicGroups<'_> {
    /// JoinGroup. Admits the member to the next generation (starting a
    /// rebalance if none is under way) and waits until that generation is
    /// formed: when every member has rejoined and no new member is pending,
    /// or at the rebalance deadline (the largest rebalance timeout of the
    /// members). Members that did not rejoin by then are removed. Returns
    /// the generation, the chosen protocol and the leader; the leader also
    /// gets every member's metadata, to compute the assignment it sends
    /// with [`crate::groups::classic::ClassicGroups::sync`].
    ///
    /// A follower rejoining a `Stable` group with unchanged protocols (or
    /// any member repeating its join during `CompletingRebalance`) gets the
    /// current generation back without a rebalance, as in Kafka.
    ///
    /// Errors: [`Error::MemberIdRequired`](crate::Error::MemberIdRequired) for a new dynamic member when
    /// `require_known_member_id` is set; [`Error::UnknownMember`](crate::Error::UnknownMember) for an
    /// unknown member id or a member removed while waiting;
    /// [`Error::FencedInstanceId`](crate::Error::FencedInstanceId); [`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol) when
    /// the protocol type differs from the group's (while it has members),
    /// is empty or `pgbroker` (reserved for the library's own groups), no
    /// protocols are given, or none is supported by all other members;
    /// [`Error::Invalid`](crate::Error::Invalid) for a session timeout outside 100 ms to 1 h; and
    /// [`Error::RebalanceInProgress`](crate::Error::RebalanceInProgress) if no generation was formed within
    /// twice the rebalance timeout plus 5 s (join again).
    pub async fn join(self, req: &ClassicJoinRequest) -> Result<ClassicJoinResponse> {
        super::join::classic_join(self.broker, req).await
    }

    /// SyncGroup. The leader's call (in `CompletingRebalance`, current
    /// generation) stores every member's assignment (members it leaves out
    /// get empty bytes) and makes the group `Stable`; other members wait,
    /// up to their rebalance timeout, until it is. Returns this member's
    /// assignment. Fails with [`Error::UnknownMember`](crate::Error::UnknownMember),
    /// [`Error::FencedInstanceId`](crate::Error::FencedInstanceId), [`Error::IllegalGeneration`](crate::Error::IllegalGeneration) or, when a
    /// new rebalance started (or the leader did not sync in time, which
    /// starts one), [`Error::RebalanceInProgress`](crate::Error::RebalanceInProgress).
    pub async fn sync(
        self,
        group: &GroupId,
        member_id: &str,
        generation: i32,
        group_instance_id: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<u8>> {
        super::classic_sync(
            self.broker,
            group,
            member_id,
            generation,
            group_instance_id,
            assignments,
        )
        .await
    }

    /// Heartbeat. Refreshes the member's session; fails with
    /// [`Error::RebalanceInProgress`](crate::Error::RebalanceInProgress) while the group is rebalancing (the
    /// member should rejoin), and with [`Error::UnknownMember`](crate::Error::UnknownMember),
    /// [`Error::FencedInstanceId`](crate::Error::FencedInstanceId) or [`Error::IllegalGeneration`](crate::Error::IllegalGeneration) as
    /// Kafka does. Also applies expired sessions and due rebalances.
    pub async fn heartbeat(
        self,
        group: &GroupId,
        member_id: &str,
        generation: i32,
        group_instance_id: Option<&str>,
    ) -> Result<()> {
        super::classic_heartbeat(self.broker, group, member_id, generation, group_instance_id).await
    }

    /// LeaveGroup for one or more members, each given by member id or, for
    /// a static member, by `group.instance.id` (the member id may then be
    /// empty). Returns one result per member, in order:
    /// [`Error::UnknownMember`](crate::Error::UnknownMember) or [`Error::FencedInstanceId`](crate::Error::FencedInstanceId) for those
    /// that could not leave. The remaining members rebalance; when none
    /// remain the group becomes `Empty`, keeping its generation and offsets.
    pub async fn leave(self, group: &GroupId, members: &[(String, Option<String>)]) -> Result<Vec<Result<()>>> {
        super::classic_leave(self.broker, group, members).await
    }

    /// OffsetCommit with Kafka's rules. A member commits with its id and
    /// the current generation: [`Error::UnknownMember`](crate::Error::UnknownMember),
    /// [`Error::IllegalGeneration`](crate::Error::IllegalGeneration), or [`Error::RebalanceInProgress`](crate::Error::RebalanceInProgress) while
    /// the group waits for the leader's assignment (`CompletingRebalance`);
    /// commits during `PreparingRebalance` from the current generation are
    /// accepted. There is no check of partition ownership (assignments are
    /// opaque). A simple commit (generation < 0) is accepted only while the
    /// group has no members, else it is [`Error::UnknownMember`](crate::Error::UnknownMember) (Kafka's
    /// `UNKNOWN_MEMBER_ID`). A simple commit to a group that does not exist
    /// creates it (`Empty`, no protocol type); a member commit to one fails
    /// with [`Error::IllegalGeneration`](crate::Error::IllegalGeneration). Members of the library's own
    /// groups must use [`crate::groups::Groups::commit`]
    /// ([`Error::InconsistentGroupProtocol`](crate::Error::InconsistentGroupProtocol)). Metadata is stored with each
    /// offset. Nothing is committed when any check fails.
    pub async fn commit(
        self,
        group: &GroupId,
        member_id: &str,
        generation: i32,
        offsets: &[OffsetCommit],
    ) -> Result<()> {
        super::offsets::commit_offsets_classic(self.broker, group, member_id, generation, offsets).await
    }

    /// DescribeGroups for one group, classic or the library's own. Applies
    /// expired sessions and due rebalances first. A group that only has
    /// committed offsets is described as `Empty`; one that does not exist
    /// at all is [`Error::UnknownGroup`](crate::Error::UnknownGroup) (Kafka answers `Dead`).
    pub async fn describe(self, group: &GroupId) -> Result<ClassicGroupDescription> {
        super::offsets::describe_classic_group(self.broker, group).await
    }

    /// ListGroups: every group, with its protocol type and state.
    pub async fn list(self) -> Result<Vec<GroupListing>> {
        super::offsets::list_groups_detailed(self.broker).await
    }

    /// Sets Kafka's `group.initial.rebalance.delay.ms` for the classic
    /// group protocol: when a member joins an empty group, the first
    /// rebalance waits this long (extended by the same again for every
    /// member that joins meanwhile, up to the rebalance timeout), so that
    /// members starting together land in one generation. The delay is
    /// fixed when the rebalance starts, by the broker that starts it.
    /// Defaults to [`crate::groups::DEFAULT_GROUP_INITIAL_REBALANCE_DELAY`]; capped
    /// at one minute.
    pub fn set_initial_rebalance_delay(self, delay: Duration) {
        let ms = u64::try_from(delay.min(Duration::from_secs(60)).as_millis()).unwrap_or(0);
        self.broker.inner.group_initial_delay_ms.store(ms, Ordering::Relaxed);
    }
}
