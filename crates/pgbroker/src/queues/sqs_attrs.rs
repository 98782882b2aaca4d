//! What the SQS-compatible API keeps beside a queue: the SQS settings the
//! queues table has no column for (FIFO flag, content-based deduplication,
//! default delay and receive wait, retention, tags), the five-minute
//! deduplication window of FIFO queues, setting a lease to end at a given
//! time, and the time each message was first received.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use super::{ms, QueueName, Receipt, Sent, MAX_VISIBILITY_TIMEOUT};
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::queues::send::Message;
use crate::types::to_millis;

/// How long a deduplication id of a FIFO queue holds after its send.
pub const SQS_DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The SQS settings of a queue. A queue created without them (through the
/// library or the CLI) has the defaults: a standard queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsQueueSettings {
    /// A FIFO queue: every message has a group; deduplication ids hold for
    /// [`SQS_DEDUP_WINDOW`].
    pub fifo: bool,
    /// Without a deduplication id, a FIFO message is deduplicated by the
    /// SHA-256 of its body.
    pub content_based_dedup: bool,
    /// Default delay of a message, in seconds.
    pub delay_seconds: i32,
    /// Default wait of a receive, in seconds.
    pub receive_wait_seconds: i32,
    /// Message retention period, in seconds: older messages are not
    /// delivered through the SQS API and [`super::Queues::sqs_sweep`]
    /// deletes them.
    pub retention_seconds: i32,
    /// Other attributes kept as given and reported back.
    pub extra: BTreeMap<String, String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Last change of the settings, milliseconds since the epoch (0 when
    /// never set).
    pub modified_at_ms: i64,
}

impl Default for SqsQueueSettings {
    fn default() -> Self {
        SqsQueueSettings {
            fifo: false,
            content_based_dedup: false,
            delay_seconds: 0,
            receive_wait_seconds: 0,
            retention_seconds: 345_600,
            extra: BTreeMap::new(),
            tags: BTreeMap::new(),
            modified_at_ms: 0,
        }
    }
}

/// A queue's SQS settings (NULLs when it has none); no row when there
/// is no such queue.
pub(super) const GET: &str = "
SELECT s.fifo, s.content_based_dedup, s.delay_seconds, s.receive_wait_seconds, s.retention_seconds,
       s.extra, s.tags, s.modified_at
FROM {s}queues q LEFT JOIN {s}sqs_queues s ON s.queue_id = q.id WHERE q.name = $1";

/// Sets a queue's SQS settings; returns a row when the queue exists.
pub(super) const SET: &str = "
INSERT INTO {s}sqs_queues AS s (queue_id, fifo, content_based_dedup, delay_seconds, receive_wait_seconds,
                                retention_seconds, extra, tags)
SELECT q.id, $2, $3, $4, $5, $6, $7, $8 FROM {s}queues q WHERE q.name = $1
ON CONFLICT (queue_id) DO UPDATE SET fifo = EXCLUDED.fifo, content_based_dedup = EXCLUDED.content_based_dedup,
    delay_seconds = EXCLUDED.delay_seconds, receive_wait_seconds = EXCLUDED.receive_wait_seconds,
    retention_seconds = EXCLUDED.retention_seconds, extra = EXCLUDED.extra, tags = EXCLUDED.tags,
    modified_at = now()
RETURNING s.queue_id";

/// Takes a deduplication id unless it was taken less than the window ago.
/// Returns a row when it was free.
pub(super) const DEDUP_TAKE: &str = "
INSERT INTO {s}sqs_dedup AS d (queue_id, dedup_id, message_id, sent_at) VALUES ($1, $2, 0, now())
ON CONFLICT (queue_id, dedup_id) DO UPDATE SET message_id = 0, sent_at = now()
    WHERE d.sent_at < now() - $3::int8 * interval '1 millisecond'
RETURNING true";

/// The message holding a deduplication id.
pub(super) const DEDUP_HOLDER: &str = "SELECT message_id FROM {s}sqs_dedup WHERE queue_id = $1 AND dedup_id = $2";

/// Names the message sent with a deduplication id just taken.
pub(super) const DEDUP_SET: &str = "UPDATE {s}sqs_dedup SET message_id = $3 WHERE queue_id = $1 AND dedup_id = $2";

/// Sets the end of current leases to now plus `$4` ms; returns the ids of
/// the messages changed: the messages of `$2` whose receipt in `$3` is
/// current and that are in flight and, with `$5`, every other message in
/// flight in the FIFO groups of those messages, so that the messages of a
/// group that one receiver holds always share one lease end.
pub(super) const SET_VISIBILITY: &str = "
WITH named AS (
    SELECT g.group_key FROM {s}queue_messages g
    WHERE g.queue_id = $1 AND g.id = ANY($2::int8[]) AND NOT g.dead AND g.visible_at > now()
      AND g.receipt = (($3::text[])[array_position($2::int8[], g.id)])::uuid AND g.group_key IS NOT NULL
)
UPDATE {s}queue_messages m SET visible_at = now() + $4::int8 * interval '1 millisecond'
WHERE m.queue_id = $1 AND NOT m.dead AND m.visible_at > now() AND m.receipt IS NOT NULL
  AND ((m.id = ANY($2::int8[])
            AND m.receipt = (($3::text[])[array_position($2::int8[], m.id)])::uuid)
       OR ($5 AND m.id <> ALL($2::int8[]) AND m.group_key IN (SELECT group_key FROM named)))
RETURNING m.id";

/// Messages of queues with SQS settings whose age is past the queue's
/// `retention_seconds`, except those in a current lease: deletes the
/// oldest `$1` of them.
pub(super) const EXPIRE: &str = "
WITH x AS (
    SELECT m.id FROM {s}queue_messages m JOIN {s}sqs_queues s ON s.queue_id = m.queue_id
    WHERE m.enqueued_at < now() - s.retention_seconds * interval '1 second'
      AND NOT (m.receipt IS NOT NULL AND m.visible_at > now())
    ORDER BY m.id
    LIMIT $1
    FOR UPDATE OF m SKIP LOCKED
)
DELETE FROM {s}queue_messages m WHERE m.id = ANY(ARRAY(SELECT id FROM x))
RETURNING m.id, m.queue_id, m.group_key, m.dedup_key, m.dead";

/// Records the first receive of the messages not yet recorded and returns
/// the first receive time of every one of them.
pub(super) const FIRST_RECEIVE: &str = "
WITH ins AS (
    INSERT INTO {s}sqs_first_receive (message_id, received_at)
    SELECT unnest($1::int8[]), now() ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id, received_at
)
SELECT message_id, received_at FROM ins
UNION ALL
SELECT message_id, received_at FROM {s}sqs_first_receive WHERE message_id = ANY($1::int8[])";

/// Records the first receive of the messages not yet recorded, without
/// waiting for the WAL flush: the claims it follows did not wait either,
/// and a record lost to a Postgres crash only makes a later receive
/// record a later time.
pub(super) const FIRST_RECEIVE_RELAXED: &str = "
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO {s}sqs_first_receive (message_id, received_at)
SELECT m, now() FROM unnest($1::int8[]) m, relaxed ON CONFLICT (message_id) DO NOTHING";

/// Forgets deduplication ids taken more than `$1` ms ago.
pub(super) const SWEEP_DEDUP: &str =
    "DELETE FROM {s}sqs_dedup WHERE sent_at < now() - $1::int8 * interval '1 millisecond'";

/// Forgets the first receive times of messages that are gone.
pub(super) const SWEEP_FIRST_RECEIVE: &str =
    "DELETE FROM {s}sqs_first_receive f WHERE f.received_at < now() - interval '1 minute'
       AND NOT EXISTS (SELECT 1 FROM {s}queue_messages m WHERE m.id = f.message_id)";

/// What becomes of one message of an [`crate::queues::Queues::sqs_send`].
enum Plan {
    /// Sent, as this entry of the messages actually sent.
    Send(usize),
    /// A duplicate of an earlier message of the same call.
    SameAs(usize),
    /// A duplicate of this message sent within the window.
    Held(i64),
}

fn map_json(value: serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(value).unwrap_or_default()
}

/// The SQS settings of a queue (defaults when it has none).
pub(crate) async fn sqs_settings(broker: &Broker, queue: &QueueName) -> Result<SqsQueueSettings> {
    let client = broker.client().await?;
    let row = client
        .query_opt(&broker.inner.queues.sql.sqs_get, &[&queue.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownQueue(queue.to_string()))?;
    let Some(fifo) = row.get::<_, Option<bool>>(0) else {
        return Ok(SqsQueueSettings::default());
    };
    Ok(SqsQueueSettings {
        fifo,
        content_based_dedup: row.get(1),
        delay_seconds: row.get(2),
        receive_wait_seconds: row.get(3),
        retention_seconds: row.get(4),
        extra: map_json(row.get(5)),
        tags: map_json(row.get(6)),
        modified_at_ms: to_millis(row.get::<_, SystemTime>(7)),
    })
}

/// Replaces the SQS settings of a queue.
pub(crate) async fn set_sqs_settings(broker: &Broker, queue: &QueueName, settings: &SqsQueueSettings) -> Result<()> {
    let to_json = |m: &BTreeMap<String, String>| serde_json::to_value(m).unwrap_or_default();
    let client = broker.client().await?;
    let row = client
        .query_opt(
            &broker.inner.queues.sql.sqs_set,
            &[
                &queue.as_str(),
                &settings.fifo,
                &settings.content_based_dedup,
                &settings.delay_seconds,
                &settings.receive_wait_seconds,
                &settings.retention_seconds,
                &to_json(&settings.extra),
                &to_json(&settings.tags),
            ],
        )
        .await?;
    row.map(|_| ()).ok_or_else(|| Error::UnknownQueue(queue.to_string()))
}

/// Sends messages in one transaction, each with an optional
/// deduplication id that holds for [`SQS_DEDUP_WINDOW`] after its send
/// (whether or not the message was received or deleted since). A
/// message whose id is held is not sent; its result names the message
/// that holds the id, as a duplicate.
pub(crate) async fn sqs_send(
    broker: &Broker,
    queue: &QueueName,
    messages: &[Message],
    dedup_ids: &[Option<String>],
) -> Result<Vec<Sent>> {
    if dedup_ids.iter().all(Option::is_none) {
        return broker.queues().send_batch(queue, messages).await;
    }
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let mut plan = Vec::with_capacity(messages.len());
    let mut fresh = Vec::new();
    let mut taken: HashMap<&str, usize> = HashMap::new();
    let window = ms(SQS_DEDUP_WINDOW);
    for (i, m) in messages.iter().enumerate() {
        match dedup_ids.get(i).and_then(|d| d.as_deref()) {
            None => {
                plan.push(Plan::Send(fresh.len()));
                fresh.push(m.clone());
            }
            Some(id) => {
                if let Some(&first) = taken.get(id) {
                    plan.push(Plan::SameAs(first));
                } else if tx
                    .query_opt(&broker.inner.queues.sql.sqs_dedup_take, &[&meta.id, &id, &window])
                    .await?
                    .is_some()
                {
                    taken.insert(id, fresh.len());
                    plan.push(Plan::Send(fresh.len()));
                    fresh.push(m.clone());
                } else {
                    let row = tx
                        .query_one(&broker.inner.queues.sql.sqs_dedup_holder, &[&meta.id, &id])
                        .await?;
                    plan.push(Plan::Held(row.get(0)));
                }
            }
        }
    }
    let sent = broker.queues().send_in(&*tx, queue, &fresh).await?;
    for (id, &at) in &taken {
        if let Some(s) = sent.get(at) {
            tx.execute(&broker.inner.queues.sql.sqs_dedup_set, &[&meta.id, id, &s.id])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(plan
        .into_iter()
        .map(|p| match p {
            Plan::Send(at) => sent.get(at).copied().unwrap_or(Sent { id: 0, duplicate: true }),
            Plan::SameAs(at) => Sent {
                id: sent.get(at).map_or(0, |s| s.id),
                duplicate: true,
            },
            Plan::Held(id) => Sent { id, duplicate: true },
        })
        .collect())
}

/// Which leases [`Queues::sqs_set_visibility`](super::Queues::sqs_set_visibility) changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseScope {
    /// The messages named by the receipts.
    Messages,
    /// Those, and every other message in flight in their FIFO groups.
    MessagesAndGroups,
}

/// Makes current leases end `timeout` from now. Returns, in the order
/// of `receipts`, whether each was changed: false when its receipt is
/// not the current lease or the message is no longer in flight. A
/// timeout of zero makes them due at once; a message out of attempts is
/// then dead-lettered by the next claim that finds it.
pub(crate) async fn sqs_set_visibility(
    broker: &Broker,
    queue: &QueueName,
    receipts: &[Receipt],
    timeout: Duration,
    scope: LeaseScope,
) -> Result<Vec<bool>> {
    if timeout > MAX_VISIBILITY_TIMEOUT {
        return Err(Error::invalid(
            Invalid::VisibilityTimeout,
            format!("{timeout:?} is over {MAX_VISIBILITY_TIMEOUT:?}"),
        ));
    }
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let ids: Vec<i64> = receipts.iter().map(Receipt::message_id).collect();
    let tokens: Vec<&str> = receipts.iter().map(Receipt::token).collect();
    let groups = scope == LeaseScope::MessagesAndGroups;
    let client = broker.client().await?;
    let rows = client
        .query(
            &broker.inner.queues.sql.sqs_set_visibility,
            &[&meta.id, &ids, &tokens, &ms(timeout), &groups],
        )
        .await?;
    let changed: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ids.iter().map(|id| changed.contains(id)).collect())
}

/// Records now as the first receive of each message not yet recorded;
/// returns every message's first receive time in milliseconds.
pub(crate) async fn sqs_first_receives(broker: &Broker, message_ids: &[i64]) -> Result<HashMap<i64, i64>> {
    if message_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let client = broker.client().await?;
    let rows = client
        .query(&broker.inner.queues.sql.sqs_first_receive, &[&message_ids])
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i64>(0), to_millis(r.get::<_, SystemTime>(1))))
        .collect())
}

/// Records now as the first receive of each message not yet recorded,
/// without waiting for the WAL flush.
pub(crate) async fn sqs_record_first_receives(broker: &Broker, message_ids: &[i64]) -> Result<()> {
    if message_ids.is_empty() {
        return Ok(());
    }
    let client = broker.client().await?;
    let stmt = client
        .prepare_cached(&broker.inner.queues.sql.sqs_first_receive_relaxed)
        .await?;
    client.execute(&stmt, &[&message_ids]).await?;
    Ok(())
}

/// Most messages one transaction of [`sqs_sweep`] expires.
const EXPIRE_STEP: i64 = 10_000;

/// Deletes messages past their queue's retention period, forgets
/// deduplication ids past their window and first receive times of
/// messages that are gone. Returns how many rows it removed.
pub(crate) async fn sqs_sweep(broker: &Broker) -> Result<u64> {
    let mut expired = 0;
    loop {
        let n = super::membership::expire_sqs(broker, EXPIRE_STEP).await?;
        expired += n;
        if n < EXPIRE_STEP.unsigned_abs() {
            break;
        }
    }
    let client = broker.client().await?;
    let a = client
        .execute(&broker.inner.queues.sql.sqs_sweep_dedup, &[&ms(SQS_DEDUP_WINDOW)])
        .await?;
    let b = client
        .execute(&broker.inner.queues.sql.sqs_sweep_first_receive, &[])
        .await?;
    Ok(expired + a + b)
}
