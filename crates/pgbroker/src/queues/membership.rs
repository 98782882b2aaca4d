//! Changes of membership, in one transaction each: acknowledging a FIFO
//! group's message, dead-lettering, purging, redriving and removing
//! messages past their SQS retention period.
//!
//! The invariant: each (queue, group) row in `queue_groups` counts its
//! group's live messages, and a group with any has exactly one head. Every
//! change locks the group rows it touches (an upsert of the size deltas,
//! in key order) after changing the messages, then, in a new statement
//! and so a new snapshot, makes the oldest remaining message the head of
//! each group left without one. A send to the group holds the same row
//! lock until it commits, so the new snapshot sees every earlier send, and
//! later sends see the new size.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use super::settle::{error_text, release_set, split, stale, NackOptions, ReleaseParams};
use super::{wake_key, QueueMeta, QueueName, Receipt};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::sql::Param;

/// Deletes acknowledged messages, archiving them when `$3`.
pub(super) const DELETE: &str = "
WITH d AS (
    DELETE FROM {s}queue_messages m WHERE m.id = ANY($2::int8[]) AND m.queue_id = $1 RETURNING m.*
), ar AS (
    INSERT INTO {s}queue_archive (queue_id, id, priority, attempts, enqueued_at, group_key, dedup_key,
                                  headers, body)
    SELECT queue_id, id, priority, attempts, enqueued_at, group_key, dedup_key, headers, body
    FROM d WHERE $3
)
SELECT id, group_key, dedup_key FROM d";

/// Releases leases: due after `$3` ms, or the backoff from `$5` capped at
/// `$4`; `$6` is the error text.
pub(super) fn release() -> String {
    let set = release_set(ReleaseParams {
        delay: Param(3),
        base: Param(5),
        max: Param(4),
        error: Param(6),
    });
    [RELEASE, &set, RELEASE_WHERE].concat()
}

/// [`release`] up to its assignments.
const RELEASE: &str = "
UPDATE {s}queue_messages m
SET ";

/// [`release`] after its assignments.
const RELEASE_WHERE: &str = "
WHERE m.id = ANY($2::int8[]) AND m.queue_id = $1
RETURNING m.visible_at <= now()";

/// Dead-letters: moves the messages to queue `$3`, where they start over
/// with zero attempts, or marks them dead in place when `$3` is NULL. The
/// deliveries made (capped at `$4`) are kept in `dead_attempts`; the last
/// error is `$5` if given, else the one kept, else `$6`.
pub(super) const BURY: &str = "
UPDATE {s}queue_messages m
SET queue_id = coalesce($3::int8, m.queue_id),
    dead = $3::int8 IS NULL,
    dead_source = CASE WHEN $3::int8 IS NULL THEN m.dead_source ELSE $1 END,
    head = $3::int8 IS NOT NULL AND m.group_key IS NULL,
    timed = false,
    visible_at = now(),
    receipt = NULL,
    attempts = CASE WHEN $3::int8 IS NULL THEN least(m.attempts, $4) ELSE 0 END,
    dead_attempts = least(m.attempts, $4),
    last_error = coalesce($5, m.last_error, $6)
WHERE m.id = ANY($2::int8[]) AND m.queue_id = $1
RETURNING m.id, m.group_key, m.dedup_key";

/// Frees the deduplication keys of messages leaving queue `$1`.
pub(super) const DEDUP_LEAVE: &str = "
DELETE FROM {s}queue_dedup
WHERE queue_id = $1 AND dedup_key = ANY($2::text[]) AND message_id = ANY($3::int8[])";

/// Registers the keys of messages entering queue `$1` where still free.
pub(super) const DEDUP_ENTER: &str = "
INSERT INTO {s}queue_dedup (queue_id, dedup_key, message_id)
SELECT $1, k, id FROM unnest($2::text[], $3::int8[]) AS t(k, id) ORDER BY k
ON CONFLICT DO NOTHING";

/// Applies group size changes, locking the rows in key order.
pub(super) const GROUP_DELTAS: &str = "
INSERT INTO {s}queue_groups AS g (queue_id, group_key, size)
SELECT * FROM unnest($1::int8[], $2::text[], $3::int4[]) AS t(queue_id, group_key, delta)
ORDER BY 1, 2
ON CONFLICT (queue_id, group_key) DO UPDATE SET size = g.size + EXCLUDED.size";

/// Drops emptied groups and gives each touched group without a head its
/// oldest live message as head. Returns the queues that got a new head.
pub(super) const GROUP_HEADS: &str = "
WITH t AS (
    SELECT DISTINCT * FROM unnest($1::int8[], $2::text[]) AS t(queue_id, group_key)
), gone AS (
    DELETE FROM {s}queue_groups g USING t
    WHERE g.queue_id = t.queue_id AND g.group_key = t.group_key AND g.size <= 0
), cand AS (
    SELECT c.id FROM t, LATERAL (
        SELECT m.id FROM {s}queue_messages m
        WHERE m.queue_id = t.queue_id AND m.group_key = t.group_key AND NOT m.dead
        ORDER BY m.id LIMIT 1) c
    WHERE NOT EXISTS (SELECT 1 FROM {s}queue_messages h
                      WHERE h.queue_id = t.queue_id AND h.group_key = t.group_key AND h.head)
), up AS (
    UPDATE {s}queue_messages m SET head = true
    WHERE m.id = ANY(ARRAY(SELECT id FROM cand)) AND NOT m.head
    RETURNING m.queue_id
)
SELECT DISTINCT queue_id FROM up";

/// NOTIFY for each queue in `$2` that a broker other than `$3` waits on.
pub(super) const NOTIFY: &str = "
SELECT pg_notify($1, (-q)::text) FROM unnest($2::int8[]) AS q
WHERE EXISTS (SELECT 1 FROM {s}waiters w WHERE w.partition_id = -q AND w.until > now() AND w.listener <> $3)";

/// Moves dead letters of queue `$1` to `$2`, or each to where it came
/// from (dead in place: stays); the oldest `$3` of them, or all when `$3`
/// is NULL. Messages leased right now are left alone.
pub(super) const REDRIVE: &str = "
WITH c AS (
    SELECT m.id, m.dead AS was_dead,
           coalesce($2::int8, CASE WHEN m.dead THEN m.queue_id ELSE m.dead_source END) AS target
    FROM {s}queue_messages m
    WHERE m.id IN (SELECT id FROM {s}queue_messages WHERE queue_id = $1 AND dead
                   UNION ALL
                   SELECT id FROM {s}queue_messages
                   WHERE dead_source IS NOT NULL AND queue_id = $1 AND NOT dead)
      AND m.queue_id = $1
      AND NOT (m.receipt IS NOT NULL AND m.visible_at > now())
    ORDER BY m.id
    LIMIT $3::int8
    FOR UPDATE SKIP LOCKED
), ok AS MATERIALIZED (
    SELECT c.* FROM c WHERE EXISTS (SELECT 1 FROM {s}queues q WHERE q.id = c.target)
)
UPDATE {s}queue_messages m
SET queue_id = ok.target, dead = false, dead_source = NULL, dead_attempts = NULL, attempts = 0,
    receipt = NULL,
    visible_at = now(), timed = false, head = m.group_key IS NULL
FROM ok
WHERE m.id = ANY(ARRAY(SELECT id FROM ok)) AND m.id = ok.id
RETURNING m.id, ok.target, ok.was_dead, m.group_key, m.dedup_key";

/// What a settlement in a transaction does to each message.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op<'a> {
    Ack,
    Nack(&'a NackOptions),
    /// Out of attempts after its last lease expired.
    Expired,
}

/// Changes of one transaction: group size deltas, keys leaving and
/// entering queues, queues to wake.
#[derive(Default)]
struct Changes {
    groups: BTreeMap<(i64, String), i32>,
    keys_out: BTreeMap<i64, (Vec<String>, Vec<i64>)>,
    keys_in: BTreeMap<i64, (Vec<String>, Vec<i64>)>,
    wake: BTreeSet<i64>,
}

impl Changes {
    fn leave(&mut self, queue: i64, group: Option<String>, key: Option<String>, id: i64, counted: bool) {
        if let (Some(g), true) = (group, counted) {
            *self.groups.entry((queue, g)).or_default() -= 1;
        }
        if let Some(k) = key {
            let e = self.keys_out.entry(queue).or_default();
            e.0.push(k);
            e.1.push(id);
        }
    }

    fn enter(&mut self, queue: i64, group: Option<String>, key: Option<String>, id: i64) {
        if let Some(g) = group {
            *self.groups.entry((queue, g)).or_default() += 1;
        }
        if let Some(k) = key {
            let e = self.keys_in.entry(queue).or_default();
            e.0.push(k);
            e.1.push(id);
        }
        self.wake.insert(queue);
    }
}

/// True for errors worth retrying the whole transaction for.
fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Db(db) if db.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || db.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
}

/// Runs a settlement in a transaction of its own, retried on deadlock,
/// then wakes the queues it made something due in.
pub(super) async fn settle_own_tx(broker: &Broker, meta: &QueueMeta, receipts: &[Receipt], op: Op<'_>) -> Result<()> {
    let mut tries = 0;
    loop {
        let mut client = broker.client().await?;
        let tx = client.transaction().await?;
        let listener = broker.inner.wakeups.listener_id().to_string();
        match settle_on(broker, &*tx, meta, receipts, op, &listener).await {
            Ok(Settled { wake, buried }) => {
                tx.commit().await?;
                super::counters::dead_lettered(&meta.name, buried);
                wake.iter().for_each(|q| broker.inner.wakeups.wake(wake_key(*q)));
                return Ok(());
            }
            Err(e) if is_conflict(&e) && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// What a settlement did, for the caller to act on once it commits.
pub(super) struct Settled {
    /// The queues in which something became due.
    pub wake: BTreeSet<i64>,
    /// Messages dead-lettered (out of attempts).
    pub buried: usize,
}

/// A settlement inside an open transaction.
pub(super) async fn settle_on(
    broker: &Broker,
    client: &impl GenericClient,
    meta: &QueueMeta,
    receipts: &[Receipt],
    op: Op<'_>,
    listener: &str,
) -> Result<Settled> {
    let sql = &broker.inner.queues.sql;
    let (receipts, ids, tokens) = split(receipts);
    let locked = client.query(sql.lock.as_str(), &[&meta.id, &ids, &tokens]).await?;
    if locked.len() < receipts.len() {
        let found: Vec<i64> = locked.iter().map(|r| r.get(0)).collect();
        return Err(stale(&receipts, &found));
    }
    let (mut delete, mut release, mut bury) = (Vec::new(), Vec::new(), Vec::new());
    for row in &locked {
        let (id, attempts): (i64, i32) = (row.get(0), row.get(1));
        match op {
            Op::Ack => delete.push(id),
            Op::Nack(_) if attempts < meta.max_attempts => release.push(id),
            Op::Nack(_) | Op::Expired => bury.push(id),
        }
    }
    let mut changes = Changes::default();
    if !delete.is_empty() {
        for row in client
            .query(sql.delete.as_str(), &[&meta.id, &delete, &meta.archive])
            .await?
        {
            changes.leave(meta.id, row.get(1), row.get(2), row.get(0), true);
        }
    }
    let (given, fallback) = match op {
        Op::Nack(o) => (error_text(o.error.as_deref()), None),
        Op::Ack => (None, None),
        Op::Expired => (None, Some("visibility timeout expired")),
    };
    if let Op::Nack(o) = op {
        if !release.is_empty() {
            let rows = client
                .query(
                    sql.release.as_str(),
                    &[
                        &meta.id,
                        &release,
                        &o.delay.map(super::ms),
                        &meta.backoff_max_ms,
                        &meta.backoff_base_ms,
                        &given,
                    ],
                )
                .await?;
            if rows.iter().any(|r| r.get::<_, bool>(0)) {
                changes.wake.insert(meta.id);
            }
        }
    }
    let mut buried = 0;
    if !bury.is_empty() {
        let dlq = meta.dead_letter_id;
        let rows = client
            .query(
                sql.bury.as_str(),
                &[&meta.id, &bury, &dlq, &meta.max_attempts, &given, &fallback],
            )
            .await?;
        buried = rows.len();
        for row in rows {
            let (id, group, key): (i64, Option<String>, Option<String>) = (row.get(0), row.get(1), row.get(2));
            changes.leave(meta.id, group.clone(), key.clone(), id, true);
            if let Some(dlq) = dlq {
                changes.enter(dlq, group, key, id);
            }
        }
    }
    let wake = apply(broker, client, changes, listener).await?;
    Ok(Settled { wake, buried })
}

/// Applies deduplication and group changes, fixes group heads and
/// sends the notifications. Returns the queues to wake.
async fn apply(
    broker: &Broker,
    client: &impl GenericClient,
    changes: Changes,
    listener: &str,
) -> Result<BTreeSet<i64>> {
    let sql = &broker.inner.queues.sql;
    for (queue, (keys, ids)) in &changes.keys_out {
        client.execute(sql.dedup_leave.as_str(), &[queue, keys, ids]).await?;
    }
    for (queue, (keys, ids)) in &changes.keys_in {
        client.execute(sql.dedup_enter.as_str(), &[queue, keys, ids]).await?;
    }
    let mut wake = changes.wake;
    let changed: Vec<(&(i64, String), &i32)> = changes.groups.iter().filter(|(_, d)| **d != 0).collect();
    if !changed.is_empty() {
        let queues: Vec<i64> = changed.iter().map(|((q, _), _)| *q).collect();
        let groups: Vec<&str> = changed.iter().map(|((_, g), _)| g.as_str()).collect();
        let deltas: Vec<i32> = changed.iter().map(|(_, d)| **d).collect();
        client
            .execute(sql.group_deltas.as_str(), &[&queues, &groups, &deltas])
            .await?;
        // A new statement: its snapshot sees every send that committed
        // before the row locks above were granted.
        for row in client.query(sql.group_heads.as_str(), &[&queues, &groups]).await? {
            wake.insert(row.get(0));
        }
    }
    if !wake.is_empty() {
        let queues: Vec<i64> = wake.iter().copied().collect();
        client
            .execute(sql.notify.as_str(), &[&broker.inner.channel, &queues, &listener])
            .await?;
    }
    Ok(wake)
}

/// Purge in an open transaction: deletes every message of the queue.
async fn purge_on(broker: &Broker, client: &impl GenericClient, meta: &QueueMeta) -> Result<(u64, BTreeSet<i64>)> {
    let rows = client
        .query(broker.inner.queues.sql.purge.as_str(), &[&meta.id])
        .await?;
    let mut changes = Changes::default();
    for row in &rows {
        let dead: bool = row.get(3);
        changes.leave(meta.id, row.get(1), row.get(2), row.get(0), !dead);
    }
    let wake = apply(broker, client, changes, broker.inner.wakeups.listener_id()).await?;
    Ok((u64::try_from(rows.len()).unwrap_or(u64::MAX), wake))
}

/// Deletes every message of the queue; see [`crate::queues::Queues::purge`].
pub(super) async fn purge(broker: &Broker, meta: &QueueMeta) -> Result<u64> {
    let mut tries = 0;
    loop {
        let mut client = broker.client().await?;
        let tx = client.transaction().await?;
        match purge_on(broker, &*tx, meta).await {
            Ok((n, wake)) => {
                tx.commit().await?;
                wake.iter().for_each(|q| broker.inner.wakeups.wake(wake_key(*q)));
                return Ok(n);
            }
            Err(e) if is_conflict(&e) && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Moves the dead letters held in `queue` back: each to the queue it
/// was dead-lettered from (messages dead in `queue` itself come alive
/// there), or all to `to`. They start over with zero attempts. Messages
/// under a lease (someone is inspecting them) and those whose source
/// queue no longer exists stay. With `limit`, only the oldest `limit`
/// move. Returns how many moved.
pub(crate) async fn redrive(
    broker: &Broker,
    queue: &QueueName,
    to: Option<&QueueName>,
    limit: Option<u64>,
) -> Result<u64> {
    let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let target = match to {
        Some(t) => Some(crate::queues::queue_meta(broker, t).await?.id),
        None => None,
    };
    let mut tries = 0;
    loop {
        let mut client = broker.client().await?;
        let tx = client.transaction().await?;
        match redrive_on(broker, &*tx, &meta, target, limit).await {
            Ok((n, wake)) => {
                tx.commit().await?;
                wake.iter().for_each(|q| broker.inner.wakeups.wake(wake_key(*q)));
                return Ok(n);
            }
            Err(e) if is_conflict(&e) && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

async fn redrive_on(
    broker: &Broker,
    client: &impl GenericClient,
    meta: &QueueMeta,
    target: Option<i64>,
    limit: Option<i64>,
) -> Result<(u64, BTreeSet<i64>)> {
    let rows = client
        .query(broker.inner.queues.sql.redrive.as_str(), &[&meta.id, &target, &limit])
        .await?;
    let mut changes = Changes::default();
    for row in &rows {
        let (id, to, was_dead): (i64, i64, bool) = (row.get(0), row.get(1), row.get(2));
        let (group, key): (Option<String>, Option<String>) = (row.get(3), row.get(4));
        changes.leave(meta.id, group.clone(), key.clone(), id, !was_dead);
        changes.enter(to, group, key, id);
    }
    let wake = apply(broker, client, changes, broker.inner.wakeups.listener_id()).await?;
    Ok((u64::try_from(rows.len()).unwrap_or(u64::MAX), wake))
}

/// Deletes up to `limit` messages past their queue's SQS retention period
/// (see [`super::sqs_attrs::EXPIRE`]) in one transaction, keeping group
/// sizes, heads and deduplication keys right. Returns how many went.
pub(super) async fn expire_sqs(broker: &Broker, limit: i64) -> Result<u64> {
    let mut tries = 0;
    loop {
        let mut client = broker.client().await?;
        let tx = client.transaction().await?;
        let rows = match tx
            .query(broker.inner.queues.sql.sqs_expire.as_str(), &[&limit])
            .await
            .map_err(Error::from)
        {
            Ok(rows) => rows,
            Err(e) if is_conflict(&e) && tries < 3 => {
                tries += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut changes = Changes::default();
        for row in &rows {
            let dead: bool = row.get(4);
            changes.leave(row.get(1), row.get(2), row.get(3), row.get(0), !dead);
        }
        match apply(broker, &*tx, changes, broker.inner.wakeups.listener_id()).await {
            Ok(wake) => {
                tx.commit().await?;
                wake.iter().for_each(|q| broker.inner.wakeups.wake(wake_key(*q)));
                return Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX));
            }
            Err(e) if is_conflict(&e) && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}
