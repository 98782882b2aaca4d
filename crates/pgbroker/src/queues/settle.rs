//! Settling leases: acknowledge, release (nack) and extend, in batches.
//!
//! Each call acts only if every receipt is the current lease of its
//! message, and then on all of them; otherwise it changes nothing and
//! answers [`Error::StaleReceipt`] naming the refused receipts. The common
//! case is one statement. Acknowledging a FIFO group's message and
//! dead-lettering a message out of attempts change group membership and go
//! through [`super::membership`] in a transaction.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tokio_postgres::GenericClient;

use super::membership::Op;
use super::{check_duration, ms, QueueMeta, QueueName, Receipt, MAX_DELAY, MAX_VISIBILITY_TIMEOUT};
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::sql::{Commit, Param, NO_FLUSH_WAIT};

/// The rows of `$2` whose current receipt is the matching entry of `$3`,
/// locked. Shared by every settlement statement.
pub(super) const LOCKED: &str = "
    SELECT m.id, m.attempts, m.group_key FROM {s}queue_messages m
    WHERE m.id = ANY($2::int8[]) AND m.queue_id = $1
      AND m.receipt = (($3::text[])[array_position($2::int8[], m.id)])::uuid
    FOR UPDATE";

/// A statement of [`ack`], [`nack`] and [`extend`]: the rows [`LOCKED`]
/// finds, as `locked`, then the statement's own parts.
fn with_locked(parts: &[&str]) -> String {
    ["\nWITH locked AS MATERIALIZED (", LOCKED, "), "]
        .iter()
        .chain(parts)
        .copied()
        .collect()
}

/// Acknowledge: deletes the messages (archiving them when `$4`) if every
/// receipt is current and none belongs to a FIFO group. Returns whether it
/// did, and the ids of the messages whose receipt is current.
///
/// With [`Commit::NoFlushWait`], for acknowledgements in a transaction of
/// their own, the commit does not wait for the WAL flush: waiting for it
/// on every acknowledgement doubled a worker's round trips to the disk.
pub(super) fn ack(commit: Commit) -> String {
    with_locked(&[&[ACK], commit.last_items()].concat())
}

/// What [`ack`] does after [`LOCKED`].
const ACK: &str = "go AS (
    SELECT count(*) = cardinality($2::int8[]) AND bool_and(group_key IS NULL) IS NOT FALSE AS ok
    FROM locked
), d AS (
    DELETE FROM {s}queue_messages m
    WHERE m.id = ANY(ARRAY(SELECT id FROM locked)) AND m.queue_id = $1 AND (SELECT ok FROM go)
    RETURNING m.*
), dd AS (
    DELETE FROM {s}queue_dedup x
    WHERE x.queue_id = $1
      AND x.dedup_key = ANY(ARRAY(SELECT dedup_key FROM d WHERE dedup_key IS NOT NULL))
      AND x.message_id = ANY(ARRAY(SELECT id FROM d))
), ar AS (
    INSERT INTO {s}queue_archive (queue_id, id, priority, attempts, enqueued_at, group_key, dedup_key,
                                  headers, body)
    SELECT queue_id, id, priority, attempts, enqueued_at, group_key, dedup_key, headers, body
    FROM d WHERE $4
)
SELECT (SELECT ok FROM go), ARRAY(SELECT id FROM locked)";

/// Acknowledge, the common case, in a transaction of its own: deletes the
/// messages whose receipt is current and which belong to no FIFO group,
/// with their deduplication keys, without locking them first. Changing
/// fewer messages than given calls `settle_refused()`, which undoes the
/// statement; the caller then runs [`ack`], which finds out why. Commits
/// without waiting for the flush, as [`ack`] explains.
pub(super) fn ack_fast() -> String {
    [ACK_FAST, NO_FLUSH_WAIT, ACK_FAST_REFUSED].concat()
}

/// [`ack_fast`] up to its commit mode.
const ACK_FAST: &str = "
WITH d AS (
    DELETE FROM {s}queue_messages m
    WHERE m.id = ANY($2::int8[]) AND m.queue_id = $1 AND m.group_key IS NULL
      AND m.receipt = (($3::text[])[array_position($2::int8[], m.id)])::uuid
    RETURNING m.id, m.dedup_key
), dd AS (
    DELETE FROM {s}queue_dedup x USING d
    WHERE x.queue_id = $1 AND x.dedup_key = d.dedup_key AND x.message_id = d.id
)
SELECT CASE WHEN count(*) = cardinality($2::int8[]) THEN ";

/// [`ack_fast`] after its commit mode.
const ACK_FAST_REFUSED: &str = "
            ELSE {s}settle_refused() END
FROM d";

/// The delete of [`ACK_ONE`]: message `$2` of queue `$1`, if `$3` is its
/// current receipt and it belongs to no FIFO group.
macro_rules! ack_one_delete {
    () => {
        "
    DELETE FROM {s}queue_messages m
    WHERE m.id = $2::int8 AND m.queue_id = $1 AND m.group_key IS NULL AND m.receipt = $3::text::uuid"
    };
}

/// Acknowledge one message inside a caller's transaction, the common
/// case: deletes message `$2` of queue `$1` if `$3` is its current receipt
/// and it belongs to no FIFO group, with its deduplication key, and
/// archives it when `$4`. Answers how many it deleted. Deleting none
/// changes nothing: the caller then runs [`ack`], which locks the message
/// first and finds out why (a stale receipt, or a group to settle).
pub(super) const ACK_ONE: &str = concat!(
    "
WITH d AS (",
    ack_one_delete!(),
    "
    RETURNING m.*
), dd AS (
    DELETE FROM {s}queue_dedup x USING d
    WHERE x.queue_id = $1 AND x.dedup_key = d.dedup_key AND x.message_id = d.id
), ar AS (
    INSERT INTO {s}queue_archive (queue_id, id, priority, attempts, enqueued_at, group_key, dedup_key,
                                  headers, body)
    SELECT queue_id, id, priority, attempts, enqueued_at, group_key, dedup_key, headers, body
    FROM d WHERE $4
)
SELECT count(*) FROM d"
);

/// [`ACK_ONE`] in a queue without an archive, the usual
/// case: the delete alone, one statement on one table. Answers the
/// deleted message's deduplication key, which the caller then frees with
/// [`super::membership::DEDUP_LEAVE`] when there is one; no row when it
/// deleted nothing, as [`ACK_ONE`] answers 0.
pub(super) const ACK_ONE_PLAIN: &str = concat!(
    ack_one_delete!(),
    "
    RETURNING m.dedup_key"
);

/// The SQLSTATE `settle_refused()` raises.
const SETTLE_REFUSED: &str = "PB001";

/// Where a release finds its delay and the queue's backoff.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReleaseParams {
    /// The delay asked for, in ms, or NULL for the backoff.
    pub delay: Param,
    /// The queue's first retry delay, in ms.
    pub base: Param,
    /// The queue's longest retry delay, in ms.
    pub max: Param,
    /// The error text to keep, or NULL to keep the last one.
    pub error: Param,
}

/// The assignments of a release to `m`: the lease ends, the last error is
/// kept, and the message comes due after the delay when not NULL, else
/// after the queue's backoff for the attempt just made,
/// `base * 2^(attempts - 1)` capped at `max`, times a random 50-100 %.
pub(super) fn release_set(p: ReleaseParams) -> String {
    let ReleaseParams {
        delay,
        base,
        max,
        error,
    } = p;
    format!(
        "receipt = NULL, timed = true, last_error = coalesce({error}, m.last_error),
    visible_at = now() + coalesce({delay}::int8,
        (least({max}::int8::float8, {base}::int8::float8 * power(2::float8, least(m.attempts - 1, 60)))
         * (0.5 + random() / 2))::int8) * interval '1 millisecond'"
    )
}

/// Release (nack): ends the leases; the messages come due after the delay
/// (`$4`, or the backoff from `$8` capped at `$6`), with `$7` as their last
/// error. Refused as a whole if a receipt is stale or a message is out of
/// attempts (`$5`): those need dead-lettering, in a transaction. Notifies
/// channel `$9` when a message came due and a broker other than `$10` waits.
pub(super) fn nack() -> String {
    let set = release_set(ReleaseParams {
        delay: Param(4),
        base: Param(8),
        max: Param(6),
        error: Param(7),
    });
    with_locked(&[NACK_GO, &set, NACK_WHERE])
}

/// [`nack`] after [`LOCKED`], up to the release's assignments.
const NACK_GO: &str = "go AS (
    SELECT count(*) = cardinality($2::int8[]) AND bool_and(attempts < $5) IS NOT FALSE AS ok FROM locked
), u AS (
    UPDATE {s}queue_messages m
    SET ";

/// [`nack`] after the release's assignments.
const NACK_WHERE: &str = "
    WHERE m.id = ANY(ARRAY(SELECT id FROM locked)) AND m.queue_id = $1 AND (SELECT ok FROM go)
    RETURNING m.visible_at <= now() AS due
)
SELECT (SELECT ok FROM go), ARRAY(SELECT id FROM locked),
       (SELECT pg_notify($9, (-$1::int8)::text)
        WHERE EXISTS (SELECT 1 FROM u WHERE due)
          AND EXISTS (SELECT 1 FROM {s}waiters w
                      WHERE w.partition_id = -$1::int8 AND w.until > now() AND w.listener <> $10))";

/// Extend: the leases end `$4` ms after their current end (or after now,
/// if already past), but no later than `$5` ms from now.
pub(super) fn extend() -> String {
    with_locked(&[EXTEND])
}

/// [`extend`] after [`LOCKED`].
const EXTEND: &str = "go AS (
    SELECT count(*) = cardinality($2::int8[]) AS ok FROM locked
), u AS (
    UPDATE {s}queue_messages m
    SET visible_at = least(greatest(m.visible_at, now()) + $4::int8 * interval '1 millisecond',
                           now() + $5::int8 * interval '1 millisecond')
    WHERE m.id = ANY(ARRAY(SELECT id FROM locked)) AND m.queue_id = $1 AND (SELECT ok FROM go)
    RETURNING m.id, m.visible_at
)
SELECT (SELECT ok FROM go), ARRAY(SELECT id FROM locked), ARRAY(SELECT id FROM u),
       ARRAY(SELECT visible_at FROM u)";

/// How to release messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NackOptions {
    /// Come due again after this long; `None` applies the queue's retry
    /// backoff. Zero makes the messages due at once.
    pub delay: Option<Duration>,
    /// Why processing failed; kept with the message as its last error and
    /// carried into the dead-letter queue.
    pub error: Option<String>,
}

/// Longest error text kept, in bytes.
pub(crate) const MAX_ERROR_BYTES: usize = 4096;

/// The error text as stored: without NUL characters (which text columns
/// cannot hold), cut to [`MAX_ERROR_BYTES`] at a character boundary.
pub(super) fn error_text(error: Option<&str>) -> Option<String> {
    let mut text = error?.replace('\0', "\u{fffd}");
    if text.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Some(text)
}

/// Receipts as bound: ids and tokens, duplicates removed.
pub(super) fn split(receipts: &[Receipt]) -> (Vec<Receipt>, Vec<i64>, Vec<String>) {
    let unique: Vec<Receipt> = receipts.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let ids = unique.iter().map(Receipt::message_id).collect();
    let tokens = unique.iter().map(|r| r.token().to_string()).collect();
    (unique, ids, tokens)
}

/// The refusal for the receipts whose message was not among `locked`.
pub(super) fn stale(receipts: &[Receipt], locked: &[i64]) -> Error {
    let locked: BTreeSet<i64> = locked.iter().copied().collect();
    Error::StaleReceipt {
        receipts: receipts
            .iter()
            .filter(|r| !locked.contains(&r.message_id()))
            .map(Receipt::to_string)
            .collect(),
    }
}

/// True when two receipts name one message: at most one of them can be
/// current, so the call cannot succeed as a whole.
fn has_duplicate_ids(receipts: &[Receipt]) -> bool {
    let ids: BTreeSet<i64> = receipts.iter().map(Receipt::message_id).collect();
    ids.len() < receipts.len()
}

/// What the first statement of a settlement found.
enum Fast {
    Done,
    Stale(Error),
    /// Every receipt is current, but the work needs the transactional path.
    Slow,
}

/// Acknowledges messages: they are deleted (or archived, if the queue
/// keeps acknowledged messages). All or nothing: if any receipt is not
/// current, nothing changes and the error names the refused ones.
pub(crate) async fn ack_receipts(broker: &Broker, queue: &QueueName, receipts: &[Receipt]) -> Result<()> {
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let (receipts, _, _) = split(receipts);
    if receipts.is_empty() {
        return Ok(());
    }
    refuse_duplicates(broker, &meta, &receipts).await?;
    if meta.archive {
        return ack_now(broker, &meta, &receipts).await;
    }
    broker
        .inner
        .queues
        .batched(&broker.inner)
        .acks
        .submit(meta.id, (meta, receipts))
        .await
}

/// Acknowledges distinct receipts on a pooled connection: the fast
/// statement first (unless the queue archives), then the careful path
/// if it refused.
pub(super) async fn ack_now(broker: &Broker, meta: &QueueMeta, receipts: &[Receipt]) -> Result<()> {
    if !meta.archive && try_ack_fast(broker, meta, receipts).await? {
        return Ok(());
    }
    let (receipts, ids, tokens) = split(receipts);
    let client = broker.client().await?;
    let stmt = client.prepare_cached(&broker.inner.queues.sql.ack_relaxed).await?;
    let fast = ack_on(&**client, &stmt, meta, &receipts, &ids, &tokens).await?;
    drop(client);
    match fast {
        Fast::Done => Ok(()),
        Fast::Stale(e) => Err(e),
        Fast::Slow => crate::queues::membership::settle_own_tx(broker, meta, &receipts, Op::Ack).await,
    }
}

/// Runs [`ack_fast`] on distinct receipts of a queue that does not
/// archive: true when it acknowledged them all, false when it refused
/// and changed nothing.
pub(super) async fn try_ack_fast(broker: &Broker, meta: &QueueMeta, receipts: &[Receipt]) -> Result<bool> {
    let ids: Vec<i64> = receipts.iter().map(Receipt::message_id).collect();
    let tokens: Vec<&str> = receipts.iter().map(Receipt::token).collect();
    let client = broker.client().await?;
    let stmt = client.prepare_cached(&broker.inner.queues.sql.ack_fast).await?;
    match client.query_one(&stmt, &[&meta.id, &ids, &tokens]).await {
        Ok(_) => Ok(true),
        Err(e) if e.code().is_some_and(|c| c.code() == SETTLE_REFUSED) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Acknowledges inside the caller's open transaction: the messages are
/// gone if and only if it commits. Doing the work's writes and the
/// acknowledgement in one transaction is what makes processing
/// effectively exactly once. The messages stay locked until the caller
/// commits or rolls back. Use the default READ COMMITTED isolation.
pub(crate) async fn ack_in(
    broker: &Broker,
    client: &impl GenericClient,
    queue: &QueueName,
    receipts: &[Receipt],
) -> Result<()> {
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let (receipts, ids, tokens) = split(receipts);
    if receipts.is_empty() {
        return Ok(());
    }
    refuse_duplicates(broker, &meta, &receipts).await?;
    let sql = broker.inner.queues.sql.ack.as_str();
    match ack_on(client, sql, &meta, &receipts, &ids, &tokens).await? {
        Fast::Done => Ok(()),
        Fast::Stale(e) => Err(e),
        Fast::Slow => {
            crate::queues::membership::settle_on(broker, client, &meta, &receipts, Op::Ack, "").await?;
            Ok(())
        }
    }
}

/// Releases messages (a negative acknowledgement): their leases end and
/// they come due again after `options.delay`, or after the queue's
/// retry backoff when no delay is given. A message that has used all
/// its attempts moves to the dead-letter queue instead. All or nothing,
/// as [`crate::queues::Queues::ack`].
pub(crate) async fn nack_receipts(
    broker: &Broker,
    queue: &QueueName,
    receipts: &[Receipt],
    options: &NackOptions,
) -> Result<()> {
    if let Some(d) = options.delay {
        check_duration(Invalid::Delay, d, Duration::ZERO, MAX_DELAY)?;
    }
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let (receipts, ids, tokens) = split(receipts);
    if receipts.is_empty() {
        return Ok(());
    }
    refuse_duplicates(broker, &meta, &receipts).await?;
    let error = error_text(options.error.as_deref());
    let client = broker.client().await?;
    let stmt = client.prepare_cached(&broker.inner.queues.sql.nack).await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &meta.id,
                &ids,
                &tokens,
                &options.delay.map(ms),
                &meta.max_attempts,
                &meta.backoff_max_ms,
                &error,
                &meta.backoff_base_ms,
                &broker.inner.channel,
                &broker.inner.wakeups.listener_id(),
            ],
        )
        .await?;
    drop(client);
    let (ok, locked): (bool, Vec<i64>) = (row.get(0), row.get(1));
    if ok {
        if options.delay.is_some_and(|d| d.is_zero()) {
            crate::queues::wake_receivers(broker, meta.id, receipts.len());
        }
        return Ok(());
    }
    if locked.len() < receipts.len() {
        return Err(stale(&receipts, &locked));
    }
    crate::queues::membership::settle_own_tx(broker, &meta, &receipts, Op::Nack(options)).await
}

/// Extends leases: each now ends `by` after its current end (or after
/// now, if it already passed), but never more than
/// [`MAX_VISIBILITY_TIMEOUT`] from now. Returns the new ends, in the
/// order of `receipts`. All or nothing, as [`crate::queues::Queues::ack`].
pub(crate) async fn extend_leases(
    broker: &Broker,
    queue: &QueueName,
    receipts: &[Receipt],
    by: Duration,
) -> Result<Vec<SystemTime>> {
    check_duration(Invalid::Extension, by, Duration::from_millis(1), MAX_VISIBILITY_TIMEOUT)?;
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let (unique, ids, tokens) = split(receipts);
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    refuse_duplicates(broker, &meta, &unique).await?;
    let client = broker.client().await?;
    let stmt = client.prepare_cached(&broker.inner.queues.sql.extend).await?;
    let row = client
        .query_one(&stmt, &[&meta.id, &ids, &tokens, &ms(by), &ms(MAX_VISIBILITY_TIMEOUT)])
        .await?;
    let (ok, locked): (bool, Vec<i64>) = (row.get(0), row.get(1));
    if !ok {
        return Err(stale(&unique, &locked));
    }
    let (updated, ends): (Vec<i64>, Vec<SystemTime>) = (row.get(2), row.get(3));
    let by_id: std::collections::HashMap<i64, SystemTime> = updated.into_iter().zip(ends).collect();
    receipts
        .iter()
        .map(|r| {
            by_id
                .get(&r.message_id())
                .copied()
                .ok_or_else(|| stale(std::slice::from_ref(r), &[]))
        })
        .collect()
}

/// Refuses receipts that name one message twice, naming those that are
/// not its current lease.
async fn refuse_duplicates(broker: &Broker, meta: &QueueMeta, receipts: &[Receipt]) -> Result<()> {
    if !has_duplicate_ids(receipts) {
        return Ok(());
    }
    let ids: Vec<i64> = receipts.iter().map(Receipt::message_id).collect();
    let client = broker.client().await?;
    let rows = client
        .query(&broker.inner.queues.sql.refuse_duplicates, &[&ids, &meta.id])
        .await?;
    let current: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| Some(format!("{}:{}", r.get::<_, i64>(0), r.get::<_, Option<String>>(1)?)))
        .collect();
    Err(Error::StaleReceipt {
        receipts: receipts
            .iter()
            .map(Receipt::to_string)
            .filter(|r| !current.contains(r))
            .collect(),
    })
}

/// Moves messages whose receipts are current to the dead-letter queue
/// (or marks them dead in place), with `attempts` capped at the queue's
/// maximum.
pub(super) async fn dead_letter(broker: &Broker, meta: &QueueMeta, receipts: &[Receipt]) -> Result<()> {
    crate::queues::membership::settle_own_tx(broker, meta, receipts, Op::Expired).await
}

/// Runs the acknowledge statement.
async fn ack_on<S>(
    client: &impl GenericClient,
    stmt: &S,
    meta: &QueueMeta,
    receipts: &[Receipt],
    ids: &[i64],
    tokens: &[String],
) -> Result<Fast>
where
    S: tokio_postgres::ToStatement + Sync + Send + ?Sized,
{
    let row = client
        .query_one(stmt, &[&meta.id, &ids, &tokens, &meta.archive])
        .await?;
    let (ok, locked): (bool, Vec<i64>) = (row.get(0), row.get(1));
    Ok(if ok {
        Fast::Done
    } else if locked.len() < receipts.len() {
        Fast::Stale(stale(receipts, &locked))
    } else {
        Fast::Slow
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_storable() {
        assert_eq!(error_text(None), None);
        assert_eq!(error_text(Some("a\0b")).as_deref(), Some("a\u{fffd}b"));
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = error_text(Some(&long)).expect("text");
        assert!(cut.len() <= MAX_ERROR_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
