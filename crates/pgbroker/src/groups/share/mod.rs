//! Kafka's share groups (KIP-932): queues on a topic. Members of a share
//! group heartbeat with ShareGroupHeartbeat and every member is assigned
//! every partition of the topics it subscribes to (Kafka's `simple`
//! assignor with one subscription); records, not partitions, are what
//! members share. Each record is acquired by one member under a lock of
//! `share.record.lock.duration.ms`, then accepted, released or rejected;
//! a lock that runs out puts the record back, and a record delivered
//! `share.delivery.count.limit` times without acceptance is archived.
//!
//! Membership lives in the `groups` (protocol type `share`) and
//! `group_members` rows, as for the other protocols, and every heartbeat
//! is one transaction holding the group's row lock; the records' states
//! live in `share_partitions` and `share_records` (see `partition.rs`).
//! Any broker can serve any member and any share-partition.

mod api;
pub mod config;
mod consumer;
pub mod partition;
pub(crate) mod statements;

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio_postgres::Transaction;

pub use api::ShareGroups;
pub use config::{AutoOffsetReset, GroupConfigEntry, ShareIsolation, ShareSettings};
pub use consumer::{Settle, ShareConsumer, SharedRecord};
pub use partition::{ack, AckBatch, AcquiredRange, Acquisition, InFlight, InFlightRecord, MAX_IN_FLIGHT};

use super::consumer::AssignedTopic;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::types::{GroupId, TopicName};
use statements::Statements;

/// The protocol type stored for share groups.
pub(crate) const SHARE_PROTOCOL: &str = "share";

/// The member epoch with which a member leaves its share group.
pub const LEAVE_EPOCH: i32 = -1;

/// One ShareGroupHeartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareHeartbeat {
    /// The group.
    pub group: GroupId,
    /// The member's id, chosen by the client (empty asks for one).
    pub member_id: String,
    /// 0 to join, [`LEAVE_EPOCH`] to leave, else the member's epoch.
    pub member_epoch: i32,
    /// The member's rack.
    pub rack_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// The topics subscribed to; `None` keeps the subscription.
    pub subscribed_topics: Option<Vec<TopicName>>,
}

/// The answer to a share heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareHeartbeatAnswer {
    /// The member's id.
    pub member_id: String,
    /// Its epoch now ([`LEAVE_EPOCH`] after a leave).
    pub member_epoch: i32,
    /// How often it should heartbeat.
    pub heartbeat_interval: Duration,
    /// Its partitions, when they changed or the member joined.
    pub assignment: Option<Vec<AssignedTopic>>,
}

/// A share group as ShareGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareGroupDescription {
    /// The group.
    pub group: GroupId,
    /// `Empty` or `Stable`.
    pub state: String,
    /// The group epoch.
    pub group_epoch: i32,
    /// Members, by id.
    pub members: Vec<ShareMemberDescription>,
}

/// A member as ShareGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareMemberDescription {
    /// Member id.
    pub member_id: String,
    /// Rack.
    pub rack_id: Option<String>,
    /// Member epoch.
    pub member_epoch: i32,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Topics subscribed to.
    pub subscribed_topics: Vec<String>,
    /// Its partitions.
    pub assignment: Vec<AssignedTopic>,
}

/// A member row.
struct Member {
    id: String,
    epoch: i32,
    topics: Vec<String>,
    assignment: serde_json::Value,
    client_id: String,
    client_host: String,
    rack_id: Option<String>,
}

async fn members(sql: &Statements, tx: &Transaction<'_>, group: &str) -> Result<Vec<Member>> {
    let rows = tx.query(&sql.members, &[&group]).await?;
    Ok(rows
        .iter()
        .map(|r| Member {
            id: r.get(0),
            epoch: r.get(1),
            topics: r.get(2),
            assignment: r.get(3),
            client_id: r.get(4),
            client_host: r.get(5),
            rack_id: r.get(6),
        })
        .collect())
}

/// Every partition of the named topics that exist, by topic.
async fn assignment_of(sql: &Statements, tx: &Transaction<'_>, topics: &[String]) -> Result<Vec<AssignedTopic>> {
    let rows = tx.query(&sql.topic_partitions, &[&topics]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name = TopicName::new(r.get::<_, String>(0)).ok()?;
            let id: Vec<u8> = r.get(1);
            let count: i32 = r.get(2);
            Some(AssignedTopic {
                topic: name,
                topic_id: id.try_into().ok()?,
                partitions: (0..count).collect(),
            })
        })
        .collect())
}

fn as_json(a: &[AssignedTopic]) -> serde_json::Value {
    serde_json::Value::Array(
        a.iter()
            .map(|t| serde_json::json!({"topic": t.topic.as_str(), "partitions": t.partitions}))
            .collect(),
    )
}

fn from_json(v: &serde_json::Value, known: &[AssignedTopic]) -> Vec<AssignedTopic> {
    let names: BTreeSet<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.get("topic")?.as_str()).collect())
        .unwrap_or_default();
    known
        .iter()
        .filter(|t| names.contains(t.topic.as_str()))
        .cloned()
        .collect()
}

/// Locks a share group, creating it when `join` is set (a group of another
/// type without live members is taken over; one with live members is
/// [`Error::InconsistentGroupProtocol`]), and removes expired members,
/// putting back what they held. `None` when there is no share group of
/// that name. Returns the group epoch and whether members were removed.
async fn lock_group(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    join: bool,
    settings: &ShareSettings,
) -> Result<Option<(i32, bool)>> {
    if join {
        tx.execute(&sql.create_group, &[&group, &SHARE_PROTOCOL]).await?;
    }
    let Some(head) = tx.query_opt(&sql.lock_group, &[&group]).await? else {
        return Ok(None);
    };
    let epoch: i32 = head.get(0);
    let protocol_type: String = head.get(1);
    if protocol_type != SHARE_PROTOCOL {
        if !join {
            return Ok(None);
        }
        if tx.query_one(&sql.others_live, &[&group]).await?.get::<_, bool>(0) {
            return Err(Error::InconsistentGroupProtocol(group.to_string()));
        }
        tx.execute(&sql.adopt, &[&group, &SHARE_PROTOCOL]).await?;
    }
    let gone = tx.query(&sql.expire, &[&group]).await?;
    for r in &gone {
        let id: String = r.get(0);
        partition::release_member(tx, sql, group, &id, settings).await?;
    }
    Ok(Some((epoch, !gone.is_empty())))
}

fn unknown(group: &str, member: &str) -> Error {
    Error::UnknownMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

fn next_epoch(epoch: i32) -> i32 {
    epoch.wrapping_add(1).max(1)
}

/// ShareGroupHeartbeat; see [`ShareGroups::heartbeat`].
pub(crate) async fn heartbeat(broker: &Broker, req: &ShareHeartbeat) -> Result<ShareHeartbeatAnswer> {
    let settings = config::settings(broker, &req.group).await?;
    let sql = &broker.inner.sql.share;
    let group = req.group.as_str();
    let joining = req.member_epoch == 0;
    if req.member_id.is_empty() && !joining {
        return Err(unknown(group, ""));
    }
    let member_id = if req.member_id.is_empty() {
        format!("{:032x}", rand::thread_rng().gen::<u128>())
    } else {
        req.member_id.clone()
    };
    let session_ms = i32::try_from(settings.session_timeout.as_millis()).unwrap_or(i32::MAX);
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some((mut epoch, mut changed)) = lock_group(sql, &tx, group, joining, &settings).await? else {
        return Err(unknown(group, &member_id));
    };
    let existing = members(sql, &tx, group).await?.into_iter().find(|m| m.id == member_id);
    let topics: Option<Vec<String>> = req.subscribed_topics.as_ref().map(|t| {
        let mut v: Vec<String> = t.iter().map(|t| t.to_string()).collect();
        v.sort();
        v.dedup();
        v
    });
    if req.member_epoch == LEAVE_EPOCH {
        if existing.is_some() {
            partition::release_member(&tx, sql, group, &member_id, &settings).await?;
            tx.execute(&broker.inner.sql.groups.remove_member, &[&group, &member_id])
                .await?;
            tx.execute(&broker.inner.sql.groups.set_generation, &[&group, &next_epoch(epoch)])
                .await?;
        }
        tx.commit().await?;
        return Ok(ShareHeartbeatAnswer {
            member_id,
            member_epoch: LEAVE_EPOCH,
            heartbeat_interval: settings.heartbeat_interval,
            assignment: None,
        });
    }
    let subscribed = if joining {
        let topics = topics.unwrap_or_default();
        if topics.is_empty() {
            return Err(Error::invalid(
                Invalid::Subscription,
                "a joining member must subscribe to at least one topic",
            ));
        }
        // A member starting over (after a fenced heartbeat) keeps what it
        // holds: its records are tied to its id, not to its epoch, and it
        // may still acknowledge them.
        tx.execute(
            &sql.join,
            &[
                &group,
                &member_id,
                &req.client_id,
                &session_ms,
                &topics,
                &req.client_host,
                &req.rack_id,
            ],
        )
        .await?;
        changed = true;
        topics
    } else {
        let Some(m) = &existing else {
            return Err(unknown(group, &member_id));
        };
        if req.member_epoch != m.epoch {
            return Err(Error::FencedMemberEpoch {
                group: group.to_string(),
                member: member_id,
                presented: req.member_epoch,
                current: m.epoch,
            });
        }
        tx.execute(&sql.touch, &[&group, &member_id, &session_ms, &topics])
            .await?;
        match topics {
            Some(t) if t != m.topics => {
                changed = true;
                t
            }
            _ => m.topics.clone(),
        }
    };
    let assignment = assignment_of(sql, &tx, &subscribed).await?;
    let stored = existing.as_ref().map(|m| &m.assignment);
    let assignment_changed = joining || stored != Some(&as_json(&assignment));
    if changed || assignment_changed {
        epoch = next_epoch(epoch);
        tx.execute(&broker.inner.sql.groups.set_generation, &[&group, &epoch])
            .await?;
    }
    let current = if joining {
        0
    } else {
        existing.as_ref().map_or(0, |m| m.epoch)
    };
    let moved = current != epoch;
    if moved {
        tx.execute(&sql.set_member, &[&group, &member_id, &epoch, &as_json(&assignment)])
            .await?;
    }
    tx.commit().await?;
    Ok(ShareHeartbeatAnswer {
        member_id,
        member_epoch: epoch,
        heartbeat_interval: settings.heartbeat_interval,
        assignment: moved.then_some(assignment),
    })
}

/// ShareGroupDescribe; see [`ShareGroups::describe`].
pub(crate) async fn describe(broker: &Broker, group: &GroupId) -> Result<ShareGroupDescription> {
    let settings = config::settings(broker, group).await?;
    let sql = &broker.inner.sql.share;
    let g = group.as_str();
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some((epoch, _)) = lock_group(sql, &tx, g, false, &settings).await? else {
        return Err(Error::UnknownGroup(g.to_string()));
    };
    let all = members(sql, &tx, g).await?;
    let mut out = Vec::with_capacity(all.len());
    for m in all {
        let topics = assignment_of(sql, &tx, &m.topics).await?;
        out.push(ShareMemberDescription {
            assignment: from_json(&m.assignment, &topics),
            member_id: m.id,
            rack_id: m.rack_id,
            member_epoch: m.epoch,
            client_id: m.client_id,
            client_host: m.client_host,
            subscribed_topics: m.topics,
        });
    }
    tx.commit().await?;
    Ok(ShareGroupDescription {
        group: group.clone(),
        state: if out.is_empty() { "Empty" } else { "Stable" }.to_string(),
        group_epoch: epoch,
        members: out,
    })
}

/// Puts back what a member holds (its share session closed); see
/// [`ShareGroups::release_member`].
pub(crate) async fn release(broker: &Broker, group: &GroupId, member: &str) -> Result<u64> {
    let settings = config::settings(broker, group).await?;
    let sql = &broker.inner.sql.share;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let n = partition::release_member(&tx, sql, group.as_str(), member, &settings).await?;
    tx.commit().await?;
    Ok(n)
}

/// Whether a member is in a share group (and its session has not expired).
pub(crate) async fn is_member(broker: &Broker, group: &GroupId, member: &str) -> Result<bool> {
    let sql = &broker.inner.sql.share;
    let client = broker.client().await?;
    Ok(client
        .query_one(&sql.live_member, &[&group.as_str(), &member, &SHARE_PROTOCOL])
        .await?
        .get(0))
}
