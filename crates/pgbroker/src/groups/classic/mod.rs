//! Kafka's "classic" consumer-group protocol: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup, with the assignment computed by the group's
//! leader (a client) and carried as opaque bytes.
//!
//! As for the library's own groups, all state lives in the `groups` and
//! `group_members` rows, so several brokers can serve one group. Each call
//! is a short transaction that locks the group's row; a call that has to
//! wait (a join until the rebalance completes, a follower's sync until the
//! leader's assignment arrives) polls the rows every `POLL_INTERVAL`
//! without holding a lock or a connection in between. Timers are replaced
//! by deadlines stored in the rows: whichever call notices that a session
//! expired or a rebalance deadline passed applies it (see `state::tick`).
//!
//! States follow Kafka's GroupCoordinator: `Empty`, `PreparingRebalance`
//! (members are (re)joining), `CompletingRebalance` (the generation is
//! fixed, waiting for the leader's SyncGroup) and `Stable`.

mod api;
pub(crate) mod assignment;
mod join;
pub(crate) mod offsets;
mod state;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Transaction;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::groups::statements::Statements;
use crate::types::GroupId;
use state::{Group, State};

pub use api::ClassicGroups;
pub use offsets::{ClassicGroupDescription, ClassicMemberDescription, GroupListing};

/// How often a waiting join or sync looks at the group's rows.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicJoinRequest {
    /// The group.
    pub group: GroupId,
    /// The id from an earlier join, or `""` for a new member.
    pub member_id: String,
    /// Kafka's `group.instance.id` for a static member.
    pub group_instance_id: Option<String>,
    /// The client's id, which prefixes new dynamic member ids.
    pub client_id: String,
    /// The client's address, shown by DescribeGroups.
    pub client_host: String,
    /// The member is removed when it has not been heard from for this long.
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin (JoinGroup v0
    /// has none: pass the session timeout; zero means the same).
    pub rebalance_timeout: Duration,
    /// The protocol type, usually `consumer`; all members must agree.
    pub protocol_type: String,
    /// The member's protocols (assignors) with their metadata, in order of
    /// preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// JoinGroup v4 and later: a new member first gets its id through
    /// [`Error::MemberIdRequired`] and joins again with it.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its join response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassicJoinMember {
    /// Member id.
    pub member_id: String,
    /// Its `group.instance.id`, for a static member.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// The outcome of a join: the new generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassicJoinResponse {
    /// The generation this member joined.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol (assignor) chosen for the generation.
    pub protocol_name: String,
    /// The leader's member id; the leader computes the assignment.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with its metadata, for the leader only (empty for the
    /// others).
    pub members: Vec<ClassicJoinMember>,
}

/// Locks a classic group and applies what time has decided; `None` when
/// the group does not exist or is one of the library's own groups.
async fn lock_classic(sql: &Statements, tx: &Transaction<'_>, group: &GroupId) -> Result<Option<Group>> {
    let Some(mut g) = state::lock(sql, tx, group.as_str()).await? else {
        return Ok(None);
    };
    if !g.is_classic() {
        return Ok(None);
    }
    state::tick(sql, tx, &mut g).await?;
    Ok(Some(g))
}

enum SyncStep {
    Done(Vec<u8>),
    /// A follower waits for the leader, at most this many milliseconds.
    Wait(i32),
}

/// SyncGroup. The leader's call (in `CompletingRebalance`, current
/// generation) stores every member's assignment (members it leaves out
/// get empty bytes) and makes the group `Stable`; other members wait,
/// up to their rebalance timeout, until it is. Returns this member's
/// assignment. Fails with [`Error::UnknownMember`],
/// [`Error::FencedInstanceId`], [`Error::IllegalGeneration`] or, when a
/// new rebalance started (or the leader did not sync in time, which
/// starts one), [`Error::RebalanceInProgress`].
pub(crate) async fn classic_sync(
    broker: &Broker,
    group: &GroupId,
    member_id: &str,
    generation: i32,
    group_instance_id: Option<&str>,
    assignments: Vec<(String, Vec<u8>)>,
) -> Result<Vec<u8>> {
    let wait_ms = {
        let mut client = broker.client().await?;
        let tx = client.transaction().await?;
        let Some(mut g) = lock_classic(&broker.inner.sql.groups, &tx, group).await? else {
            return Err(state::unknown(group.as_str(), member_id));
        };
        let step = sync_locked(
            &broker.inner.sql.groups,
            &tx,
            &mut g,
            member_id,
            generation,
            group_instance_id,
            assignments,
        )
        .await;
        tx.commit().await?;
        match step? {
            SyncStep::Done(bytes) => return Ok(bytes),
            SyncStep::Wait(ms) => ms,
        }
    };
    let until = Instant::now() + Duration::from_millis(u64::try_from(wait_ms.max(0)).unwrap_or(0));
    let unknown = || state::unknown(group.as_str(), member_id);
    let rebalancing = |current| Error::RebalanceInProgress {
        group: group.to_string(),
        presented: generation,
        current,
    };
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let client = broker.client().await?;
        let row = client
            .query_opt(&broker.inner.sql.groups.sync_probe, &[&group.as_str(), &member_id])
            .await?;
        drop(client);
        let Some(row) = row else { return Err(unknown()) };
        let (st, current, alive): (String, i32, bool) = (row.get(0), row.get(1), row.get(2));
        if !alive || st == State::Empty.as_str() {
            return Err(unknown());
        }
        if current != generation || st == State::Preparing.as_str() {
            return Err(rebalancing(current));
        }
        if st == State::Stable.as_str() {
            return Ok(row.get::<_, Option<Vec<u8>>>(3).unwrap_or_default());
        }
        // CompletingRebalance: still waiting for the leader.
        let late = Instant::now() >= until;
        if late || row.get::<_, bool>(4) {
            classic_tick(broker, group, late.then_some(generation)).await?;
        }
        if late {
            return Err(rebalancing(current));
        }
    }
}

/// Heartbeat. Refreshes the member's session; fails with
/// [`Error::RebalanceInProgress`] while the group is rebalancing (the
/// member should rejoin), and with [`Error::UnknownMember`],
/// [`Error::FencedInstanceId`] or [`Error::IllegalGeneration`] as
/// Kafka does. Also applies expired sessions and due rebalances.
pub(crate) async fn classic_heartbeat(
    broker: &Broker,
    group: &GroupId,
    member_id: &str,
    generation: i32,
    group_instance_id: Option<&str>,
) -> Result<()> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some(g) = lock_classic(&broker.inner.sql.groups, &tx, group).await? else {
        return Err(state::unknown(group.as_str(), member_id));
    };
    let verdict = async {
        state::current_member(&broker.inner.sql.groups, &tx, &g.name, member_id, group_instance_id).await?;
        if g.state == State::Empty {
            return Err(state::unknown(&g.name, member_id));
        }
        if generation != g.generation {
            return Err(state::illegal_generation(&g, generation));
        }
        state::touch(&broker.inner.sql.groups, &tx, &g.name, member_id).await?;
        if g.state == State::Preparing {
            return Err(state::rebalancing(&g, generation));
        }
        Ok(())
    }
    .await;
    tx.commit().await?;
    verdict
}

/// LeaveGroup for one or more members, each given by member id or, for
/// a static member, by `group.instance.id` (the member id may then be
/// empty). Returns one result per member, in order:
/// [`Error::UnknownMember`] or [`Error::FencedInstanceId`] for those
/// that could not leave. The remaining members rebalance; when none
/// remain the group becomes `Empty`, keeping its generation and offsets.
pub(crate) async fn classic_leave(
    broker: &Broker,
    group: &GroupId,
    members: &[(String, Option<String>)],
) -> Result<Vec<Result<()>>> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let Some(mut g) = lock_classic(&broker.inner.sql.groups, &tx, group).await? else {
        return Ok(members
            .iter()
            .map(|(id, instance)| Err(state::unknown(group.as_str(), leaver(id, instance.as_deref()))))
            .collect());
    };
    let mut results = Vec::with_capacity(members.len());
    let mut removed = false;
    for (id, instance) in members {
        match leave_one(&broker.inner.sql.groups, &tx, &g.name, id, instance.as_deref()).await {
            Ok(live) => {
                removed |= live;
                results.push(Ok(()));
            }
            Err(e @ (Error::UnknownMember { .. } | Error::FencedInstanceId { .. })) => results.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    if removed && matches!(g.state, State::Stable | State::Completing) {
        state::prepare(&broker.inner.sql.groups, &tx, &mut g, 0).await?;
    }
    state::maybe_complete(&broker.inner.sql.groups, &tx, &mut g).await?;
    tx.commit().await?;
    Ok(results)
}

/// Applies expired sessions and due rebalances of a classic group. With
/// `stalled`, also starts a new rebalance if the group is still waiting
/// for the leader's assignment of that generation.
async fn classic_tick(broker: &Broker, group: &GroupId, stalled: Option<i32>) -> Result<()> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    if let Some(mut g) = lock_classic(&broker.inner.sql.groups, &tx, group).await? {
        if g.state == State::Completing && stalled == Some(g.generation) {
            tracing::debug!(group = %group, generation = g.generation, "leader did not sync in time");
            state::prepare(&broker.inner.sql.groups, &tx, &mut g, 0).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

fn leaver<'a>(id: &'a str, instance: Option<&'a str>) -> &'a str {
    match instance {
        Some(i) if id.is_empty() => i,
        _ => id,
    }
}

/// Removes one member; true when it was a joined (not pending) member.
async fn leave_one(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    id: &str,
    instance: Option<&str>,
) -> Result<bool> {
    let target = match instance {
        Some(instance) => match state::instance_owner(sql, tx, group, instance).await? {
            None => return Err(state::unknown(group, leaver(id, Some(instance)))),
            Some(owner) if !id.is_empty() && owner != id => return Err(state::fenced(group, instance)),
            Some(owner) => owner,
        },
        None => id.to_string(),
    };
    let row = tx.query_opt(&sql.leave_one, &[&group, &target]).await?;
    match row {
        Some(r) => Ok(!r.get::<_, bool>(0)),
        None => Err(state::unknown(group, &target)),
    }
}

async fn sync_locked(
    sql: &Statements,
    tx: &Transaction<'_>,
    g: &mut Group,
    member_id: &str,
    generation: i32,
    instance: Option<&str>,
    assignments: Vec<(String, Vec<u8>)>,
) -> Result<SyncStep> {
    let m = state::current_member(sql, tx, &g.name, member_id, instance).await?;
    if generation != g.generation {
        return Err(state::illegal_generation(g, generation));
    }
    match g.state {
        State::Empty => return Err(state::unknown(&g.name, member_id)),
        State::Preparing => return Err(state::rebalancing(g, generation)),
        State::Stable => {
            state::touch(sql, tx, &g.name, member_id).await?;
            return Ok(SyncStep::Done(m.assignment));
        }
        State::Completing => state::touch(sql, tx, &g.name, member_id).await?,
    }
    if g.leader.as_deref() != Some(member_id) {
        return Ok(SyncStep::Wait(m.rebalance_timeout_ms));
    }
    // Later entries for the same member win; unknown ids are ignored.
    let by_member: BTreeMap<String, Vec<u8>> = assignments.into_iter().collect();
    let ids: Vec<&str> = by_member.keys().map(String::as_str).collect();
    let bytes: Vec<&[u8]> = by_member.values().map(Vec::as_slice).collect();
    tx.execute(&sql.set_assignments, &[&g.name, &ids, &bytes]).await?;
    tx.execute(&sql.mark_stable, &[&g.name]).await?;
    g.state = State::Stable;
    tracing::debug!(group = %g.name, generation, "classic group stable");
    Ok(SyncStep::Done(by_member.get(member_id).cloned().unwrap_or_default()))
}
