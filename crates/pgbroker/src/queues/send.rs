//! Sending: one statement per batch, with deduplication keys and FIFO
//! group bookkeeping, on the pool or inside a caller's transaction.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_postgres::GenericClient;

use super::{check_duration, ms, QueueMeta, QueueName, MAX_DELAY, MAX_KEY_BYTES, MAX_PRIORITY};
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::headers;
use crate::types::Header;

/// The send statement. Ids are taken in input order, so a batch keeps its
/// order in a FIFO group. A deduplication key is registered in
/// `queue_dedup`; when it is taken, the upsert returns the message that
/// holds it (also one committed after this statement began) and the new
/// message is not inserted. The group upsert locks each group's row until
/// commit, in key order: a message is its group's head when the group was
/// empty. A NOTIFY goes out only when a broker other than `$10` waits on
/// the queue.
pub(super) const SEND: &str = "
WITH input AS MATERIALIZED (
    SELECT i.ord, nextval('{s}queue_message_ids') AS id, i.body, i.headers, i.priority, i.dedup, i.grp,
           greatest(now(), coalesce(i.deliver_at, now() + coalesce(i.delay_ms, 0) * interval '1 millisecond'))
             AS visible_at
    FROM unnest($2::bytea[], $3::jsonb[], $4::int2[], $5::int8[], $6::timestamptz[], $7::text[], $8::text[])
         WITH ORDINALITY AS i(body, headers, priority, delay_ms, deliver_at, dedup, grp, ord)
    WHERE EXISTS (SELECT 1 FROM {s}queues WHERE id = $1)
), reg AS (
    INSERT INTO {s}queue_dedup AS d (queue_id, dedup_key, message_id)
    SELECT $1, f.dedup, f.id
    FROM (SELECT DISTINCT ON (dedup) dedup, id FROM input WHERE dedup IS NOT NULL ORDER BY dedup, ord) f
    ORDER BY f.dedup
    ON CONFLICT (queue_id, dedup_key) DO UPDATE SET message_id = d.message_id
    RETURNING d.dedup_key, d.message_id
), msgs AS MATERIALIZED (
    SELECT i.* FROM input i LEFT JOIN reg r ON r.dedup_key = i.dedup
    WHERE i.dedup IS NULL OR r.message_id = i.id
), counts AS MATERIALIZED (
    SELECT grp, count(*)::int AS n, min(ord) AS first FROM msgs WHERE grp IS NOT NULL GROUP BY grp
), grp AS (
    INSERT INTO {s}queue_groups AS g (queue_id, group_key, size)
    SELECT $1, c.grp, c.n FROM counts c ORDER BY c.grp
    ON CONFLICT (queue_id, group_key) DO UPDATE SET size = g.size + EXCLUDED.size
    RETURNING g.group_key, g.size
), ins AS (
    INSERT INTO {s}queue_messages (id, queue_id, visible_at, enqueued_at, slot, priority, head, timed,
                                   group_key, dedup_key, headers, body)
    SELECT m.id, $1, m.visible_at, now(), (SELECT current FROM {s}queue_rotation), m.priority,
           m.grp IS NULL OR (g.size = c.n AND m.ord = c.first), m.visible_at > now(),
           m.grp, m.dedup, m.headers, m.body
    FROM msgs m LEFT JOIN counts c ON c.grp = m.grp LEFT JOIN grp g ON g.group_key = m.grp
    RETURNING id
)
SELECT i.ord, coalesce(r.message_id, i.id), r.message_id IS NOT NULL AND r.message_id <> i.id,
       (SELECT count(*) FROM ins),
       (SELECT pg_notify($9, (-$1::int8)::text)
        WHERE EXISTS (SELECT 1 FROM {s}waiters w
                      WHERE w.partition_id = -$1::int8 AND w.until > now() AND w.listener <> $10))
FROM input i LEFT JOIN reg r ON r.dedup_key = i.dedup
ORDER BY i.ord";

/// The start of a plain send, up to the rows it inserts (`u`, with
/// `body`, `headers`, `priority`, `delay_ms` and `deliver_at`).
macro_rules! plain_insert {
    () => {
        "
WITH ins AS (
    INSERT INTO {s}queue_messages (id, queue_id, visible_at, enqueued_at, slot, priority, head, timed,
                                   headers, body)
    SELECT nextval('{s}queue_message_ids'), $1, i.visible_at, now(), (SELECT current FROM {s}queue_rotation),
           i.priority, true, i.visible_at > now(), i.headers, i.body
    FROM (SELECT u.body, u.headers, u.priority,
                 greatest(now(), coalesce(u.deliver_at, now() + coalesce(u.delay_ms, 0) * interval '1 millisecond'))
                   AS visible_at
          FROM "
    };
}

/// Whether a plain send's queue exists and it has no keys.
macro_rules! plain_where {
    ($keys:literal) => {
        concat!(
            "
          WHERE EXISTS (SELECT 1 FROM {s}queues WHERE id = $1) AND $7::",
            $keys,
            " IS NULL AND $8::",
            $keys,
            " IS NULL"
        )
    };
}

/// A plain send's notification, sent only when a broker other than `$10`
/// waits on the queue.
macro_rules! plain_notify {
    () => {
        "(SELECT pg_notify($9, (-$1::int8)::text)
        WHERE EXISTS (SELECT 1 FROM {s}waiters w
                      WHERE w.partition_id = -$1::int8 AND w.until > now() AND w.listener <> $10))"
    };
}

/// The send statement for batches without deduplication keys or groups:
/// a plain insert, ids in input order. Same parameters as [`SEND`] but for
/// the keys, which it ignores (`$7`, `$8` are bound as NULL arrays).
pub(super) const SEND_PLAIN: &str = concat!(
    plain_insert!(),
    "unnest($2::bytea[], $3::jsonb[], $4::int2[], $5::int8[], $6::timestamptz[])
               WITH ORDINALITY AS u(body, headers, priority, delay_ms, deliver_at, ord)",
    plain_where!("text[]"),
    "
          ORDER BY u.ord) i
    RETURNING id
)
SELECT 0::int8, i.id, false, ",
    plain_notify!(),
    "
FROM (SELECT id FROM ins ORDER BY id) i"
);

/// [`SEND_PLAIN`] of one message, for the SQL functions: the same
/// parameters, each a single value instead of an array. Answers the new
/// message's id (no row if the queue is gone).
pub(super) const SEND_ONE: &str = concat!(
    plain_insert!(),
    "(SELECT $2::bytea, $3::jsonb, $4::int2, $5::int8, $6::timestamptz)
               AS u(body, headers, priority, delay_ms, deliver_at)",
    plain_where!("text"),
    ") i
    RETURNING id
)
SELECT i.id, ",
    plain_notify!(),
    "
FROM ins i"
);

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The payload.
    pub body: Vec<u8>,
    /// Headers in order; keys may repeat.
    pub headers: Vec<Header>,
    /// 0 (default) to [`MAX_PRIORITY`]; higher is delivered first.
    pub priority: u8,
    /// Deliver no earlier than this long after the send.
    pub delay: Option<Duration>,
    /// Deliver no earlier than this time (exclusive with `delay`).
    pub deliver_at: Option<SystemTime>,
    /// While a message with this key is in the queue (not yet acknowledged,
    /// dead-lettered or purged), another send with the key is a no-op that
    /// returns the first message's id.
    pub dedup_key: Option<String>,
    /// Messages of one group are delivered one at a time, in send order.
    pub group: Option<String>,
}

impl Message {
    /// A message with this body and default settings.
    pub fn new(body: impl Into<Vec<u8>>) -> Message {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: u8) -> Message {
        self.priority = priority;
        self
    }

    /// Sets a delay.
    pub fn with_delay(mut self, delay: Duration) -> Message {
        self.delay = Some(delay);
        self
    }

    /// Sets the earliest delivery time.
    pub fn with_deliver_at(mut self, at: SystemTime) -> Message {
        self.deliver_at = Some(at);
        self
    }

    /// Sets the deduplication key.
    pub fn with_dedup_key(mut self, key: impl Into<String>) -> Message {
        self.dedup_key = Some(key.into());
        self
    }

    /// Sets the FIFO group.
    pub fn with_group(mut self, group: impl Into<String>) -> Message {
        self.group = Some(group.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Message {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Bytes this message counts against the queue's maximum.
    pub fn size(&self) -> usize {
        let h: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
            .sum();
        self.body.len() + h
    }

    fn validate(&self, max_bytes: usize) -> Result<()> {
        if self.priority > MAX_PRIORITY {
            return Err(Error::invalid(
                Invalid::Priority,
                format!("{} is not between 0 and {MAX_PRIORITY}", self.priority),
            ));
        }
        if let Some(d) = self.delay {
            if self.deliver_at.is_some() {
                return Err(Error::invalid(
                    Invalid::Delay,
                    "give a delay or a delivery time, not both",
                ));
            }
            check_duration(Invalid::Delay, d, Duration::ZERO, MAX_DELAY)?;
        }
        if let Some(at) = self.deliver_at {
            if at.duration_since(SystemTime::now()).is_ok_and(|d| d > MAX_DELAY) {
                return Err(Error::invalid(
                    Invalid::DeliveryTime,
                    format!("more than {MAX_DELAY:?} from now"),
                ));
            }
        }
        check_key(Invalid::DeduplicationKey, self.dedup_key.as_deref())?;
        check_key(Invalid::GroupKey, self.group.as_deref())?;
        if let Some(h) = self.headers.iter().find(|h| h.key.contains('\0')) {
            return Err(Error::invalid(
                Invalid::HeaderKey,
                format!("{:?} contains a NUL character", h.key),
            ));
        }
        let size = self.size();
        if size > max_bytes {
            return Err(Error::MessageTooLarge { size, max: max_bytes });
        }
        Ok(())
    }
}

/// Checks a deduplication or group key: 1 to [`MAX_KEY_BYTES`] bytes, no
/// control characters.
pub(crate) fn check_key(what: Invalid, key: Option<&str>) -> Result<()> {
    let Some(key) = key else { return Ok(()) };
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(
            what,
            format!("must be 1 to {MAX_KEY_BYTES} bytes long, got {}", key.len()),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(Error::invalid(what, "control characters are not allowed"));
    }
    Ok(())
}

/// The outcome of sending one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sent {
    /// The message's id; for a duplicate, the id of the message holding the
    /// deduplication key.
    pub id: i64,
    /// True when the send was a no-op because of the deduplication key.
    pub duplicate: bool,
}

/// Columns of one batch, in the shape the send statement binds.
struct Columns<'a> {
    bodies: Vec<&'a [u8]>,
    headers: Vec<Option<Value>>,
    priorities: Vec<i16>,
    delays: Vec<Option<i64>>,
    deliver_at: Vec<Option<SystemTime>>,
    dedup: Vec<Option<&'a str>>,
    groups: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    /// True when no message has a deduplication key or a group.
    fn plain(messages: &[Message]) -> bool {
        messages.iter().all(|m| m.dedup_key.is_none() && m.group.is_none())
    }

    fn new(messages: &'a [Message]) -> Self {
        Columns {
            bodies: messages.iter().map(|m| m.body.as_slice()).collect(),
            headers: messages.iter().map(|m| headers::to_json(&m.headers)).collect(),
            priorities: messages.iter().map(|m| i16::from(m.priority)).collect(),
            delays: messages.iter().map(|m| m.delay.map(ms)).collect(),
            deliver_at: messages.iter().map(|m| m.deliver_at).collect(),
            dedup: messages.iter().map(|m| m.dedup_key.as_deref()).collect(),
            groups: messages.iter().map(|m| m.group.as_deref()).collect(),
        }
    }
}

/// Sends one message; returns its id, or the id of the message holding
/// its deduplication key.
///
/// Concurrent sends of this process to one queue share statements (see
/// `coalesce`); each still returns only once its message is committed.
pub(crate) async fn send(broker: &Broker, queue: &QueueName, message: &Message) -> Result<Sent> {
    let meta = crate::queues::queue_meta(broker, queue).await?;
    message.validate(meta.max_message_bytes)?;
    broker
        .inner
        .queues
        .batched(&broker.inner)
        .sends
        .submit(meta.id, (meta, message.clone()))
        .await
}

/// Sends messages in one statement and one transaction: all of them or
/// none. Returns, in input order, each message's id (for a duplicate,
/// the id of the message holding its key).
pub(crate) async fn send_batch(broker: &Broker, queue: &QueueName, messages: &[Message]) -> Result<Vec<Sent>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let meta = crate::queues::queue_meta(broker, queue).await?;
    send_now(broker, &meta, messages).await
}

/// Sends messages in one statement on a pooled connection and wakes
/// this process's receivers.
pub(super) async fn send_now(broker: &Broker, meta: &QueueMeta, messages: &[Message]) -> Result<Vec<Sent>> {
    let client = broker.client().await?;
    let stmt = client.prepare_cached(send_sql(broker, messages)).await?;
    let listener = broker.inner.wakeups.listener_id().to_string();
    let sent = send_on(broker, &**client, &stmt, meta, messages, &listener).await?;
    drop(client);
    crate::queues::wake_receivers(broker, meta.id, sent.iter().filter(|s| !s.duplicate).count());
    Ok(sent)
}

/// Sends inside the caller's open transaction (the transactional
/// outbox): the messages exist if and only if that transaction commits.
/// Waiting receivers are woken by NOTIFY at the commit.
///
/// Messages with a FIFO group or a deduplication key hold that group's
/// or key's row lock until the caller commits; keep such transactions
/// short. Use the default READ COMMITTED isolation.
pub(crate) async fn send_in(
    broker: &Broker,
    client: &impl GenericClient,
    queue: &QueueName,
    messages: &[Message],
) -> Result<Vec<Sent>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let meta = crate::queues::queue_meta(broker, queue).await?;
    // Another statement in the caller's transaction; the commit is not
    // ours to see, so every waiter, ours too, must hear of it by NOTIFY.
    send_on(broker, client, send_sql(broker, messages), &meta, messages, "").await
}

/// The lean statement when no message has a key or a group.
fn send_sql<'a>(broker: &'a Broker, messages: &[Message]) -> &'a str {
    let sql = &broker.inner.queues.sql;
    if Columns::plain(messages) {
        &sql.send_plain
    } else {
        &sql.send
    }
}

async fn send_on<S>(
    broker: &Broker,
    client: &impl GenericClient,
    stmt: &S,
    meta: &QueueMeta,
    messages: &[Message],
    listener: &str,
) -> Result<Vec<Sent>>
where
    S: tokio_postgres::ToStatement + Sync + Send + ?Sized,
{
    for m in messages {
        m.validate(meta.max_message_bytes)?;
    }
    let cols = Columns::new(messages);
    // The plain statement takes NULL for the key columns.
    let plain = Columns::plain(messages);
    let dedup = (!plain).then_some(&cols.dedup);
    let groups = (!plain).then_some(&cols.groups);
    let rows = client
        .query(
            stmt,
            &[
                &meta.id,
                &cols.bodies,
                &cols.headers,
                &cols.priorities,
                &cols.delays,
                &cols.deliver_at,
                &dedup,
                &groups,
                &broker.inner.channel,
                &listener,
            ],
        )
        .await?;
    if rows.is_empty() {
        crate::queues::forget_queue(broker, meta.name.as_str());
        return Err(Error::UnknownQueue(meta.name.to_string()));
    }
    Ok(rows
        .iter()
        .map(|r| Sent {
            id: r.get(1),
            duplicate: r.get(2),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_validated() {
        let ok = Message::new("x").with_priority(9).with_delay(Duration::from_secs(1));
        assert!(ok.validate(10).is_ok());
        let bad = [
            Message::new("x").with_priority(10),
            Message::new("x").with_delay(MAX_DELAY + Duration::from_secs(1)),
            Message::new("x")
                .with_delay(Duration::ZERO)
                .with_deliver_at(SystemTime::now()),
            Message::new("x").with_deliver_at(SystemTime::now() + MAX_DELAY * 2),
            Message::new("x").with_dedup_key(""),
            Message::new("x").with_group("a\nb"),
            Message::new("x").with_group("g".repeat(256)),
            Message::new("x").with_header("a\0", "v"),
            Message::new("12345678901"),
        ];
        for m in bad {
            assert!(m.validate(10).is_err(), "{m:?}");
        }
    }
}
