//! Kafka's consumer group protocol (KIP-848): members heartbeat with
//! ConsumerGroupHeartbeat and the coordinator computes every assignment.
//!
//! The group epoch (`groups.generation`) moves on whenever membership,
//! a subscription or the partitions of a subscribed topic change; the
//! target assignment is then recomputed for all members at once with the
//! group's server-side assignor (`uniform`, the library's sticky strategy,
//! or `range`: the same functions as the library's own groups, see
//! `groups::assign`). Each member then reconciles on its own heartbeats
//! (see `reconcile.rs`): it first gives up what it must lose, keeping its
//! member epoch, and only then moves to the group's epoch and gets the
//! partitions no other member still holds. Only the partitions that move
//! pause; nobody waits for a group-wide barrier.
//!
//! Like the classic protocol, all state is in the `groups` and
//! `group_members` rows and every call is one short transaction holding
//! the group's row lock, so any broker can serve any member. Sessions are
//! enforced by the broker: whichever call comes next removes members that
//! have not heartbeated within the session timeout, or that did not give
//! up revoked partitions within their rebalance timeout.

mod api;
mod reconcile;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio_postgres::Transaction;

pub use api::ConsumerGroups;
use reconcile::{reconcile, MemberView, Parts, Phase};

use super::assign::{self, MemberState, Strategy};
use super::parse_assignment;
use crate::auth::acl::grants_of;
use crate::auth::UserAcls;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::groups::statements::Statements;
use crate::streams::topics::uuid_bytes;
use crate::types::{GroupId, TopicName, TopicPartition};

/// The protocol type stored for consumer-protocol groups.
pub(crate) const CONSUMER_PROTOCOL: &str = "consumer-protocol";

/// Default of Kafka's `group.consumer.session.timeout.ms`.
pub const DEFAULT_CONSUMER_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// Default of Kafka's `group.consumer.heartbeat.interval.ms`.
pub const DEFAULT_CONSUMER_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The member epoch with which a member leaves its group.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch with which a static member leaves for a while.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// One ConsumerGroupHeartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeat {
    /// The group.
    pub group: GroupId,
    /// The member's id (chosen by the client in version 1; empty asks the
    /// coordinator for one).
    pub member_id: String,
    /// 0 to join, [`LEAVE_EPOCH`] or [`STATIC_LEAVE_EPOCH`] to leave, else
    /// the member's current epoch.
    pub member_epoch: i32,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The member's rack.
    pub rack_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// How long the member may take to give up revoked partitions;
    /// `None` keeps the current one.
    pub rebalance_timeout: Option<Duration>,
    /// The topics subscribed by name; `None` keeps the subscription.
    pub subscribed_topics: Option<Vec<TopicName>>,
    /// A regular expression topic names must match in full; `None` keeps
    /// the current one, an empty one clears it.
    pub subscribed_regex: Option<String>,
    /// `uniform` or `range`; `None` keeps the current choice.
    pub server_assignor: Option<String>,
    /// What the member owns now; `None` when it did not say.
    pub owned: Option<Vec<TopicPartition>>,
    /// The user the member authenticated as, when that user's grants
    /// limit what it may see: its regular expression then matches only
    /// topics the user has some grant on, as Kafka matches only topics the
    /// member may describe. `None`: no limit.
    pub principal: Option<String>,
}

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssignedTopic {
    /// The topic.
    pub topic: TopicName,
    /// Its id.
    #[serde(skip)]
    pub topic_id: [u8; 16],
    /// Partitions, ascending.
    pub partitions: Vec<i32>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The member's id.
    pub member_id: String,
    /// Its epoch now (the leave epoch after a leave).
    pub member_epoch: i32,
    /// How often it should heartbeat.
    pub heartbeat_interval: Duration,
    /// Its partitions, when they changed or the request was a full one.
    pub assignment: Option<Vec<AssignedTopic>>,
}

/// A consumer-protocol group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerGroupDescription {
    /// The group.
    pub group: GroupId,
    /// `Empty`, `Reconciling` or `Stable`.
    pub state: String,
    /// The group epoch.
    pub group_epoch: i32,
    /// The epoch of the target assignment (always the group epoch: targets
    /// are computed when the epoch moves).
    pub assignment_epoch: i32,
    /// The server-side assignor.
    pub assignor: String,
    /// Members, by id.
    pub members: Vec<ConsumerMemberDescription>,
}

/// A member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerMemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Member epoch.
    pub member_epoch: i32,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Topics subscribed by name.
    pub subscribed_topics: Vec<String>,
    /// Subscription by regular expression.
    pub subscribed_regex: Option<String>,
    /// What it owns (partitions being revoked included).
    pub assignment: Vec<AssignedTopic>,
    /// What the target assignment holds for it.
    pub target: Vec<AssignedTopic>,
}

/// A member row.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    view: MemberView,
    previous_epoch: i32,
    topics: Vec<String>,
    regex: Option<String>,
    assignor: Option<String>,
    target: Parts,
    client_id: String,
    client_host: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    principal: Option<String>,
}

fn parts(v: serde_json::Value) -> Parts {
    parse_assignment(v).into_iter().collect()
}

fn json(p: &Parts) -> Result<serde_json::Value> {
    serde_json::to_value(p.iter().collect::<Vec<_>>()).map_err(|e| Error::invalid(Invalid::Assignment, e))
}

/// The strategy behind a server-side assignor's name.
fn assignor(name: &str) -> Result<Strategy> {
    match name {
        "uniform" => Ok(Strategy::Sticky),
        "range" => Ok(Strategy::Range),
        other => Err(Error::invalid(
            Invalid::AssignmentStrategy,
            format!("{other:?}; the consumer group assignors are uniform and range"),
        )),
    }
}

async fn members(sql: &Statements, tx: &Transaction<'_>, group: &str) -> Result<Vec<Member>> {
    let rows = tx.query(&sql.consumer_members, &[&group]).await?;
    Ok(rows
        .iter()
        .map(|r| Member {
            id: r.get(0),
            view: MemberView {
                epoch: r.get(1),
                assigned: parts(r.get(6)),
                revoking: parts(r.get(7)),
            },
            previous_epoch: r.get(2),
            topics: r.get(3),
            regex: r.get(4),
            assignor: r.get(5),
            target: parts(r.get(8)),
            client_id: r.get(9),
            client_host: r.get(10),
            instance_id: r.get(11),
            rack_id: r.get(12),
            principal: r.get(13),
        })
        .collect())
}

/// The group's assignor: the first member's (by id) that names one, else
/// `uniform`.
fn group_assignor(members: &[Member]) -> &str {
    members.iter().find_map(|m| m.assignor.as_deref()).unwrap_or("uniform")
}

/// The topics each member subscribes to (names and regular expressions
/// resolved) and the partition count of each.
/// A subscription's regular expression, to be matched against whole topic
/// names. The syntax is RE2's, as Kafka's RE2/J: no backreferences or
/// lookaround, linear-time matching. A pattern that does not compile, or
/// whose compiled form would be too large, is refused.
pub(crate) fn full_match(re: &str) -> Result<regex::Regex> {
    if re.len() > MAX_REGEX_BYTES {
        return Err(Error::invalid(
            Invalid::SubscriptionRegex,
            format!("{} bytes; at most {MAX_REGEX_BYTES}", re.len()),
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::invalid(Invalid::SubscriptionRegex, e.to_string()))
}

/// Longest subscription pattern accepted.
const MAX_REGEX_BYTES: usize = 1024;

async fn subscriptions(
    sql: &Statements,
    tx: &Transaction<'_>,
    members: &[Member],
) -> Result<(BTreeMap<String, BTreeSet<TopicName>>, BTreeMap<TopicName, i32>)> {
    let mut by_regex: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut all: Option<Vec<String>> = None;
    for re in members.iter().filter_map(|m| m.regex.as_deref()) {
        if by_regex.contains_key(re) {
            continue;
        }
        let names = match &all {
            Some(names) => names,
            None => {
                let rows = tx.query(&sql.all_topic_names, &[]).await?;
                all.insert(rows.iter().map(|r| r.get(0)).collect())
            }
        };
        // Checked when the member subscribed; a pattern that no longer
        // compiles (a newer broker's stricter rules) matches nothing.
        let matched = full_match(re).map_or_else(
            |_| Vec::new(),
            |pattern| names.iter().filter(|n| pattern.is_match(n)).cloned().collect(),
        );
        by_regex.insert(re, matched);
    }
    // A member whose user's grants limit what it sees matches only topics
    // the user has some grant on.
    let mut grants: BTreeMap<&str, UserAcls> = BTreeMap::new();
    for user in members
        .iter()
        .filter(|m| m.regex.is_some())
        .filter_map(|m| m.principal.as_deref())
    {
        if !grants.contains_key(user) {
            let rows = tx.query(&sql.member_grants, &[&user]).await?;
            grants.insert(user, grants_of(&rows)?);
        }
    }
    let mut subs = BTreeMap::new();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for m in members {
        let mut names: Vec<String> = m.topics.clone();
        if let Some(matched) = m.regex.as_deref().and_then(|re| by_regex.get(re)) {
            let seen = m.principal.as_deref().and_then(|u| grants.get(u));
            names.extend(
                matched
                    .iter()
                    .filter(|t| seen.is_none_or(|g| g.any_on_topic(t)))
                    .cloned(),
            );
        }
        wanted.extend(names.iter().cloned());
        subs.insert(
            m.id.clone(),
            names.into_iter().filter_map(|t| TopicName::new(t).ok()).collect(),
        );
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let counts = tx.query(&sql.partition_counts, &[&wanted]).await?;
    let partitions = counts
        .iter()
        .filter_map(|r| Some((TopicName::new(r.get::<_, String>(0)).ok()?, r.get(1))))
        .collect();
    Ok((subs, partitions))
}

/// Recomputes the target assignment when `changed` is set or the
/// partitions of the subscribed topics changed, moving the group to the
/// next epoch. Returns the group epoch and the members with their targets.
async fn refresh_target(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    epoch: i32,
    stored: &serde_json::Value,
    changed: bool,
) -> Result<(i32, Vec<Member>)> {
    let mut all = members(sql, tx, group).await?;
    let (subs, partitions) = subscriptions(sql, tx, &all).await?;
    let counts: serde_json::Map<String, serde_json::Value> = partitions
        .iter()
        .map(|(t, n)| (t.to_string(), serde_json::Value::from(*n)))
        .collect();
    let counts = serde_json::Value::Object(counts);
    if !changed && &counts == stored {
        return Ok((epoch, all));
    }
    let strategy = assignor(group_assignor(&all))?;
    let states: Vec<MemberState> = all
        .iter()
        .map(|m| MemberState {
            id: m.id.clone(),
            topics: subs.get(&m.id).cloned().unwrap_or_default(),
            previous: m.target.iter().cloned().collect(),
        })
        .collect();
    let targets = assign::assign(strategy, &states, &partitions);
    let next = epoch.wrapping_add(1).max(1);
    for m in &mut all {
        m.target = targets
            .get(&m.id)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        tx.execute(&sql.set_target, &[&group, &m.id, &json(&m.target)?]).await?;
    }
    tx.execute(&sql.set_group_epoch, &[&group, &next, &counts]).await?;
    tracing::debug!(group, epoch = next, members = all.len(), "consumer group epoch bumped");
    Ok((next, all))
}

/// Locks a consumer-protocol group, removes expired members and brings
/// its target up to date. `None` when there is no such group (or it is of
/// another type and `join` is not set). With `join`, a missing group is
/// created and a group of another type without live members taken over;
/// one with live members is [`Error::InconsistentGroupProtocol`].
async fn lock_group(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    join: bool,
    mut changed: bool,
) -> Result<Option<(i32, Vec<Member>)>> {
    if join {
        tx.execute(&sql.create_consumer_group, &[&group, &CONSUMER_PROTOCOL])
            .await?;
    }
    let Some(head) = tx.query_opt(&sql.lock_consumer, &[&group]).await? else {
        return Ok(None);
    };
    let epoch: i32 = head.get(0);
    let protocol_type: String = head.get(1);
    let stored: serde_json::Value = head.get(2);
    if protocol_type != CONSUMER_PROTOCOL {
        if !join {
            return Ok(None);
        }
        let live: bool = tx.query_one(&sql.has_live_members, &[&group]).await?.get(0);
        if live {
            return Err(Error::InconsistentGroupProtocol(group.to_string()));
        }
        tx.execute(&sql.delete_members, &[&group]).await?;
        tx.execute(&sql.adopt, &[&group, &CONSUMER_PROTOCOL]).await?;
    }
    changed |= !tx.query(&sql.expire_consumer, &[&group]).await?.is_empty();
    refresh_target(sql, tx, group, epoch, &stored, changed).await.map(Some)
}

fn unknown(group: &str, member: &str) -> Error {
    Error::UnknownMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

/// Applies a heartbeat's subscription and session to the member's row:
/// a join (epoch 0) adds or restarts it, other epochs must match. True
/// when the group must move to a new epoch.
async fn apply_member(
    broker: &Broker,
    tx: &Transaction<'_>,
    req: &ConsumerHeartbeat,
    member_id: &str,
    existing: Option<&Member>,
    session_ms: i32,
) -> Result<bool> {
    let sql = &broker.inner.sql.groups;
    let group = req.group.as_str();
    let rebalance_ms = req
        .rebalance_timeout
        .map(|d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
    let names = |topics: &[TopicName]| {
        let mut v: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        v.sort();
        v.dedup();
        v
    };
    let regex = req
        .subscribed_regex
        .as_ref()
        .map(|r| (!r.is_empty()).then(|| r.clone()));

    if req.member_epoch == 0 {
        let topics = req.subscribed_topics.as_deref().map(names).unwrap_or_default();
        let regex = regex.flatten();
        if topics.is_empty() && regex.is_none() {
            return Err(Error::invalid(
                Invalid::Subscription,
                "a joining member must subscribe to topic names or a regular expression",
            ));
        }
        if let Some(instance) = &req.instance_id {
            let subscription = Subscription {
                topics: &topics,
                regex: &regex,
                session_ms,
            };
            if let Some(changed) = take_over(broker, tx, req, instance, member_id, &subscription).await? {
                return Ok(changed);
            }
        }
        tx.execute(
            &sql.join_consumer,
            &[
                &group,
                &member_id,
                &req.client_id,
                &session_ms,
                &topics,
                &req.instance_id,
                &req.client_host,
                &rebalance_ms.unwrap_or(300_000),
                &regex,
                &req.server_assignor,
                &req.rack_id,
                &req.principal,
            ],
        )
        .await?;
        return Ok(true);
    }
    let Some(m) = existing else {
        return Err(unknown(group, member_id));
    };
    let presented = req.member_epoch;
    let owned_ok = || {
        req.owned
            .as_ref()
            .is_none_or(|o| o.iter().all(|tp| m.view.assigned.contains(tp)))
    };
    if presented > m.view.epoch || (presented < m.view.epoch && !(presented == m.previous_epoch && owned_ok())) {
        return Err(Error::FencedMemberEpoch {
            group: group.to_string(),
            member: member_id.to_string(),
            presented,
            current: m.view.epoch,
        });
    }
    let topics = req.subscribed_topics.as_deref().map_or_else(|| m.topics.clone(), names);
    let regex = regex.unwrap_or_else(|| m.regex.clone());
    let assignor = req.server_assignor.clone().or_else(|| m.assignor.clone());
    let changed = topics != m.topics || regex != m.regex || assignor != m.assignor;
    tx.execute(
        &sql.update_consumer,
        &[
            &group,
            &member_id,
            &session_ms,
            &topics,
            &rebalance_ms.unwrap_or(300_000),
            &regex,
            &assignor,
            &req.principal,
        ],
    )
    .await?;
    Ok(changed)
}

/// What a joining member asks for, and the session it gets.
struct Subscription<'a> {
    topics: &'a [String],
    regex: &'a Option<String>,
    session_ms: i32,
}

/// A static member joining under a new member id: when the member that
/// holds its instance id left with [`STATIC_LEAVE_EPOCH`], the new id
/// takes its place, epoch and partitions (`Some`: whether the group must
/// move to a new epoch); when that member is still active,
/// [`Error::UnreleasedInstanceId`]. `None` when no other member holds it.
async fn take_over(
    broker: &Broker,
    tx: &Transaction<'_>,
    req: &ConsumerHeartbeat,
    instance: &str,
    member_id: &str,
    subscription: &Subscription<'_>,
) -> Result<Option<bool>> {
    let (topics, regex) = (subscription.topics, subscription.regex);
    let sql = &broker.inner.sql.groups;
    let group = req.group.as_str();
    let row = tx.query_opt(&sql.instance_holder, &[&group, &instance]).await?;
    let Some(row) = row else { return Ok(None) };
    let (holder, epoch): (String, i32) = (row.get(0), row.get(1));
    if holder == member_id {
        return Ok(None);
    }
    if epoch != STATIC_LEAVE_EPOCH {
        return Err(Error::UnreleasedInstanceId {
            group: group.to_string(),
            instance_id: instance.to_string(),
        });
    }
    tx.execute(&sql.static_return, &[&group, &holder, &member_id]).await?;
    let before: (Vec<String>, Option<String>, Option<String>) = (row.get(2), row.get(3), row.get(4));
    let assignor = req.server_assignor.clone().or(before.2.clone());
    let rebalance_ms = req
        .rebalance_timeout
        .map_or(300_000, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
    tx.execute(
        &sql.update_consumer,
        &[
            &group,
            &member_id,
            &subscription.session_ms,
            &topics,
            &rebalance_ms,
            regex,
            &assignor,
            &req.principal,
        ],
    )
    .await?;
    Ok(Some(before.0 != topics || &before.1 != regex || before.2 != assignor))
}

/// ConsumerGroupHeartbeat; see [`ConsumerGroups::heartbeat`].
pub(crate) async fn heartbeat(broker: &Broker, req: &ConsumerHeartbeat) -> Result<HeartbeatAnswer> {
    if let Some(name) = &req.server_assignor {
        assignor(name)?;
    }
    if let Some(re) = req.subscribed_regex.as_deref().filter(|r| !r.is_empty()) {
        full_match(re)?;
    }
    let sql = &broker.inner.sql.groups;
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
    // The group's own settings (`consumer.*` group configs) over the
    // broker's; read before the transaction takes its connection.
    let settings = crate::groups::share::config::settings(broker, &req.group).await?;
    let session_ms = settings
        .consumer_session_timeout
        .map_or(broker.consumer_session_ms(), |d| {
            i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
        });
    let interval = settings
        .consumer_heartbeat_interval
        .unwrap_or_else(|| broker.consumer_heartbeat_interval());
    let leaving = matches!(req.member_epoch, LEAVE_EPOCH | STATIC_LEAVE_EPOCH);
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some((epoch, all)) = lock_group(sql, &tx, group, joining, false).await? else {
        return Err(unknown(group, &member_id));
    };
    let existing = all.iter().find(|m| m.id == member_id);
    if leaving {
        if req.member_epoch == STATIC_LEAVE_EPOCH && existing.is_some_and(|m| m.instance_id.is_some()) {
            // A static member keeps its partitions for its session timeout.
            tx.execute(&sql.static_leave, &[&group, &member_id]).await?;
        } else if existing.is_some() {
            tx.execute(&sql.remove_member, &[&group, &member_id]).await?;
            let head = tx.query_one(&sql.lock_consumer, &[&group]).await?;
            refresh_target(sql, &tx, group, epoch, &head.get(2), true).await?;
        }
        tx.commit().await?;
        return Ok(HeartbeatAnswer {
            member_id,
            member_epoch: req.member_epoch,
            heartbeat_interval: interval,
            assignment: None,
        });
    }
    let changed = match apply_member(broker, &tx, req, &member_id, existing, session_ms).await {
        Ok(changed) => changed,
        Err(e) => {
            // Keep what the lock applied (expired members, a new target).
            tx.commit().await?;
            return Err(e);
        }
    };
    let head = tx.query_one(&sql.lock_consumer, &[&group]).await?;
    let (epoch, all) = refresh_target(sql, &tx, group, epoch, &head.get(2), changed).await?;
    let me = all
        .iter()
        .find(|m| m.id == member_id)
        .ok_or_else(|| unknown(group, &member_id))?;
    let held_by_others: Parts = all
        .iter()
        .filter(|m| m.id != member_id)
        .flat_map(|m| m.view.assigned.iter().chain(&m.view.revoking))
        .cloned()
        .collect();
    let reported: Option<Parts> = req.owned.as_ref().map(|o| o.iter().cloned().collect());
    let next = reconcile(&me.view, epoch, &me.target, &held_by_others, reported.as_ref());
    let moved = next != me.view;
    if moved {
        let previous = if next.epoch != me.view.epoch {
            me.view.epoch
        } else {
            me.previous_epoch
        };
        tx.execute(
            &sql.set_reconciled,
            &[
                &group,
                &member_id,
                &next.epoch,
                &previous,
                &json(&next.assigned)?,
                &json(&next.revoking)?,
            ],
        )
        .await?;
    }
    let full = joining || req.owned.is_some();
    let assignment = if moved || full {
        Some(with_ids(sql, &tx, &next.assigned).await?)
    } else {
        None
    };
    tx.commit().await?;
    Ok(HeartbeatAnswer {
        member_id,
        member_epoch: next.epoch,
        heartbeat_interval: interval,
        assignment,
    })
}

/// Partitions grouped by topic, with the topics' ids.
async fn with_ids(sql: &Statements, tx: &Transaction<'_>, parts: &Parts) -> Result<Vec<AssignedTopic>> {
    let mut by_topic: BTreeMap<&TopicName, Vec<i32>> = BTreeMap::new();
    for tp in parts {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let names: Vec<&str> = by_topic.keys().map(|t| t.as_str()).collect();
    let ids: BTreeMap<String, [u8; 16]> = tx
        .query(&sql.topic_ids, &[&names])
        .await?
        .iter()
        .map(|r| (r.get(0), uuid_bytes(r.get(1))))
        .collect();
    Ok(by_topic
        .into_iter()
        .filter_map(|(t, partitions)| {
            Some(AssignedTopic {
                topic: t.clone(),
                topic_id: *ids.get(t.as_str())?,
                partitions,
            })
        })
        .collect())
}

/// ConsumerGroupDescribe; see [`ConsumerGroups::describe`].
pub(crate) async fn describe(broker: &Broker, group: &GroupId) -> Result<ConsumerGroupDescription> {
    let sql = &broker.inner.sql.groups;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some((epoch, all)) = lock_group(sql, &tx, group.as_str(), false, false).await? else {
        return Err(Error::UnknownGroup(group.to_string()));
    };
    let mut members = Vec::with_capacity(all.len());
    let mut reconciling = false;
    for m in &all {
        reconciling |= m.view.phase(epoch, &m.target) != Phase::Stable;
        let mut owned = m.view.assigned.clone();
        owned.extend(m.view.revoking.iter().cloned());
        members.push(ConsumerMemberDescription {
            member_id: m.id.clone(),
            instance_id: m.instance_id.clone(),
            rack_id: m.rack_id.clone(),
            member_epoch: m.view.epoch,
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            subscribed_topics: m.topics.clone(),
            subscribed_regex: m.regex.clone(),
            assignment: with_ids(sql, &tx, &owned).await?,
            target: with_ids(sql, &tx, &m.target).await?,
        });
    }
    let state = match (all.is_empty(), reconciling) {
        (true, _) => "Empty",
        (false, true) => "Reconciling",
        (false, false) => "Stable",
    };
    let assignor = group_assignor(&all).to_string();
    tx.commit().await?;
    Ok(ConsumerGroupDescription {
        group: group.clone(),
        state: state.to_string(),
        group_epoch: epoch,
        assignment_epoch: epoch,
        assignor,
        members,
    })
}

/// The fence of an offset commit (or a transactional one) to a
/// consumer-protocol group, on its locked row: a member commits with its
/// id and epoch, [`Error::UnknownMember`], [`Error::FencedMemberEpoch`]
/// for a newer epoch than its own, [`Error::StaleMemberEpoch`] for an
/// older one. A commit without member (epoch < 0) is accepted only while
/// the group has no live members.
pub(crate) async fn check_commit(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    member_id: &str,
    presented: i32,
) -> Result<()> {
    if presented < 0 && member_id.is_empty() {
        let live: bool = tx.query_one(&sql.has_live_members, &[&group]).await?.get(0);
        return if live { Err(unknown(group, member_id)) } else { Ok(()) };
    }
    let row = tx.query_opt(&sql.live_member_epoch, &[&group, &member_id]).await?;
    let Some(row) = row else {
        return Err(unknown(group, member_id));
    };
    let current: i32 = row.get(0);
    let (group, member) = (group.to_string(), member_id.to_string());
    match presented.cmp(&current) {
        std::cmp::Ordering::Greater => Err(Error::FencedMemberEpoch {
            group,
            member,
            presented,
            current,
        }),
        std::cmp::Ordering::Less => Err(Error::StaleMemberEpoch {
            group,
            member,
            presented,
            current,
        }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// The fence of an OffsetFetch that names a member (version 9): for a
/// consumer-protocol group the member must be live
/// ([`Error::UnknownMember`]) and present its epoch
/// ([`Error::StaleMemberEpoch`]). Groups of other protocols, and fetches
/// that name no member, are not fenced.
pub(crate) async fn check_fetch(broker: &Broker, group: &GroupId, member_id: &str, presented: i32) -> Result<()> {
    if presented < 0 && member_id.is_empty() {
        return Ok(());
    }
    let client = broker.client().await?;
    let row = client
        .query_opt(&broker.inner.sql.groups.fetch_fence, &[&group.as_str(), &member_id])
        .await?;
    let Some(row) = row else { return Ok(()) };
    if row.get::<_, String>(0) != CONSUMER_PROTOCOL {
        return Ok(());
    }
    match row.get::<_, Option<i32>>(1) {
        None => Err(unknown(group.as_str(), member_id)),
        Some(current) if current != presented => Err(Error::StaleMemberEpoch {
            group: group.to_string(),
            member: member_id.to_string(),
            presented,
            current,
        }),
        Some(_) => Ok(()),
    }
}

/// Topic names by id; ids of topics that do not exist are left out.
pub(crate) async fn topic_names(broker: &Broker, ids: &[[u8; 16]]) -> Result<BTreeMap<[u8; 16], TopicName>> {
    let client = broker.client().await?;
    let ids: Vec<&[u8]> = ids.iter().map(|i| i.as_slice()).collect();
    let rows = client.query(&broker.inner.sql.groups.topic_names, &[&ids]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((uuid_bytes(r.get(0)), TopicName::new(r.get::<_, String>(1)).ok()?)))
        .collect())
}
