//! Receiving: the one-statement claim, receipts, and long polls woken by
//! senders' notifications.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{check_duration, ms, wake_key, QueueMeta, QueueName, MAX_RECEIVE, MAX_VISIBILITY_TIMEOUT};
use crate::broker::notify::ensure_listener;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::headers;
use crate::sql::NO_FLUSH_WAIT;
use crate::types::Header;

/// Lease taken on a message found out of attempts, while it is moved to
/// the dead-letter queue; if the mover dies, the next claim retries.
pub(crate) const REAP_LEASE: Duration = Duration::from_secs(30);

/// The claim: one statement, so a message is never handed out twice.
///
/// Two index ranges supply candidates, each locked with `SKIP LOCKED` so
/// concurrent claims pass each other: fresh heads by priority and id, and
/// due timed heads (delays, backoffs, expired leases) by due time. The best
/// `$2` by priority, then id, get a new random receipt and a lease; each
/// claim counts an attempt. A message already at `$4` attempts gets a short
/// lease instead and comes back marked by `attempts > $4`: the caller moves
/// it to the dead-letter queue.
///
/// When it claims nothing, it answers one row instead, whose last column
/// holds the milliseconds until the queue's next delayed message, retry or
/// lease comes due (NULL if nothing waits): a long poll learns how long it
/// may sleep without another round trip.
///
/// The claim commits without waiting for the WAL to reach disk
/// ([`NO_FLUSH_WAIT`]). A claim lost to a Postgres crash is a lease that
/// ended at once and did not count an attempt: the message is delivered
/// again and the lost receipt is refused, as after any lease expiry.
/// Waiting for the flush made every receive a round trip to the disk.
pub(super) fn claim() -> String {
    [
        CLAIM_PICK,
        ", claimed AS (",
        CLAIM_SET,
        CLAIM_PICKED,
        CLAIM_RETURNING,
        NO_FLUSH_WAIT,
        CLAIM_REST,
    ]
    .concat()
}

/// [`claim`] of one message (`$2` must be 1), for a receive that will not
/// wait: the same candidates, pick and lease, but the update is the
/// statement itself, finds its message by one id (an index scan, not a
/// bitmap over an array) and answers the claimed row only, without the
/// next-due row. It runs in its caller's transaction, whose commit it
/// leaves as the caller set it: unlike [`claim`], it does not relax it.
pub(super) fn claim_one() -> String {
    [
        CLAIM_PICK,
        "\n",
        CLAIM_SET,
        CLAIM_PICKED_ONE,
        CLAIM_RETURNING.trim_end_matches([',', ' ']),
    ]
    .concat()
}

/// The claim's candidates and its pick of the best `$2`: ids, with the
/// partition slot and row address of each for a caller that goes straight
/// to the row.
pub(super) const CLAIM_PICK: &str = "
WITH ready AS (
    SELECT m.id, m.priority, m.slot, m.ctid FROM {s}queue_messages m
    WHERE m.queue_id = $1 AND m.head AND NOT m.timed
    ORDER BY m.priority DESC, m.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT m.id, m.priority, m.slot, m.ctid FROM {s}queue_messages m
    WHERE m.queue_id = $1 AND m.head AND m.timed AND m.visible_at <= now()
    ORDER BY m.visible_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), pick AS (
    SELECT c.id, c.slot, c.ctid FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c
    ORDER BY c.priority DESC, c.id
    LIMIT $2
)";

/// The lease the claim gives: a new receipt, an attempt, the lease's end.
const CLAIM_SET: &str = "
    UPDATE {s}queue_messages m
    SET receipt = gen_random_uuid(),
        timed = true,
        attempts = m.attempts + 1,
        visible_at = now() + CASE WHEN m.attempts < $4 THEN $3::int8 ELSE $5::int8 END * interval '1 millisecond'";

/// The picked messages, as [`claim`] finds them.
const CLAIM_PICKED: &str = "
    WHERE m.id = ANY(ARRAY(SELECT id FROM pick)) AND m.queue_id = $1";

/// The picked message, as [`claim_one`] finds it.
const CLAIM_PICKED_ONE: &str = "
    WHERE m.id = (SELECT id FROM pick) AND m.queue_id = $1";

/// What the claim answers per message, up to its commit mode.
const CLAIM_RETURNING: &str = "
    RETURNING m.id, m.receipt::text AS receipt, m.attempts, m.enqueued_at, m.visible_at, m.priority,
              m.group_key, m.dedup_key, m.last_error,
              CASE WHEN m.dead_source IS NOT NULL
                   THEN (SELECT s.name FROM {s}queues s WHERE s.id = m.dead_source) END AS dead_source,
              m.dead_attempts, m.headers, m.body, ";

/// [`claim`] after its commit mode.
const CLAIM_REST: &str = " AS relaxed
)
SELECT c.*, NULL::int8 FROM claimed c
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT (extract(epoch FROM min(t.visible_at) - now()) * 1000)::int8
        FROM {s}queue_messages t WHERE t.queue_id = $1 AND t.head AND t.timed)
WHERE NOT EXISTS (SELECT 1 FROM claimed)";

/// The index of the claim's next-due column.
const NEXT_DUE_COLUMN: usize = 14;

/// The proof of a lease on one message: required to acknowledge, release
/// or extend it. Each delivery of a message gets a new one, and an older
/// one is refused. Its text form is `<message id>:<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt {
    id: i64,
    token: String,
}

impl Receipt {
    /// The id of the message this receipt is for.
    pub fn message_id(&self) -> i64 {
        self.id
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.token)
    }
}

impl FromStr for Receipt {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(Invalid::Receipt, format!("{s:?}: expected <message id>:<uuid>"));
        let (id, token) = s.split_once(':').ok_or_else(bad)?;
        let id: i64 = id.parse().map_err(|_| bad())?;
        let shape_ok = token.len() == 36
            && token.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if id < 1 || !shape_ok {
            return Err(bad());
        }
        Ok(Receipt {
            id,
            token: token.to_ascii_lowercase(),
        })
    }
}

impl Serialize for Receipt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Receipt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages returned, 1 to [`MAX_RECEIVE`].
    pub max_messages: usize,
    /// How long to wait for a message when none is due; returns as soon as
    /// at least one was claimed.
    pub wait: Duration,
    /// Lease length for these messages instead of the queue's.
    pub visibility_timeout: Option<Duration>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            max_messages: 1,
            wait: Duration::ZERO,
            visibility_timeout: None,
        }
    }
}

impl ReceiveOptions {
    fn validate(&self) -> Result<()> {
        if !(1..=MAX_RECEIVE).contains(&self.max_messages) {
            return Err(Error::invalid(
                Invalid::MaxMessages,
                format!("{} is not between 1 and {MAX_RECEIVE}", self.max_messages),
            ));
        }
        check_duration(Invalid::Wait, self.wait, Duration::ZERO, MAX_VISIBILITY_TIMEOUT)?;
        if let Some(v) = self.visibility_timeout {
            check_duration(
                Invalid::VisibilityTimeout,
                v,
                Duration::from_millis(1),
                MAX_VISIBILITY_TIMEOUT,
            )?;
        }
        Ok(())
    }
}

/// A received message, leased to the receiver until `lease_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id, stable across deliveries and dead-lettering.
    pub id: i64,
    /// The lease's receipt, for ack, nack and extend.
    pub receipt: Receipt,
    /// Which delivery this is, from 1.
    pub attempt: i32,
    /// When the message was first sent.
    pub enqueued_at: SystemTime,
    /// When the lease ends and the message becomes available again.
    pub lease_expires_at: SystemTime,
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

pub(super) fn message_from_row(row: &tokio_postgres::Row) -> Result<ReceivedMessage> {
    let receipt: String = row.get(1);
    let priority: i16 = row.get(5);
    Ok(ReceivedMessage {
        id: row.get(0),
        receipt: Receipt::from_str(&format!("{}:{receipt}", row.get::<_, i64>(0)))?,
        attempt: row.get(2),
        enqueued_at: row.get(3),
        lease_expires_at: row.get(4),
        priority: u8::try_from(priority).unwrap_or(0),
        group: row.get(6),
        dedup_key: row.get(7),
        last_error: row.get(8),
        dead_letter_source: row.get::<_, Option<String>>(9).and_then(|n| QueueName::new(n).ok()),
        dead_letter_attempts: row.get(10),
        headers: headers::from_json(row.get(11)),
        body: row.get(12),
    })
}

/// Claims up to `max_messages` due messages, highest priority first,
/// then oldest, each with a lease of the visibility timeout and a new
/// receipt. With a `wait`, a receive that finds nothing waits for a send
/// (woken by notification within milliseconds, or by a timer when a
/// delay, backoff or lease comes due; it polls at least every 500 ms)
/// and returns as soon as it claimed at least one message, or empty
/// when the wait is over.
///
/// Delivery is at least once: a message whose lease expires is
/// delivered again, with `attempt` one higher.
pub(crate) async fn receive(
    broker: &Broker,
    queue: &QueueName,
    options: &ReceiveOptions,
) -> Result<Vec<ReceivedMessage>> {
    options.validate()?;
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let lease = options.visibility_timeout.map_or(meta.visibility_timeout_ms, ms);
    let claims = &broker.inner.queues.batched(&broker.inner).claims;
    if options.wait.is_zero() {
        return Ok(claims
            .submit((meta.id, lease), (meta.clone(), options.max_messages))
            .await?
            .1);
    }
    ensure_listener(&broker.inner);
    let key = wake_key(meta.id);
    let deadline = Instant::now() + options.wait;
    let wake = broker.inner.wakeups.waiter(key);
    loop {
        // Enabled before the claim, so a send between the claim and the
        // wait still wakes us.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (_, got, next_due) = claims
            .submit((meta.id, lease), (meta.clone(), options.max_messages))
            .await?;
        let now = Instant::now();
        if !got.is_empty() || now >= deadline {
            return Ok(got);
        }
        // A send that committed before the registration sent no NOTIFY.
        if crate::broker::notify::register_waiter(broker, &[key]).await? {
            continue;
        }
        let mut nap = (deadline - now).min(broker.inner.poll_interval);
        if let Some(due) = next_due {
            nap = nap.min(due.max(Duration::from_millis(5)));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// One claim of up to `max` messages on a lease of `lease` ms: the
/// messages, and when nothing was claimed, how long until something of
/// the queue comes due (if anything waits).
pub(super) async fn claim_now(
    broker: &Broker,
    meta: &QueueMeta,
    lease: i64,
    max: usize,
) -> Result<(Vec<ReceivedMessage>, Option<Duration>)> {
    let max = i64::try_from(max.clamp(1, MAX_RECEIVE)).unwrap_or(1);
    let client = broker.client().await?;
    let stmt = client.prepare_cached(&broker.inner.queues.sql.claim).await?;
    let rows = client
        .query(&stmt, &[&meta.id, &max, &lease, &meta.max_attempts, &ms(REAP_LEASE)])
        .await?;
    drop(client);
    let mut messages = Vec::with_capacity(rows.len());
    let mut exhausted = Vec::new();
    let mut next_due = None;
    for row in &rows {
        if row.get::<_, Option<i64>>(0).is_none() {
            next_due = row
                .get::<_, Option<i64>>(NEXT_DUE_COLUMN)
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            continue;
        }
        let m = message_from_row(row)?;
        if m.attempt > meta.max_attempts {
            exhausted.push(m.receipt);
        } else {
            messages.push(m);
        }
    }
    if !exhausted.is_empty() {
        // Out of attempts after its last lease expired. Failing here
        // costs only time: the short lease expires and a later claim
        // tries again.
        if let Err(e) = crate::queues::settle::dead_letter(broker, meta, &exhausted).await {
            tracing::warn!(queue = %meta.name, error = %e, "could not dead-letter expired messages");
        }
    }
    messages.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    Ok((messages, next_due))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_parse_and_print() {
        let r: Receipt = "42:6B1F0C2E-8D9A-4C52-9F1E-1C2D3E4F5A6B".parse().expect("valid");
        assert_eq!(r.message_id(), 42);
        assert_eq!(r.to_string(), "42:6b1f0c2e-8d9a-4c52-9f1e-1c2d3e4f5a6b");
        for bad in [
            "",
            "42",
            "x:6b1f0c2e-8d9a-4c52-9f1e-1c2d3e4f5a6b",
            "0:6b1f0c2e-8d9a-4c52-9f1e-1c2d3e4f5a6b",
            "-1:6b1f0c2e-8d9a-4c52-9f1e-1c2d3e4f5a6b",
            "42:6b1f0c2e8d9a4c529f1e1c2d3e4f5a6b",
            "42:6b1f0c2e-8d9a-4c52-9f1e-1c2d3e4f5a6g",
            "42:'; DROP TABLE queues; --",
        ] {
            assert!(bad.parse::<Receipt>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_are_validated() {
        assert!(ReceiveOptions::default().validate().is_ok());
        for bad in [
            ReceiveOptions {
                max_messages: 0,
                ..ReceiveOptions::default()
            },
            ReceiveOptions {
                max_messages: MAX_RECEIVE + 1,
                ..ReceiveOptions::default()
            },
            ReceiveOptions {
                visibility_timeout: Some(Duration::ZERO),
                ..ReceiveOptions::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
