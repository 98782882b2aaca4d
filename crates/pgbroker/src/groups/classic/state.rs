//! The classic group state machine, as statements on a group whose row the
//! caller's transaction has locked. Every public call of the protocol runs
//! [`tick`] first: it applies whatever time has decided since the last call
//! (expired sessions, a passed rebalance deadline), so that no broker needs
//! timers of its own and any broker's call moves a group on.

use tokio_postgres::Transaction;

use super::super::consumer::CONSUMER_PROTOCOL;
use super::super::{Strategy, LIBRARY_PROTOCOL};
use crate::error::{Error, Result};
use crate::groups::statements::Statements;

/// Where a group is in Kafka's classic protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// No members (offsets may be stored).
    Empty,
    /// Waiting for members to (re)join.
    Preparing,
    /// Generation chosen; waiting for the leader's assignment.
    Completing,
    /// Assignment delivered.
    Stable,
}

impl State {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::Preparing => "PreparingRebalance",
            State::Completing => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "PreparingRebalance" => State::Preparing,
            "CompletingRebalance" => State::Completing,
            "Stable" => State::Stable,
            _ => State::Empty,
        }
    }
}

/// A locked group row.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub name: String,
    pub generation: i32,
    pub protocol_type: String,
    pub state: State,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
}

impl Group {
    /// False for the library's own (server-assigned) groups and for
    /// consumer-protocol groups, which this state machine leaves alone.
    pub(super) fn is_classic(&self) -> bool {
        self.protocol_type != LIBRARY_PROTOCOL && !self.is_consumer_protocol()
    }

    /// True for a group of Kafka's consumer protocol (KIP-848).
    pub(super) fn is_consumer_protocol(&self) -> bool {
        self.protocol_type == CONSUMER_PROTOCOL
    }
}

/// A member row.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub pending: bool,
    pub joined: bool,
    pub generation: i32,
    pub protocol_names: Vec<String>,
    pub protocol_metadata: Vec<Vec<u8>>,
    pub rebalance_timeout_ms: i32,
    pub assignment: Vec<u8>,
}

/// Locks the group's row.
pub(super) async fn lock(sql: &Statements, tx: &Transaction<'_>, group: &str) -> Result<Option<Group>> {
    let row = tx.query_opt(&sql.lock_classic, &[&group]).await?;
    Ok(row.map(|r| Group {
        name: group.to_string(),
        generation: r.get(0),
        protocol_type: r.get(1),
        state: State::parse(r.get(2)),
        protocol_name: r.get(3),
        leader: r.get(4),
    }))
}

/// Locks the group's row, creating an empty group without protocol type
/// first if there is none.
pub(super) async fn lock_or_create(sql: &Statements, tx: &Transaction<'_>, group: &str) -> Result<Group> {
    tx.execute(&sql.create_classic_group, &[&group, &Strategy::default().as_str()])
        .await?;
    lock(sql, tx, group)
        .await?
        .ok_or_else(|| Error::Busy(format!("group {group:?} was deleted concurrently")))
}

/// Applies what time has decided: removes members whose session expired
/// (a removal from a Stable or CompletingRebalance group starts a
/// rebalance) and completes a rebalance that is due.
pub(super) async fn tick(sql: &Statements, tx: &Transaction<'_>, g: &mut Group) -> Result<()> {
    if !g.is_classic() {
        return Ok(());
    }
    let expired = tx.query(&sql.expire_classic, &[&g.name]).await?;
    if expired.iter().any(|r| !r.get::<_, bool>(0)) {
        tracing::debug!(group = %g.name, removed = expired.len(), "classic group members expired");
        if matches!(g.state, State::Stable | State::Completing) {
            prepare(sql, tx, g, 0).await?;
        }
    }
    maybe_complete(sql, tx, g).await
}

/// Starts a rebalance unless one is under way. The deadline is now plus
/// the largest rebalance timeout of the members; a group that was empty
/// also waits `delay_ms` first.
pub(super) async fn prepare(sql: &Statements, tx: &Transaction<'_>, g: &mut Group, delay_ms: i64) -> Result<()> {
    if g.state == State::Preparing {
        return Ok(());
    }
    let delay: Option<i64> = (g.state == State::Empty && delay_ms > 0).then_some(delay_ms);
    tx.execute(&sql.prepare, &[&g.name, &delay]).await?;
    tracing::debug!(group = %g.name, from = g.state.as_str(), "classic group rebalancing");
    g.state = State::Preparing;
    Ok(())
}

/// A new member joined during the initial delay: wait a little longer for
/// others (Kafka's InitialDelayedJoin), never past the deadline.
pub(super) async fn extend_delay(sql: &Statements, tx: &Transaction<'_>, g: &Group, delay_ms: i64) -> Result<()> {
    tx.execute(&sql.extend_delay, &[&g.name, &delay_ms]).await?;
    Ok(())
}

/// Completes the join phase when it is due: after the initial delay, once
/// every member has rejoined and no new member is pending, or at the
/// deadline.
pub(super) async fn maybe_complete(sql: &Statements, tx: &Transaction<'_>, g: &mut Group) -> Result<()> {
    if g.state != State::Preparing {
        return Ok(());
    }
    let due: bool = tx.query_one(&sql.maybe_complete, &[&g.name]).await?.get(0);
    if due {
        complete(sql, tx, g).await?;
    }
    Ok(())
}

/// Ends the join phase: dynamic members that did not rejoin are removed
/// (static ones stay until their session expires, as in Kafka), the
/// generation is bumped, and leader and protocol are chosen.
async fn complete(sql: &Statements, tx: &Transaction<'_>, g: &mut Group) -> Result<()> {
    tx.execute(&sql.remove_unjoined, &[&g.name]).await?;
    let rows = tx.query(&sql.joined_members, &[&g.name]).await?;
    if rows.is_empty() {
        tx.execute(&sql.reset_to_empty, &[&g.name]).await?;
        g.state = State::Empty;
        g.protocol_name = None;
        g.leader = None;
        return Ok(());
    }
    let joined: Vec<String> = rows.iter().filter(|r| r.get(1)).map(|r| r.get(0)).collect();
    let Some(first) = joined.first() else {
        // Only static members that have not rejoined: wait another round
        // for them (or for their sessions to expire).
        tx.execute(&sql.extend_deadline, &[&g.name]).await?;
        return Ok(());
    };
    let leader = match &g.leader {
        Some(l) if joined.contains(l) => l.clone(),
        _ => first.clone(),
    };
    let protocols: Vec<Vec<String>> = rows.iter().map(|r| r.get(2)).collect();
    // Every join checked its protocols against the other members', so a
    // common one exists; the fallback only guards against the impossible.
    let protocol = select_protocol(&protocols)
        .or_else(|| protocols.first().and_then(|p| p.first().cloned()))
        .unwrap_or_default();
    let next = g.generation.wrapping_add(1).max(1);
    tx.execute(&sql.start_member_generation, &[&g.name, &next]).await?;
    tx.execute(&sql.start_generation, &[&g.name, &next, &protocol, &leader])
        .await?;
    tracing::debug!(group = %g.name, generation = next, members = rows.len(), %leader, %protocol,
        "classic group joined");
    g.generation = next;
    g.state = State::Completing;
    g.protocol_name = Some(protocol);
    g.leader = Some(leader);
    Ok(())
}

/// Kafka's choice: among the protocols every member supports, each member
/// votes for the first in its own order of preference; most votes wins,
/// ties go to the earliest in the first member's order.
pub(super) fn select_protocol(members: &[Vec<String>]) -> Option<String> {
    let first = members.first()?;
    let candidates: Vec<&String> = first.iter().filter(|p| members.iter().all(|m| m.contains(p))).collect();
    let mut votes = vec![0usize; candidates.len()];
    for m in members {
        if let Some(i) = m.iter().find_map(|p| candidates.iter().position(|c| *c == p)) {
            votes[i] += 1;
        }
    }
    let mut best: Option<usize> = None;
    for (i, v) in votes.iter().enumerate() {
        if best.is_none_or(|b| *v > votes[b]) {
            best = Some(i);
        }
    }
    best.map(|i| candidates[i].clone())
}

/// Reads a member's row.
pub(super) async fn member(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    member_id: &str,
) -> Result<Option<Member>> {
    let row = tx.query_opt(&sql.member, &[&group, &member_id]).await?;
    Ok(row.map(|r| Member {
        pending: r.get(0),
        joined: r.get(1),
        generation: r.get(2),
        protocol_names: r.get(3),
        protocol_metadata: r.get(4),
        rebalance_timeout_ms: r.get(5),
        assignment: r.get(6),
    }))
}

/// The member id a static member's instance id is registered to.
pub(super) async fn instance_owner(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    instance: &str,
) -> Result<Option<String>> {
    let row = tx.query_opt(&sql.instance_owner, &[&group, &instance]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// Kafka's validateCurrentMember: a static member whose instance id is
/// registered to another member id is fenced; a member id that is not a
/// (joined, not pending) member is unknown.
pub(super) async fn current_member(
    sql: &Statements,
    tx: &Transaction<'_>,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
) -> Result<Member> {
    if let Some(instance) = instance {
        if instance_owner(sql, tx, group, instance)
            .await?
            .is_some_and(|owner| owner != member_id)
        {
            return Err(fenced(group, instance));
        }
    }
    match member(sql, tx, group, member_id).await? {
        Some(m) if !m.pending => Ok(m),
        _ => Err(unknown(group, member_id)),
    }
}

/// Members that are neither pending nor expired. (Classic groups have no
/// expired members after [`tick`]; the library's groups keep them until
/// their own coordinator removes them.)
pub(super) async fn live_count(sql: &Statements, tx: &Transaction<'_>, group: &str) -> Result<i64> {
    Ok(tx.query_one(&sql.live_count, &[&group]).await?.get(0))
}

/// Refreshes a member's session.
pub(super) async fn touch(sql: &Statements, tx: &Transaction<'_>, group: &str, member_id: &str) -> Result<()> {
    tx.execute(&sql.touch, &[&group, &member_id]).await?;
    Ok(())
}

pub(super) fn unknown(group: &str, member: &str) -> Error {
    Error::UnknownMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

pub(super) fn fenced(group: &str, instance: &str) -> Error {
    Error::FencedInstanceId {
        group: group.to_string(),
        instance_id: instance.to_string(),
    }
}

pub(super) fn illegal_generation(g: &Group, presented: i32) -> Error {
    Error::IllegalGeneration {
        group: g.name.clone(),
        presented,
        current: g.generation,
    }
}

pub(super) fn rebalancing(g: &Group, presented: i32) -> Error {
    Error::RebalanceInProgress {
        group: g.name.clone(),
        presented,
        current: g.generation,
    }
}

#[cfg(test)]
mod tests {
    use super::select_protocol;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn votes_pick_the_most_preferred_common_protocol() {
        assert_eq!(select_protocol(&[]), None);
        assert_eq!(select_protocol(&[v(&["a", "b"])]).as_deref(), Some("a"));
        assert_eq!(
            select_protocol(&[v(&["range", "sticky"]), v(&["sticky", "range"]), v(&["sticky"])]).as_deref(),
            Some("sticky")
        );
        assert_eq!(
            select_protocol(&[v(&["x", "range", "rr"]), v(&["rr", "range"]), v(&["range", "rr"])]).as_deref(),
            Some("range"),
            "x is not common; range has two votes"
        );
        assert_eq!(
            select_protocol(&[v(&["range", "rr"]), v(&["rr", "range"])]).as_deref(),
            Some("range"),
            "a tie goes to the first member's order"
        );
        assert_eq!(select_protocol(&[v(&["a"]), v(&["b"])]), None);
    }
}
