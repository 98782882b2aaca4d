//! Taking: a claim and an acknowledgement in one statement, inside the
//! caller's transaction, as pgmq's `pop` and the plain `SKIP LOCKED` worker
//! do.
//!
//! The message is deleted (or archived) at once and held by its row lock
//! until the caller's transaction ends: a commit acknowledges it, a
//! rollback or a lost connection leaves it as it was, due at once. There
//! is no lease and no receipt, so nothing to ack, nack or extend, and no
//! attempt is counted for a rolled-back take: a message whose processing
//! kills the worker comes back without limit. Workers that need retries
//! with backoff and dead letters receive and acknowledge instead.
//!
//! A take picks exactly what a receive would (the same candidates, order
//! and `SKIP LOCKED`), so both kinds of worker share a queue. A message
//! found out of attempts (its last lease, given by a receive, expired) is
//! not taken: it gets a fresh receipt and goes the receive's way to the
//! dead-letter queue. The SQL function `take` is the one implementation;
//! [`take_in`] calls it.

use std::time::SystemTime;

use tokio_postgres::GenericClient;

use super::{QueueName, MAX_RECEIVE};
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::headers;
use crate::types::Header;

/// Takes up to `$2` messages of queue `$1`: the claim's pick, then the
/// delete of the picked messages with attempts left (archived when `$3`),
/// and a fresh receipt for those out of attempts (`$4` reached). Answers
/// the taken messages with a NULL receipt and the others with their new
/// one, in no particular order.
pub(super) fn take() -> String {
    [super::receive::CLAIM_PICK, TAKE_REST].concat()
}

/// The pick of [`take`] for one message from a queue that keeps no
/// archive (`$2` is not used): the same candidates, order and `SKIP
/// LOCKED`, with a limit of 1 written into the text. Answers the picked
/// message's id, partition slot and row address, locked, or nothing.
///
/// The SQL function then deletes it with [`TAKE_ONE_FROM_0`] or
/// [`TAKE_ONE_FROM_1`], as its slot says. Two plain statements touch
/// fewer relations than one that deletes through the partitioned table:
/// no delete plan over both partitions pruned at run time, no archive
/// insert and no receipt update (which opens every index of both
/// partitions), so a transaction's locks fit the fast path Postgres keeps
/// per backend instead of its shared lock table, which many workers
/// contend for. The literal limit keeps the generic plan's estimate small
/// on a deep queue (a `LIMIT $n` is costed as a tenth of the rows).
pub(super) fn take_one_pick() -> String {
    [super::receive::CLAIM_PICK, "\nSELECT id, slot, ctid FROM pick"]
        .concat()
        .replace("LIMIT $2", "LIMIT 1")
}

/// Deletes the message that [`take_one_pick`] picked from the partition
/// this statement names (its slot's): message `$2` of queue `$1` at row
/// address `$4`, if it has attempts left (fewer than `$3`). Answers the
/// taken message, or nothing when it is out of attempts (the caller then
/// takes the general way). The row address finds it without an index.
macro_rules! take_one_from {
    ($partition:literal) => {
        concat!(
            "DELETE FROM {s}queue_messages_",
            $partition,
            " m
    WHERE m.ctid = $4 AND m.id = $2 AND m.queue_id = $1 AND m.attempts < $3
    RETURNING m.id, m.attempts + 1 AS attempts, m.enqueued_at, m.priority, m.group_key, m.dedup_key, m.last_error,
              CASE WHEN m.dead_source IS NOT NULL
                   THEN (SELECT s.name FROM {s}queues s WHERE s.id = m.dead_source) END AS dead_source,
              m.dead_attempts, m.headers, m.body"
        )
    };
}

/// [`take_one_from!`] partition 0.
pub(super) const TAKE_ONE_FROM_0: &str = take_one_from!("0");
/// [`take_one_from!`] partition 1.
pub(super) const TAKE_ONE_FROM_1: &str = take_one_from!("1");

/// [`take`] after the pick.
const TAKE_REST: &str = ", taken AS (
    DELETE FROM {s}queue_messages m
    WHERE m.id = ANY(ARRAY(SELECT id FROM pick)) AND m.queue_id = $1 AND m.attempts < $4
    RETURNING m.*
), archived AS (
    INSERT INTO {s}queue_archive (queue_id, id, priority, attempts, enqueued_at, group_key, dedup_key,
                                  headers, body)
    SELECT queue_id, id, priority, attempts + 1, enqueued_at, group_key, dedup_key, headers, body
    FROM taken WHERE $3
), spent AS (
    UPDATE {s}queue_messages m SET receipt = gen_random_uuid()
    WHERE m.id = ANY(ARRAY(SELECT id FROM pick)) AND m.queue_id = $1 AND m.attempts >= $4
    RETURNING m.id, m.receipt, m.priority
)
SELECT t.id, NULL::text AS receipt, t.attempts + 1 AS attempts, t.enqueued_at, t.priority, t.group_key,
       t.dedup_key, t.last_error,
       CASE WHEN t.dead_source IS NOT NULL
            THEN (SELECT s.name FROM {s}queues s WHERE s.id = t.dead_source) END AS dead_source,
       t.dead_attempts, t.headers, t.body
FROM taken t
UNION ALL
SELECT x.id, x.receipt::text, NULL, NULL, x.priority, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM spent x";

/// The SQL function's call, as the library makes it.
pub(super) const CALL: &str = "
SELECT id, attempt, enqueued_at, priority, group_key, dedup_key, last_error, dead_letter_source,
       dead_letter_attempts, headers, body
FROM {s}take($1::text, $2::int4)";

/// A message taken inside the caller's transaction: gone if and only if
/// that transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenMessage {
    /// The message id.
    pub id: i64,
    /// Which delivery this is, from 1: deliveries by receive before this
    /// one, plus one.
    pub attempt: i32,
    /// When the message was first sent.
    pub enqueued_at: SystemTime,
    /// The payload.
    pub body: Vec<u8>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Priority, 0 to 9.
    pub priority: u8,
    /// FIFO group, if any.
    pub group: Option<String>,
    /// Deduplication key, if any.
    pub dedup_key: Option<String>,
    /// The last error text given to a nack, if any.
    pub last_error: Option<String>,
    /// For a dead letter: the queue it came from.
    pub dead_letter_source: Option<QueueName>,
    /// For a dead letter: the deliveries it had in that queue.
    pub dead_letter_attempts: Option<i32>,
}

/// Takes up to `max` due messages in the caller's open transaction,
/// highest priority first, then oldest: see the module's documentation.
pub(crate) async fn take_in(
    broker: &Broker,
    client: &impl GenericClient,
    queue: &QueueName,
    max: usize,
) -> Result<Vec<TakenMessage>> {
    if !(1..=MAX_RECEIVE).contains(&max) {
        return Err(Error::invalid(
            Invalid::MaxMessages,
            format!("{max} is not between 1 and {MAX_RECEIVE}"),
        ));
    }
    // The library's own error for an unknown queue, before the call.
    crate::queues::queue_meta(broker, queue).await?;
    let max = i32::try_from(max).map_err(|_| Error::invalid(Invalid::MaxMessages, "too many"))?;
    let rows = client
        .query(&broker.inner.queues.sql.take_call, &[&queue.as_str(), &max])
        .await?;
    rows.iter()
        .map(|row| {
            let priority: i32 = row.get(3);
            Ok(TakenMessage {
                id: row.get(0),
                attempt: row.get(1),
                enqueued_at: row.get(2),
                priority: u8::try_from(priority).unwrap_or(0),
                group: row.get(4),
                dedup_key: row.get(5),
                last_error: row.get(6),
                dead_letter_source: row.get::<_, Option<String>>(7).and_then(|n| QueueName::new(n).ok()),
                dead_letter_attempts: row.get(8),
                headers: headers::from_json(row.get(9)),
                body: row.get(10),
            })
        })
        .collect()
}
