//! Work queues: at-least-once delivery with leases and receipts, retries
//! with backoff, dead letters, delays, priorities, deduplication keys and
//! FIFO groups, all in a handful of fixed tables keyed by queue id.
//!
//! How a message moves:
//! - [`Queues::send`] inserts it in one statement (with its deduplication
//!   key and group bookkeeping) and wakes waiting receivers.
//! - [`Queues::receive`] claims up to N due messages in one statement
//!   (`FOR UPDATE SKIP LOCKED`), highest priority first, then oldest; each
//!   gets a lease (visible again after the visibility timeout) and a fresh
//!   random receipt.
//! - [`Queues::ack`], [`Queues::nack`] and [`Queues::extend_lease`] act only
//!   when every receipt is the current lease of its message, else change
//!   nothing and answer [`Error::StaleReceipt`].
//! - An expired lease makes the message claimable again; after
//!   `max_attempts` deliveries it moves to the dead-letter queue, or stays
//!   in its queue as dead when there is none. [`Queues::redrive`] brings
//!   dead letters back.
//!
//! Storage stays bounded under churn: messages live in two partitions, and
//! maintenance (run in the background once a broker uses queues, or by
//! [`Maintenance::maintain_queues`](crate::maintenance::Maintenance::maintain_queues)) moves the few live rows out of the older
//! one and TRUNCATEs it, which frees the space of acknowledged messages
//! whatever vacuum can do.

mod api;
mod batched;
mod browse;
mod coalesce;
mod counters;
mod lifecycle;
pub(crate) mod maintain;
mod membership;
mod receive;
mod send;
mod settle;
mod sqs_attrs;
mod sqs_fifo;
pub(crate) mod statements;
mod take;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::sql::Schema;
use crate::types::TopicName;

pub use api::Queues;
pub use browse::{BrowseState, BrowsedMessage, MAX_BODY_PREVIEW, MAX_BROWSE_PAGE};
pub use counters::describe_metrics;
pub use maintain::QueueMaintenance;
pub(crate) use receive::REAP_LEASE;
pub use receive::{Receipt, ReceiveOptions, ReceivedMessage};
pub use send::{Message, Sent};
pub use settle::NackOptions;
pub(crate) use settle::MAX_ERROR_BYTES;
pub use sqs_attrs::{LeaseScope, SqsQueueSettings, SQS_DEDUP_WINDOW};
pub(crate) use statements::Statements;
pub use take::TakenMessage;

/// Highest message priority; 0 is the lowest and the default.
pub const MAX_PRIORITY: u8 = 9;
/// Longest delay of a send, a nack or a retry backoff.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest lease a receive or an extension may take.
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// Most messages one receive returns.
pub const MAX_RECEIVE: usize = 1000;
/// Largest `max_attempts` a queue may set.
pub const MAX_ATTEMPTS_LIMIT: i32 = 1000;
/// Longest deduplication or group key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// Default lease of a received message.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of deliveries before a message is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
/// Default largest message (body and headers).
pub const DEFAULT_QUEUE_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Largest `max_message_bytes` a queue may set.
pub const QUEUE_MAX_MESSAGE_BYTES_LIMIT: usize = 64 << 20;

const QUEUE_CACHE_TTL: Duration = Duration::from_secs(2);

/// A validated queue name: the same rules as a topic name, 1 to 249
/// characters from `[A-Za-z0-9._-]`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(String);

impl QueueName {
    /// Validates `name` as a queue name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        match TopicName::new(name.clone()) {
            Ok(_) => Ok(QueueName(name)),
            Err(Error::Invalid { reason, .. }) => Err(Error::invalid(Invalid::QueueName, reason)),
            Err(e) => Err(e),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueueName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        QueueName::new(s)
    }
}

impl From<QueueName> for String {
    fn from(q: QueueName) -> String {
        q.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Settings of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a received message stays invisible to other receivers
    /// unless acknowledged, released or extended.
    pub visibility_timeout: Duration,
    /// Deliveries before the message is dead-lettered.
    pub max_attempts: i32,
    /// Where messages go after `max_attempts`; without one they stay in the
    /// queue, dead, until redriven or purged.
    pub dead_letter: Option<QueueName>,
    /// Retry delay after the first failed delivery; it doubles with each
    /// further attempt, with jitter (a random 50-100 % of the value).
    pub backoff_base: Duration,
    /// Cap of the retry delay.
    pub backoff_max: Duration,
    /// Keep acknowledged messages in the archive this long; `None` deletes
    /// them at once.
    pub archive_retention: Option<Duration>,
    /// Largest message (body and headers) accepted.
    pub max_message_bytes: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            dead_letter: None,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(15 * 60),
            archive_retention: None,
            max_message_bytes: DEFAULT_QUEUE_MAX_MESSAGE_BYTES,
        }
    }
}

/// Milliseconds of a duration validated to be at most [`MAX_DELAY`] or
/// similar bounds, so the conversion cannot overflow.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks that `d` is within `[min, max]`.
pub(crate) fn check_duration(what: Invalid, d: Duration, min: Duration, max: Duration) -> Result<()> {
    if d < min || d > max {
        return Err(Error::invalid(
            what,
            format!("{d:?} is not between {min:?} and {max:?}"),
        ));
    }
    Ok(())
}

impl QueueConfig {
    fn validate(&self, name: &QueueName) -> Result<()> {
        check_duration(
            Invalid::VisibilityTimeout,
            self.visibility_timeout,
            Duration::from_millis(1),
            MAX_VISIBILITY_TIMEOUT,
        )?;
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(Error::invalid(
                Invalid::MaxAttempts,
                format!("{} is not between 1 and {MAX_ATTEMPTS_LIMIT}", self.max_attempts),
            ));
        }
        check_duration(Invalid::BackoffBase, self.backoff_base, Duration::ZERO, MAX_DELAY)?;
        check_duration(Invalid::BackoffMax, self.backoff_max, self.backoff_base, MAX_DELAY)?;
        if let Some(r) = self.archive_retention {
            check_duration(
                Invalid::ArchiveRetention,
                r,
                Duration::from_millis(1),
                Duration::from_secs(100 * 365 * 24 * 3600),
            )?;
        }
        if !(1..=QUEUE_MAX_MESSAGE_BYTES_LIMIT).contains(&self.max_message_bytes) {
            return Err(Error::invalid(
                Invalid::MaxMessageBytes,
                format!(
                    "{} is not between 1 and {QUEUE_MAX_MESSAGE_BYTES_LIMIT}",
                    self.max_message_bytes
                ),
            ));
        }
        if self.dead_letter.as_ref() == Some(name) {
            return Err(Error::invalid(
                Invalid::DeadLetterQueue,
                "a queue cannot be its own dead-letter queue",
            ));
        }
        Ok(())
    }
}

/// A queue and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    /// Name.
    pub name: QueueName,
    /// Lease of a received message, in milliseconds.
    pub visibility_timeout_ms: i64,
    /// Deliveries before dead-lettering.
    pub max_attempts: i32,
    /// The dead-letter queue, if any.
    pub dead_letter: Option<QueueName>,
    /// First retry delay, in milliseconds.
    pub backoff_base_ms: i64,
    /// Longest retry delay, in milliseconds.
    pub backoff_max_ms: i64,
    /// How long acknowledged messages are archived; `None` when they are not.
    pub archive_retention_ms: Option<i64>,
    /// Largest message accepted.
    pub max_message_bytes: usize,
    /// Creation time, milliseconds since the epoch.
    pub created_at_ms: i64,
}

/// Message counts of a queue at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Due for delivery (including expired leases, and FIFO group members
    /// waiting behind their group's head).
    pub ready: i64,
    /// Received, lease not yet expired.
    pub in_flight: i64,
    /// Waiting for a delay or a retry backoff.
    pub delayed: i64,
    /// Messages of this queue that ran out of attempts and are still held:
    /// in its dead-letter queue, or dead in this queue when it has none.
    pub dead_lettered: i64,
    /// Time since the oldest ready message was sent; `None` when nothing is
    /// ready.
    pub oldest_ready_age_ms: Option<i64>,
}

/// What operations need to know about a queue, cached briefly.
#[derive(Debug, Clone)]
pub(crate) struct QueueMeta {
    pub id: i64,
    pub name: QueueName,
    pub visibility_timeout_ms: i64,
    pub max_attempts: i32,
    pub dead_letter_id: Option<i64>,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub archive: bool,
    pub max_message_bytes: usize,
}

/// Per-broker state of the queue path.
pub(crate) struct QueueState {
    cache: Mutex<HashMap<String, (Instant, Arc<QueueMeta>)>>,
    pub sql: Statements,
    pub maintenance_started: AtomicBool,
    pub maintenance: Mutex<maintain::Schedule>,
    batched: OnceLock<batched::Batched>,
}

impl QueueState {
    /// The coalescers of concurrent sends, claims and acknowledgements,
    /// made on first use.
    pub(crate) fn batched(&self, inner: &Arc<crate::broker::Inner>) -> &batched::Batched {
        self.batched.get_or_init(|| batched::Batched::new(inner))
    }

    /// The state of a broker working in `schema`.
    pub fn new(schema: &Schema) -> QueueState {
        QueueState {
            cache: Mutex::new(HashMap::new()),
            sql: Statements::new(schema),
            batched: OnceLock::new(),
            maintenance_started: AtomicBool::new(false),
            maintenance: Mutex::new(maintain::Schedule::default()),
        }
    }
}

/// The key of a queue in the broker's wake-up map and in `waiters`:
/// negative, so that it never collides with a partition id.
pub(crate) fn wake_key(queue_id: i64) -> i64 {
    -queue_id
}

/// Most receivers one local send wakes.
const MAX_WAKE: usize = 256;

/// Wakes up to `n` of this process's receivers waiting on the queue:
/// one per message that became due, so that a single message does not
/// send every idle worker to an empty claim. (A waiter that is woken
/// but gone passes the wake-up on; other processes hear by NOTIFY.)
pub(crate) fn wake_receivers(broker: &Broker, queue_id: i64, n: usize) {
    let waiter = broker.inner.wakeups.waiter(wake_key(queue_id));
    for _ in 0..n.min(MAX_WAKE) {
        waiter.notify_one();
    }
}

/// Deletes all messages of queue `$1`, each exactly once, through the
/// partial indexes: fresh heads, timed heads, group members behind their
/// head, dead ones. Each set is its own delete by its own index, never a
/// join of ids with the table, whose plan goes wrong on a large queue when
/// the table's statistics are stale. The deleted rows are `gone`.
const DELETE_ALL_OF_QUEUE: &str = "
WITH d1 AS (
    DELETE FROM {s}queue_messages WHERE queue_id = $1 AND head AND NOT timed
    RETURNING id, group_key, dedup_key, dead
), d2 AS (
    DELETE FROM {s}queue_messages WHERE queue_id = $1 AND head AND timed
    RETURNING id, group_key, dedup_key, dead
), d3 AS (
    DELETE FROM {s}queue_messages WHERE queue_id = $1 AND group_key IS NOT NULL AND NOT head AND NOT dead
    RETURNING id, group_key, dedup_key, dead
), d4 AS (
    DELETE FROM {s}queue_messages WHERE queue_id = $1 AND dead
    RETURNING id, group_key, dedup_key, dead
), gone AS (
    SELECT * FROM d1 UNION ALL SELECT * FROM d2 UNION ALL SELECT * FROM d3 UNION ALL SELECT * FROM d4
)";

/// Deletes every message of queue `$1` (when the queue is deleted).
pub(super) fn delete_all() -> String {
    [DELETE_ALL_OF_QUEUE, "\nSELECT count(*) FROM gone"].concat()
}

/// Purge: [`delete_all`], answering what the group and deduplication
/// bookkeeping needs.
pub(super) fn purge() -> String {
    [DELETE_ALL_OF_QUEUE, "\nSELECT id, group_key, dedup_key, dead FROM gone"].concat()
}

pub(crate) fn forget_queue(broker: &Broker, name: &str) {
    if let Ok(mut m) = broker.inner.queues.cache.lock() {
        m.remove(name);
    }
}

/// Queue metadata, from the cache when fresh.
pub(crate) async fn queue_meta(broker: &Broker, name: &QueueName) -> Result<Arc<QueueMeta>> {
    if let Ok(m) = broker.inner.queues.cache.lock() {
        if let Some((at, meta)) = m.get(name.as_str()) {
            if at.elapsed() < QUEUE_CACHE_TTL {
                return Ok(meta.clone());
            }
        }
    }
    let client = broker.client().await?;
    let row = client
        .query_opt(&broker.inner.queues.sql.queue_meta, &[&name.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownQueue(name.to_string()))?;
    let max: i32 = row.get(7);
    let meta = Arc::new(QueueMeta {
        id: row.get(0),
        name: name.clone(),
        visibility_timeout_ms: row.get(1),
        max_attempts: row.get(2),
        dead_letter_id: row.get(3),
        backoff_base_ms: row.get(4),
        backoff_max_ms: row.get(5),
        archive: row.get(6),
        max_message_bytes: usize::try_from(max).unwrap_or(0),
    });
    if let Ok(mut m) = broker.inner.queues.cache.lock() {
        m.insert(name.as_str().to_string(), (Instant::now(), meta.clone()));
    }
    crate::queues::maintain::start_queue_maintenance(broker);
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_topic_rules() {
        assert!(QueueName::new("jobs.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a b", "x'; drop table queues; --", "é", "a\"b"] {
            match QueueName::new(bad) {
                Err(Error::Invalid { what, .. }) => assert_eq!(what, Invalid::QueueName),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(QueueName::new("q".repeat(250)).is_err());
    }

    #[test]
    fn configs_are_validated() {
        let q = QueueName::new("q").expect("valid");
        assert!(QueueConfig::default().validate(&q).is_ok());
        let bad = [
            QueueConfig {
                visibility_timeout: Duration::ZERO,
                ..QueueConfig::default()
            },
            QueueConfig {
                max_attempts: 0,
                ..QueueConfig::default()
            },
            QueueConfig {
                backoff_base: Duration::from_secs(10),
                backoff_max: Duration::from_secs(1),
                ..QueueConfig::default()
            },
            QueueConfig {
                dead_letter: Some(q.clone()),
                ..QueueConfig::default()
            },
            QueueConfig {
                max_message_bytes: 0,
                ..QueueConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate(&q).is_err(), "{c:?}");
        }
    }
}
