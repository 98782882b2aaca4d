//! JoinGroup: admission of a member to the next generation, and the wait
//! for that generation to be formed.

use std::time::{Duration, Instant};

use rand::Rng;
use tokio_postgres::Transaction;

use super::super::{session_ms, LIBRARY_PROTOCOL};
use super::state::{self, Group, State};
use super::{lock_classic, ClassicJoinMember, ClassicJoinRequest, ClassicJoinResponse, POLL_INTERVAL};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::groups::statements::Statements;

/// A validated join request.
struct Join<'a> {
    req: &'a ClassicJoinRequest,
    session_ms: i32,
    rebalance_ms: i32,
    names: Vec<String>,
    metadata: Vec<Vec<u8>>,
    delay_ms: i64,
}

impl<'a> Join<'a> {
    fn new(req: &'a ClassicJoinRequest, delay_ms: i64) -> Result<Join<'a>> {
        let session_ms = session_ms(req.session_timeout)?;
        let rebalance_ms = match i32::try_from(req.rebalance_timeout.as_millis()).unwrap_or(i32::MAX) {
            0 => session_ms,
            ms => ms,
        };
        let inconsistent = || Error::InconsistentGroupProtocol(req.group.to_string());
        if req.protocol_type.is_empty() || req.protocol_type == LIBRARY_PROTOCOL || req.protocols.is_empty() {
            return Err(inconsistent());
        }
        let mut names = Vec::with_capacity(req.protocols.len());
        let mut metadata = Vec::with_capacity(req.protocols.len());
        for (name, meta) in &req.protocols {
            if !names.contains(name) {
                names.push(name.clone());
                metadata.push(meta.clone());
            }
        }
        Ok(Join {
            req,
            session_ms,
            rebalance_ms,
            names,
            metadata,
            delay_ms,
        })
    }
}

enum Step {
    Done(ClassicJoinResponse),
    Wait(String),
}

impl Broker {
    /// JoinGroup. Admits the member to the next generation (starting a
    /// rebalance if none is under way) and waits until that generation is
    /// formed: when every member has rejoined and no new member is pending,
    /// or at the rebalance deadline (the largest rebalance timeout of the
    /// members). Members that did not rejoin by then are removed. Returns
    /// the generation, the chosen protocol and the leader; the leader also
    /// gets every member's metadata, to compute the assignment it sends
    /// with [`Broker::classic_sync`].
    ///
    /// A follower rejoining a `Stable` group with unchanged protocols (or
    /// any member repeating its join during `CompletingRebalance`) gets the
    /// current generation back without a rebalance, as in Kafka.
    ///
    /// Errors: [`Error::MemberIdRequired`] for a new dynamic member when
    /// `require_known_member_id` is set; [`Error::UnknownMember`] for an
    /// unknown member id or a member removed while waiting;
    /// [`Error::FencedInstanceId`]; [`Error::InconsistentGroupProtocol`] when
    /// the protocol type differs from the group's (while it has members),
    /// is empty or `pgbroker` (reserved for the library's own groups), no
    /// protocols are given, or none is supported by all other members;
    /// [`Error::Invalid`] for a session timeout outside 100 ms to 1 h; and
    /// [`Error::RebalanceInProgress`] if no generation was formed within
    /// twice the rebalance timeout plus 5 s (join again).
    pub async fn classic_join(&self, req: &ClassicJoinRequest) -> Result<ClassicJoinResponse> {
        let join = Join::new(req, self.group_initial_delay_ms())?;
        let member_id = {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut g = state::lock_or_create(&self.inner.sql.groups, &tx, req.group.as_str()).await?;
            state::tick(&self.inner.sql.groups, &tx, &mut g).await?;
            let step = join_locked(&self.inner.sql.groups, &tx, &mut g, &join).await;
            tx.commit().await?;
            match step? {
                Step::Done(r) => return Ok(r),
                Step::Wait(id) => id,
            }
        };
        let rebalance = Duration::from_millis(u64::try_from(join.rebalance_ms).unwrap_or(0));
        let give_up = Instant::now() + rebalance.saturating_mul(2) + Duration::from_secs(5);
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let late = Instant::now() >= give_up;
            if !late && !self.join_probe(req, &member_id).await? {
                continue;
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(mut g) = lock_classic(&self.inner.sql.groups, &tx, &req.group).await? else {
                return Err(state::unknown(req.group.as_str(), &member_id));
            };
            let seen = observe(&self.inner.sql.groups, &tx, &mut g, &member_id, &join).await;
            tx.commit().await?;
            if let Some(r) = seen? {
                return Ok(r);
            }
            if late {
                return Err(state::rebalancing(&g, -1));
            }
        }
    }

    /// One look at the group without locking it, refreshing the waiting
    /// member's session: true when a locked look may find something to do
    /// (the rebalance completed or is due, a session expired, or this
    /// member is gone).
    async fn join_probe(&self, req: &ClassicJoinRequest, member_id: &str) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt(&self.inner.sql.groups.join_probe, &[&req.group.as_str(), &member_id])
            .await?;
        Ok(row.is_none_or(|r| r.get(0)))
    }
}

fn new_member_id(prefix: &str) -> String {
    let n: u128 = rand::thread_rng().gen();
    let h = format!("{n:032x}");
    format!(
        "{prefix}-{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The join itself, on the locked group.
async fn join_locked(sql: &Statements, tx: &Transaction<'_>, g: &mut Group, j: &Join<'_>) -> Result<Step> {
    let req = j.req;
    let group = g.name.clone();
    let inconsistent = || Error::InconsistentGroupProtocol(group.clone());
    if g.protocol_type != req.protocol_type {
        if state::live_count(sql, tx, &group).await? > 0 {
            return Err(inconsistent());
        }
        // Nobody uses the group: it becomes a group of this protocol type.
        tx.execute(&sql.delete_joined_members, &[&group]).await?;
        tx.execute(&sql.adopt_classic, &[&group, &req.protocol_type]).await?;
        g.protocol_type = req.protocol_type.clone();
        g.state = State::Empty;
        g.protocol_name = None;
        g.leader = None;
    }
    let others: Vec<Vec<String>> = tx
        .query(&sql.other_protocols, &[&group, &req.member_id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !j.names.iter().any(|n| others.iter().all(|o| o.contains(n))) {
        return Err(inconsistent());
    }
    let instance = req.group_instance_id.as_deref();
    if req.member_id.is_empty() {
        if let Some(instance) = instance {
            // A static member needs no MEMBER_ID_REQUIRED round; a new
            // instance of a known static member replaces the old one, whose
            // id is fenced from now on.
            let id = new_member_id(instance);
            match state::instance_owner(sql, tx, &group, instance).await? {
                Some(old) => {
                    tx.execute(&sql.rename_member, &[&group, &old, &id]).await?;
                    update_member(sql, tx, &group, &id, j).await?;
                    if g.leader.as_deref() == Some(old.as_str()) {
                        tx.execute(&sql.set_leader, &[&group, &id]).await?;
                        g.leader = Some(id.clone());
                    }
                    return admit(sql, tx, g, j, id, false).await;
                }
                None => {
                    insert_member(sql, tx, &group, &id, j, false).await?;
                    return admit(sql, tx, g, j, id, true).await;
                }
            }
        }
        let id = new_member_id(&req.client_id);
        if req.require_known_member_id {
            insert_member(sql, tx, &group, &id, j, true).await?;
            return Err(Error::MemberIdRequired { member_id: id });
        }
        insert_member(sql, tx, &group, &id, j, false).await?;
        return admit(sql, tx, g, j, id, true).await;
    }
    let id = req.member_id.clone();
    if let Some(instance) = instance {
        if state::instance_owner(sql, tx, &group, instance)
            .await?
            .is_some_and(|owner| owner != id)
        {
            return Err(state::fenced(&group, instance));
        }
    }
    let m = state::member(sql, tx, &group, &id)
        .await?
        .ok_or_else(|| state::unknown(&group, &id))?;
    if m.pending {
        update_member(sql, tx, &group, &id, j).await?;
        return admit(sql, tx, g, j, id, true).await;
    }
    let unchanged = m.protocol_names == j.names && m.protocol_metadata == j.metadata;
    let current = m.generation == g.generation;
    let leader = g.leader.as_deref() == Some(id.as_str());
    match g.state {
        State::Empty => Err(state::unknown(&group, &id)),
        State::Completing | State::Stable if unchanged && current && !(g.state == State::Stable && leader) => {
            state::touch(sql, tx, &group, &id).await?;
            Ok(Step::Done(response(sql, tx, g, &id).await?))
        }
        _ => {
            update_member(sql, tx, &group, &id, j).await?;
            admit(sql, tx, g, j, id, false).await
        }
    }
}

async fn insert_member(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    id: &str,
    j: &Join<'_>,
    pending: bool,
) -> Result<()> {
    let r = j.req;
    tx.execute(
        &sql.insert_member,
        &[
            &group,
            &id,
            &r.client_id,
            &j.session_ms,
            &r.group_instance_id,
            &r.client_host,
            &j.names,
            &j.metadata,
            &j.rebalance_ms,
            &pending,
        ],
    )
    .await?;
    Ok(())
}

/// Stores a (re)joining member's settings and protocols and marks it as
/// joined to the rebalance.
async fn update_member(sql: &Statements, tx: &Transaction<'_>, group: &str, id: &str, j: &Join<'_>) -> Result<()> {
    let r = j.req;
    tx.execute(
        &sql.update_member,
        &[
            &group,
            &id,
            &r.client_id,
            &j.session_ms,
            &r.client_host,
            &j.names,
            &j.metadata,
            &j.rebalance_ms,
        ],
    )
    .await?;
    Ok(())
}

/// After a member was marked as joined: starts the rebalance if needed and
/// completes it if that was the last member it waited for.
async fn admit(
    sql: &Statements,
    tx: &Transaction<'_>,
    g: &mut Group,
    j: &Join<'_>,
    id: String,
    new: bool,
) -> Result<Step> {
    if g.state == State::Preparing {
        if new && j.delay_ms > 0 {
            state::extend_delay(sql, tx, g, j.delay_ms).await?;
        }
    } else {
        state::prepare(sql, tx, g, j.delay_ms).await?;
    }
    state::maybe_complete(sql, tx, g).await?;
    Ok(match observe(sql, tx, g, &id, j).await? {
        Some(r) => Step::Done(r),
        None => Step::Wait(id),
    })
}

/// Where a waiting joiner stands: its result once the generation it joined
/// is formed, `None` while it is not. If a newer rebalance began before it
/// saw its result, it takes part in that one.
async fn observe(
    sql: &Statements,
    tx: &Transaction<'_>,
    g: &mut Group,
    id: &str,
    j: &Join<'_>,
) -> Result<Option<ClassicJoinResponse>> {
    let Some(m) = state::member(sql, tx, &g.name, id).await? else {
        if let Some(instance) = j.req.group_instance_id.as_deref() {
            if state::instance_owner(sql, tx, &g.name, instance).await?.is_some() {
                return Err(state::fenced(&g.name, instance));
            }
        }
        return Err(state::unknown(&g.name, id));
    };
    if m.pending {
        return Err(state::unknown(&g.name, id));
    }
    if m.joined {
        return Ok(None);
    }
    if matches!(g.state, State::Completing | State::Stable) && m.generation == g.generation {
        return Ok(Some(response(sql, tx, g, id).await?));
    }
    tx.execute(&sql.observe, &[&g.name, &id]).await?;
    state::prepare(sql, tx, g, j.delay_ms).await?;
    state::maybe_complete(sql, tx, g).await?;
    Ok(None)
}

/// The join response for the current generation.
async fn response(sql: &Statements, tx: &Transaction<'_>, g: &Group, id: &str) -> Result<ClassicJoinResponse> {
    let protocol_name = g.protocol_name.clone().unwrap_or_default();
    let leader = g.leader.clone().unwrap_or_default();
    let members = if leader == id {
        tx.query(&sql.response, &[&g.name, &protocol_name])
            .await?
            .iter()
            .map(|r| ClassicJoinMember {
                member_id: r.get(0),
                group_instance_id: r.get(1),
                metadata: r.get(2),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(ClassicJoinResponse {
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol_name,
        leader,
        member_id: id.to_string(),
        members,
    })
}
