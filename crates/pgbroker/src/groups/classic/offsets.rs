//! Offsets and administration for classic groups: OffsetCommit with
//! Kafka's validation, DescribeGroups, ListGroups and OffsetFetch of all
//! topics.

use serde::Serialize;
use tokio_postgres::Transaction;

use super::super::consumer::CONSUMER_PROTOCOL;
use super::super::share::SHARE_PROTOCOL;
use super::super::{upsert_offsets, CommittedOffset, OffsetCommit, LIBRARY_PROTOCOL};
use super::state::{self, Group, State};
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::groups::statements::Statements;
use crate::types::{GroupId, TopicName};

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassicGroupDescription {
    /// Group id.
    pub group: GroupId,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub state: String,
    /// `consumer` and the like; `pgbroker` for the library's own groups;
    /// empty for a group that only stores offsets.
    pub protocol_type: String,
    /// The chosen protocol (assignor) while `Stable`, else empty (as in
    /// Kafka). For the library's groups, the assignment strategy.
    pub protocol_name: String,
    /// Current generation.
    pub generation: i32,
    /// The leader's member id, once a generation was formed.
    pub leader: Option<String>,
    /// Members, by member id.
    pub members: Vec<ClassicMemberDescription>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassicMemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol (empty unless the group is
    /// `Stable`).
    pub metadata: Vec<u8>,
    /// The assignment the leader gave it (empty unless `Stable`).
    pub assignment: Vec<u8>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupListing {
    /// Group id.
    pub group: GroupId,
    /// Protocol type (empty for a group that only stores offsets).
    pub protocol_type: String,
    /// Group state; `Empty` when no live member is left.
    pub state: String,
    /// `consumer` for a group of Kafka's consumer protocol (KIP-848),
    /// `share` for a share group (KIP-932), else `classic`.
    pub group_type: String,
}

/// OffsetCommit with Kafka's rules. A member commits with its id and
/// the current generation: [`Error::UnknownMember`],
/// [`Error::IllegalGeneration`], or [`Error::RebalanceInProgress`] while
/// the group waits for the leader's assignment (`CompletingRebalance`);
/// commits during `PreparingRebalance` from the current generation are
/// accepted. There is no check of partition ownership (assignments are
/// opaque). A simple commit (generation < 0) is accepted only while the
/// group has no members, else it is [`Error::UnknownMember`] (Kafka's
/// `UNKNOWN_MEMBER_ID`). A simple commit to a group that does not exist
/// creates it (`Empty`, no protocol type); a member commit to one fails
/// with [`Error::IllegalGeneration`]. Members of the library's own
/// groups must use [`crate::groups::Groups::commit`]
/// ([`Error::InconsistentGroupProtocol`]). Metadata is stored with each
/// offset. Nothing is committed when any check fails.
pub(crate) async fn commit_offsets_classic(
    broker: &Broker,
    group: &GroupId,
    member_id: &str,
    generation: i32,
    offsets: &[OffsetCommit],
) -> Result<()> {
    for o in offsets {
        if o.offset < 0 {
            return Err(Error::invalid(Invalid::Offset, format!("{} is negative", o.offset)));
        }
        broker.partition_id(&o.topic, o.partition).await?;
    }
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let mut g = match state::lock(&broker.inner.sql.groups, &tx, group.as_str()).await? {
        Some(g) => g,
        None if generation < 0 => state::lock_or_create(&broker.inner.sql.groups, &tx, group.as_str()).await?,
        None => {
            return Err(Error::IllegalGeneration {
                group: group.to_string(),
                presented: generation,
                current: 0,
            })
        }
    };
    state::tick(&broker.inner.sql.groups, &tx, &mut g).await?;
    let verdict = check_commit(&broker.inner.sql.groups, &tx, &g, member_id, generation).await;
    if verdict.is_ok() {
        upsert_offsets(&broker.inner.sql.groups, &*tx, group, offsets).await?;
    }
    tx.commit().await?;
    verdict
}

/// The member and generation fence of an offset commit made inside a
/// transaction (KIP-447): the same checks as a member's own commit, with
/// nothing written. A commit that names no member and no generation is
/// not fenced.
pub(crate) async fn fence_member(broker: &Broker, group: &GroupId, member_id: &str, generation: i32) -> Result<()> {
    if generation < 0 && member_id.is_empty() {
        return Ok(());
    }
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some(mut g) = state::lock(&broker.inner.sql.groups, &tx, group.as_str()).await? else {
        return Err(Error::IllegalGeneration {
            group: group.to_string(),
            presented: generation,
            current: 0,
        });
    };
    state::tick(&broker.inner.sql.groups, &tx, &mut g).await?;
    let verdict = check_commit(&broker.inner.sql.groups, &tx, &g, member_id, generation).await;
    tx.commit().await?;
    verdict
}

/// Every committed offset of a group (OffsetFetch without topics), by
/// topic and partition.
pub(crate) async fn all_committed_offsets(
    broker: &Broker,
    group: &GroupId,
) -> Result<Vec<(TopicName, CommittedOffset)>> {
    let client = broker.client().await?;
    let rows = client
        .query(&broker.inner.sql.groups.all_committed_offsets, &[&group.as_str()])
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                TopicName::new(r.get::<_, String>(0))?,
                CommittedOffset {
                    partition: r.get(1),
                    offset: r.get(2),
                    metadata: r.get(3),
                },
            ))
        })
        .collect()
}

/// DescribeGroups for one group, classic or the library's own. Applies
/// expired sessions and due rebalances first. A group that only has
/// committed offsets is described as `Empty`; one that does not exist
/// at all is [`Error::UnknownGroup`] (Kafka answers `Dead`).
pub(crate) async fn describe_classic_group(broker: &Broker, group: &GroupId) -> Result<ClassicGroupDescription> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some(mut g) = state::lock(&broker.inner.sql.groups, &tx, group.as_str()).await? else {
        let offsets = tx
            .query_one(&broker.inner.sql.groups.has_offsets, &[&group.as_str()])
            .await?;
        if !offsets.get::<_, bool>(0) {
            return Err(Error::UnknownGroup(group.to_string()));
        }
        return Ok(ClassicGroupDescription {
            group: group.clone(),
            state: State::Empty.as_str().to_string(),
            protocol_type: String::new(),
            protocol_name: String::new(),
            generation: 0,
            leader: None,
            members: Vec::new(),
        });
    };
    state::tick(&broker.inner.sql.groups, &tx, &mut g).await?;
    if g.is_consumer_protocol() {
        // Kafka's DescribeGroups does not describe consumer-protocol groups.
        return Err(Error::UnknownGroup(group.to_string()));
    }
    let d = if g.is_classic() {
        describe_classic(&broker.inner.sql.groups, &tx, group, &g).await?
    } else {
        describe_library(&broker.inner.sql.groups, &tx, group, &g).await?
    };
    tx.commit().await?;
    Ok(d)
}

/// ListGroups: every group, with its protocol type and state.
pub(crate) async fn list_groups_detailed(broker: &Broker) -> Result<Vec<GroupListing>> {
    let client = broker.client().await?;
    let rows = client
        .query(
            &broker.inner.sql.groups.list_detailed,
            &[&LIBRARY_PROTOCOL, &CONSUMER_PROTOCOL, &SHARE_PROTOCOL],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let protocol_type: String = r.get(1);
            let consumer = protocol_type == CONSUMER_PROTOCOL;
            let group_type = match protocol_type.as_str() {
                CONSUMER_PROTOCOL => "consumer",
                SHARE_PROTOCOL => "share",
                _ => "classic",
            };
            Ok(GroupListing {
                group: GroupId::new(r.get::<_, String>(0))?,
                protocol_type: if consumer {
                    "consumer".to_string()
                } else {
                    protocol_type
                },
                state: r.get(2),
                group_type: group_type.to_string(),
            })
        })
        .collect()
}

async fn check_commit(
    sql: &Statements,
    tx: &Transaction<'_>,
    g: &Group,
    member_id: &str,
    generation: i32,
) -> Result<()> {
    if g.is_consumer_protocol() {
        return super::super::consumer::check_commit(sql, tx, &g.name, member_id, generation).await;
    }
    if generation < 0 && state::live_count(sql, tx, &g.name).await? == 0 {
        return Ok(());
    }
    if generation < 0 && member_id.is_empty() {
        // Only members may commit to a group that has members.
        return Err(state::unknown(&g.name, member_id));
    }
    state::current_member(sql, tx, &g.name, member_id, None).await?;
    if !g.is_classic() {
        return Err(Error::InconsistentGroupProtocol(g.name.clone()));
    }
    if generation != g.generation {
        return Err(state::illegal_generation(g, generation));
    }
    if g.state == State::Completing {
        return Err(state::rebalancing(g, generation));
    }
    Ok(())
}

async fn describe_classic(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &GroupId,
    g: &Group,
) -> Result<ClassicGroupDescription> {
    let stable = g.state == State::Stable;
    let protocol_name = if stable {
        g.protocol_name.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let members = tx
        .query(&sql.describe_classic, &[&g.name, &protocol_name])
        .await?
        .iter()
        .map(|r| ClassicMemberDescription {
            member_id: r.get(0),
            group_instance_id: r.get(1),
            client_id: r.get(2),
            client_host: r.get(3),
            metadata: if stable { r.get(4) } else { Vec::new() },
            assignment: if stable { r.get(5) } else { Vec::new() },
        })
        .collect();
    Ok(ClassicGroupDescription {
        group: group.clone(),
        state: g.state.as_str().to_string(),
        protocol_type: g.protocol_type.clone(),
        protocol_name,
        generation: g.generation,
        leader: g.leader.clone(),
        members,
    })
}

async fn describe_library(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &GroupId,
    g: &Group,
) -> Result<ClassicGroupDescription> {
    let members: Vec<ClassicMemberDescription> = tx
        .query(&sql.describe_library_members, &[&g.name])
        .await?
        .iter()
        .map(|r| ClassicMemberDescription {
            member_id: r.get(0),
            group_instance_id: None,
            client_id: r.get(1),
            client_host: String::new(),
            metadata: Vec::new(),
            assignment: Vec::new(),
        })
        .collect();
    let strategy: String = tx.query_one(&sql.library_strategy, &[&g.name]).await?.get(0);
    let stable = !members.is_empty();
    Ok(ClassicGroupDescription {
        group: group.clone(),
        state: if stable { State::Stable } else { State::Empty }.as_str().to_string(),
        protocol_type: g.protocol_type.clone(),
        protocol_name: if stable { strategy } else { String::new() },
        generation: g.generation,
        leader: None,
        members,
    })
}
