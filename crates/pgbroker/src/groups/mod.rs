//! The group coordinator. All group state (members, generations,
//! assignments, committed offsets) lives in Postgres and every change runs
//! in a transaction that locks the group's row, so any number of pgbroker
//! processes can serve the same group.
//!
//! The protocol, in short: a member joins and gets an id, the group's
//! generation and its partitions. Whenever membership or the partitions of
//! the subscribed topics change, the coordinator bumps the generation and
//! recomputes the assignment. Members learn of it from their next heartbeat
//! ([`Error::RebalanceInProgress`]) and join again to get their new
//! partitions. A member that stops heartbeating is removed once its session
//! times out, by whichever member's call notices first. Commits are
//! accepted only from a live member, with the current generation, for
//! partitions it is assigned: that is the fencing.
//!
//! Kafka clients use the classic protocol in [`classic`] instead (the
//! assignment is computed by a client, the group's leader), or Kafka's
//! consumer protocol in [`consumer`] (KIP-848: computed by the broker,
//! reconciled member by member), or Kafka's share groups in [`share`]
//! (KIP-932: members share the records of every partition, each record
//! acquired under a lock and acknowledged one by one). A group belongs
//! to one protocol type at a time (`groups.protocol_type`, `pgbroker` for
//! this coordinator); it can change hands only while it has no live
//! members.

mod api;
mod assign;
pub mod classic;
pub mod consumer;
mod inspect;
pub mod share;
pub(crate) mod statements;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio_postgres::{GenericClient, Transaction};

pub use api::Groups;
use assign::MemberState;
pub use assign::Strategy;
pub use inspect::ResetTo;

/// The protocol type of the groups this module coordinates.
pub(crate) const LIBRARY_PROTOCOL: &str = "pgbroker";

/// Default of Kafka's `group.initial.rebalance.delay.ms` for classic groups
/// (Kafka's own default is 3 s): the first rebalance of an empty group
/// waits this long for more members. Change it per broker with
/// [`crate::groups::classic::ClassicGroups::set_initial_rebalance_delay`].
pub const DEFAULT_GROUP_INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(200);

use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::groups::statements::Statements;
use crate::types::{GroupId, TopicName, TopicPartition};

/// Settings a member joins with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// A name for the client, shown in `group describe`; prefixes member ids.
    pub client_id: String,
    /// The member is removed when it has not heartbeated for this long.
    pub session_timeout: Duration,
    /// Strategy for a new group; an existing group keeps its own.
    pub strategy: Strategy,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            client_id: "pgbroker".to_string(),
            session_timeout: Duration::from_secs(10),
            strategy: Strategy::default(),
        }
    }
}

/// A member's place in its group after a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The group.
    pub group: GroupId,
    /// This member's id; present it on every later call.
    pub member_id: String,
    /// The generation the assignment belongs to.
    pub generation: i32,
    /// The partitions this member owns in this generation.
    pub assignment: Vec<TopicPartition>,
}

/// One offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    /// Topic.
    pub topic: TopicName,
    /// Partition.
    pub partition: i32,
    /// The next offset to read (Kafka's convention).
    pub offset: i64,
    /// Free-form metadata stored with the offset.
    pub metadata: Option<String>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommittedOffset {
    /// Partition.
    pub partition: i32,
    /// The next offset to read.
    pub offset: i64,
    /// Metadata committed with it.
    pub metadata: Option<String>,
}

/// A live member as shown by [`crate::groups::Groups::describe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// Member id.
    pub member_id: String,
    /// Client id it joined with.
    pub client_id: String,
    /// Last heartbeat, milliseconds since the epoch.
    pub last_heartbeat_ms: i64,
    /// Partitions it owns (for Kafka clients, decoded from the consumer
    /// protocol assignment their leader sent).
    pub assignment: Vec<TopicPartition>,
}

/// Progress of a group on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: TopicName,
    /// Partition.
    pub partition: i32,
    /// Committed offset, if any.
    pub committed: Option<i64>,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// `high_watermark - committed` (from the log start when nothing is
    /// committed).
    pub lag: i64,
    /// The member that owns the partition now, if any.
    pub member: Option<String>,
}

/// One group's lag on one partition, as [`Groups::lag_all`](crate::groups::Groups::lag_all) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLag {
    /// Group id.
    pub group: GroupId,
    /// Topic.
    pub topic: TopicName,
    /// Partition.
    pub partition: i32,
    /// `high watermark - committed` (from the log start when nothing is
    /// committed), never below zero.
    pub lag: i64,
}

/// A group's members and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// Group id.
    pub group: GroupId,
    /// `Stable` with live members, `Empty` without; for a Kafka (classic)
    /// group, its protocol state (see [`crate::groups::classic::ClassicGroups::describe`]).
    pub state: String,
    /// `pgbroker` for the library's groups, the Kafka clients' protocol
    /// type (usually `consumer`) for classic groups, `consumer-protocol`
    /// for groups of Kafka's consumer protocol (KIP-848), empty for a
    /// group that only stores offsets.
    pub protocol_type: String,
    /// Current generation.
    pub generation: i32,
    /// Assignment strategy: the library's, or for Kafka clients the
    /// protocol their leader chose (`range`, `roundrobin`,
    /// `cooperative-sticky`, ...); `-` while none is chosen.
    pub strategy: String,
    /// Live members.
    pub members: Vec<MemberInfo>,
    /// Per partition progress.
    pub partitions: Vec<PartitionLag>,
}

fn parse_assignment(v: serde_json::Value) -> Vec<TopicPartition> {
    serde_json::from_value(v).unwrap_or_default()
}

fn session_ms(d: Duration) -> Result<i32> {
    let ms = i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    if !(100..=3_600_000).contains(&ms) {
        return Err(Error::invalid(
            Invalid::SessionTimeout,
            format!("{d:?} is not between 100ms and 1h"),
        ));
    }
    Ok(ms)
}

/// Locks the group's row. Returns its generation and strategy, or
/// [`Error::InconsistentGroupProtocol`] for a Kafka (classic) group.
async fn lock_group(sql: &Statements, tx: &Transaction<'_>, group: &GroupId) -> Result<Option<(i32, Strategy)>> {
    let row = tx.query_opt(&sql.lock_library, &[&group.as_str()]).await?;
    Ok(match row {
        Some(r) if is_foreign(&r.get::<_, String>(2)) => {
            return Err(Error::InconsistentGroupProtocol(group.to_string()))
        }
        Some(r) => Some((r.get(0), r.get::<_, String>(1).parse()?)),
        None => None,
    })
}

/// True for a group of Kafka clients (a group that only stores offsets has
/// no protocol type yet).
fn is_foreign(protocol_type: &str) -> bool {
    !(protocol_type == LIBRARY_PROTOCOL || protocol_type.is_empty())
}

/// Makes a locked group a library group when it is a classic group without
/// live members; [`Error::InconsistentGroupProtocol`] when it has some.
async fn adopt_group(sql: &Statements, tx: &Transaction<'_>, group: &GroupId) -> Result<()> {
    let protocol_type: String = tx.query_one(&sql.protocol_type, &[&group.as_str()]).await?.get(0);
    if protocol_type == LIBRARY_PROTOCOL {
        return Ok(());
    }
    let live: bool = tx.query_one(&sql.has_live_members, &[&group.as_str()]).await?.get(0);
    if live {
        return Err(Error::InconsistentGroupProtocol(group.to_string()));
    }
    tx.execute(&sql.delete_members, &[&group.as_str()]).await?;
    tx.execute(&sql.adopt, &[&group.as_str(), &LIBRARY_PROTOCOL]).await?;
    Ok(())
}

/// Recomputes the assignment of a locked group. Bumps the generation when
/// `force` is set or any member's partitions change. Returns the generation.
async fn rebalance(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &GroupId,
    generation: i32,
    strategy: Strategy,
    force: bool,
) -> Result<i32> {
    let rows = tx.query(&sql.subscriptions, &[&group.as_str()]).await?;
    let mut members = Vec::with_capacity(rows.len());
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for r in &rows {
        let topics: Vec<String> = r.get(1);
        wanted.extend(topics.iter().cloned());
        members.push(MemberState {
            id: r.get(0),
            topics: topics.into_iter().filter_map(|t| TopicName::new(t).ok()).collect(),
            previous: parse_assignment(r.get(2)),
        });
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let counts = tx.query(&sql.partition_counts, &[&wanted]).await?;
    let partitions: BTreeMap<TopicName, i32> = counts
        .iter()
        .filter_map(|r| Some((TopicName::new(r.get::<_, String>(0)).ok()?, r.get(1))))
        .collect();
    let assignment = assign::assign(strategy, &members, &partitions);
    let changed = members
        .iter()
        .any(|m| assignment.get(&m.id).map(Vec::as_slice) != Some(m.previous.as_slice()));
    if !(force || changed) {
        return Ok(generation);
    }
    let next = generation.wrapping_add(1).max(1);
    for (member, parts) in &assignment {
        let json = serde_json::to_value(parts).map_err(|e| Error::invalid(Invalid::Assignment, e))?;
        tx.execute(&sql.set_assignment, &[&group.as_str(), member, &json])
            .await?;
    }
    tx.execute(&sql.set_generation, &[&group.as_str(), &next]).await?;
    tracing::debug!(group = %group, generation = next, members = members.len(), "group rebalanced");
    Ok(next)
}

/// Joins a group (or rejoins, with the id from an earlier join) and
/// returns this member's partitions for the current generation.
/// Rejoining with an unchanged subscription does not rebalance.
/// A group of Kafka clients (classic protocol) with live members is
/// [`Error::InconsistentGroupProtocol`]; one without is taken over.
pub(crate) async fn join_group(
    broker: &Broker,
    group: &GroupId,
    member_id: Option<&str>,
    topics: &[TopicName],
    options: &JoinOptions,
) -> Result<Membership> {
    let timeout = session_ms(options.session_timeout)?;
    if topics.is_empty() {
        return Err(Error::invalid(
            Invalid::Subscription,
            "a member must subscribe to at least one topic",
        ));
    }
    for t in topics {
        broker.topic_meta(t).await?;
    }
    let mut subscribed: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    subscribed.sort();
    subscribed.dedup();
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    tx.execute(
        &broker.inner.sql.groups.create_group,
        &[&group.as_str(), &options.strategy.as_str()],
    )
    .await?;
    adopt_group(&broker.inner.sql.groups, &tx, group).await?;
    let (generation, strategy) = lock_group(&broker.inner.sql.groups, &tx, group)
        .await?
        .ok_or_else(|| Error::UnknownGroup(group.to_string()))?;
    let mut changed = tx.execute(&broker.inner.sql.groups.expire, &[&group.as_str()]).await? > 0;
    let id = match member_id {
        Some(id) => {
            let row = tx
                .query_opt(&broker.inner.sql.groups.member_topics, &[&group.as_str(), &id])
                .await?;
            let Some(row) = row else {
                if changed {
                    rebalance(&broker.inner.sql.groups, &tx, group, generation, strategy, true).await?;
                }
                tx.commit().await?;
                return Err(Error::UnknownMember {
                    group: group.to_string(),
                    member: id.to_string(),
                });
            };
            changed |= row.get::<_, Vec<String>>(0) != subscribed;
            tx.execute(
                &broker.inner.sql.groups.rejoin,
                &[&group.as_str(), &id, &timeout, &subscribed],
            )
            .await?;
            id.to_string()
        }
        None => {
            let id = format!("{}-{:016x}", options.client_id, rand::thread_rng().gen::<u64>());
            tx.execute(
                &broker.inner.sql.groups.add_member,
                &[&group.as_str(), &id, &options.client_id, &timeout, &subscribed],
            )
            .await?;
            changed = true;
            id
        }
    };
    let generation = rebalance(&broker.inner.sql.groups, &tx, group, generation, strategy, changed).await?;
    let row = tx
        .query_one(&broker.inner.sql.groups.member_assignment, &[&group.as_str(), &id])
        .await?;
    tx.commit().await?;
    Ok(Membership {
        group: group.clone(),
        member_id: id,
        generation,
        assignment: parse_assignment(row.get(0)),
    })
}

/// Keeps a member alive. Fails with [`Error::RebalanceInProgress`] when
/// the group has moved to a newer generation (join again), and with
/// [`Error::UnknownMember`] when the member was removed
/// ([`Error::InconsistentGroupProtocol`] for a Kafka clients' group).
pub(crate) async fn heartbeat(broker: &Broker, group: &GroupId, member_id: &str, generation: i32) -> Result<()> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let unknown = || Error::UnknownMember {
        group: group.to_string(),
        member: member_id.to_string(),
    };
    let Some((mut current, strategy)) = lock_group(&broker.inner.sql.groups, &tx, group).await? else {
        return Err(unknown());
    };
    if tx.execute(&broker.inner.sql.groups.expire, &[&group.as_str()]).await? > 0 {
        current = rebalance(&broker.inner.sql.groups, &tx, group, current, strategy, true).await?;
    }
    let alive = tx
        .execute(&broker.inner.sql.groups.touch, &[&group.as_str(), &member_id])
        .await?
        > 0;
    tx.commit().await?;
    if !alive {
        return Err(unknown());
    }
    if generation != current {
        return Err(Error::RebalanceInProgress {
            group: group.to_string(),
            presented: generation,
            current,
        });
    }
    Ok(())
}

/// Leaves a group at once; its partitions go to the other members.
/// ([`Error::InconsistentGroupProtocol`] for a Kafka clients' group.)
pub(crate) async fn leave_group(broker: &Broker, group: &GroupId, member_id: &str) -> Result<()> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let unknown = || Error::UnknownMember {
        group: group.to_string(),
        member: member_id.to_string(),
    };
    let (generation, strategy) = lock_group(&broker.inner.sql.groups, &tx, group)
        .await?
        .ok_or_else(unknown)?;
    let gone = tx
        .execute(&broker.inner.sql.groups.remove_member, &[&group.as_str(), &member_id])
        .await?;
    if gone == 0 {
        return Err(unknown());
    }
    tx.execute(&broker.inner.sql.groups.expire, &[&group.as_str()]).await?;
    rebalance(&broker.inner.sql.groups, &tx, group, generation, strategy, true).await?;
    tx.commit().await?;
    Ok(())
}

/// Commits offsets for a group. With `member` (id and generation) the
/// commit is fenced: the member must be live, in the current generation
/// and assigned every partition it commits. Without it, the commit is
/// accepted only while the group has no live members (tools, resets).
/// Members of a Kafka clients' group use
/// [`crate::groups::classic::ClassicGroups::commit`] instead
/// ([`Error::InconsistentGroupProtocol`]).
pub(crate) async fn commit_offsets(
    broker: &Broker,
    group: &GroupId,
    member: Option<(&str, i32)>,
    offsets: &[OffsetCommit],
) -> Result<()> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    commit_offsets_in(broker, &*tx, group, member, offsets).await?;
    tx.commit().await?;
    Ok(())
}

/// [`commit_offsets`] inside the caller's open transaction: the offsets are
/// committed if and only if that transaction commits. The fence is checked
/// now, and the group's row stays share-locked until the caller ends the
/// transaction, so no rebalance can slip in between the check and the
/// caller's commit.
pub(crate) async fn commit_offsets_in(
    broker: &Broker,
    tx: &impl GenericClient,
    group: &GroupId,
    member: Option<(&str, i32)>,
    offsets: &[OffsetCommit],
) -> Result<()> {
    for o in offsets {
        if o.offset < 0 {
            return Err(Error::invalid(Invalid::Offset, format!("{} is negative", o.offset)));
        }
        broker.partition_id(&o.topic, o.partition).await?;
    }
    let state = tx
        .query_opt(&broker.inner.sql.groups.share_group, &[&group.as_str()])
        .await?;
    if member.is_some() && state.as_ref().is_some_and(|r| is_foreign(r.get(1))) {
        return Err(Error::InconsistentGroupProtocol(group.to_string()));
    }
    match member {
        Some((member_id, generation)) => {
            let unknown = || Error::UnknownMember {
                group: group.to_string(),
                member: member_id.to_string(),
            };
            let current: i32 = state.ok_or_else(unknown)?.get(0);
            let row = tx
                .query_opt(
                    &broker.inner.sql.groups.live_member_assignment,
                    &[&group.as_str(), &member_id],
                )
                .await?
                .ok_or_else(unknown)?;
            if generation != current {
                return Err(Error::RebalanceInProgress {
                    group: group.to_string(),
                    presented: generation,
                    current,
                });
            }
            let owned: BTreeSet<TopicPartition> = parse_assignment(row.get(0)).into_iter().collect();
            if let Some(o) = offsets.iter().find(|o| {
                !owned.contains(&TopicPartition {
                    topic: o.topic.clone(),
                    partition: o.partition,
                })
            }) {
                return Err(Error::NotAssigned {
                    group: group.to_string(),
                    member: member_id.to_string(),
                    topic: o.topic.to_string(),
                    partition: o.partition,
                });
            }
        }
        None => {
            let live = tx
                .query_one(&broker.inner.sql.groups.count_live_members, &[&group.as_str()])
                .await?;
            if live.get::<_, i64>(0) > 0 {
                return Err(Error::GroupNotEmpty(group.to_string()));
            }
        }
    }
    upsert_offsets(&broker.inner.sql.groups, tx, group, offsets).await
}

async fn upsert_offsets(
    sql: &Statements,
    tx: &impl GenericClient,
    group: &GroupId,
    offsets: &[OffsetCommit],
) -> Result<()> {
    let topics: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
    let partitions: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
    let values: Vec<i64> = offsets.iter().map(|o| o.offset).collect();
    let metadata: Vec<Option<&str>> = offsets.iter().map(|o| o.metadata.as_deref()).collect();
    tx.execute(
        &sql.upsert_offsets,
        &[&group.as_str(), &topics, &partitions, &values, &metadata],
    )
    .await?;
    Ok(())
}
