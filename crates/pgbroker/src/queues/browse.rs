//! Looking at a queue's messages without touching them: one page of
//! ready, in-flight, delayed or dead messages at a time, in id order,
//! with bodies cut to a preview. Nothing is locked or claimed, so a page
//! is a snapshot that may be stale by the time it is read.

use std::time::SystemTime;

use serde::Serialize;

use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::headers;
use crate::queues::QueueName;
use crate::types::Header;

/// Most messages one page returns.
pub const MAX_BROWSE_PAGE: usize = 500;

/// Longest body preview one browsed message carries, in bytes.
pub const MAX_BODY_PREVIEW: usize = 64 << 10;

/// Which messages of a queue to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrowseState {
    /// Due for delivery (including expired leases).
    Ready,
    /// Received, lease not yet expired.
    InFlight,
    /// Waiting for a delay or a retry backoff.
    Delayed,
    /// Dead letters held in this queue: out of attempts here (a queue
    /// without a dead-letter queue), or moved here from another queue.
    Dead,
}

impl BrowseState {
    /// The state's name: `ready`, `in_flight`, `delayed` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrowseState::Ready => "ready",
            BrowseState::InFlight => "in_flight",
            BrowseState::Delayed => "delayed",
            BrowseState::Dead => "dead",
        }
    }
}

impl std::str::FromStr for BrowseState {
    type Err = Error;

    fn from_str(s: &str) -> Result<BrowseState> {
        [
            BrowseState::Ready,
            BrowseState::InFlight,
            BrowseState::Delayed,
            BrowseState::Dead,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
        .ok_or_else(|| {
            Error::invalid(
                Invalid::BrowseState,
                format!("{s:?} is not one of ready, in_flight, delayed, dead"),
            )
        })
    }
}

/// One message seen by [`crate::queues::Queues::browse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsedMessage {
    /// Message id.
    pub id: i64,
    /// When it was sent.
    pub enqueued_at: SystemTime,
    /// When it is (or was) due: the end of a lease or a delay.
    pub visible_at: SystemTime,
    /// Deliveries so far.
    pub attempts: i32,
    /// For a dead letter: the deliveries it had when it ran out.
    pub dead_attempts: Option<i32>,
    /// Priority, 0 to 9.
    pub priority: i16,
    /// FIFO group key, if any.
    pub group: Option<String>,
    /// The error given with its last nack, if any.
    pub last_error: Option<String>,
    /// For a dead letter moved here: the queue it died in.
    pub dead_letter_source: Option<QueueName>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// The body's full size in bytes.
    pub body_bytes: i64,
    /// The body's first bytes, at most the preview length asked for.
    pub body_preview: Vec<u8>,
}

/// A page of `queue`'s messages in `state` with ids above `after`, at most
/// `limit` of them (1 to [`MAX_BROWSE_PAGE`]), bodies cut to `preview`
/// bytes (at most [`MAX_BODY_PREVIEW`]).
pub(crate) async fn browse(
    broker: &Broker,
    queue: &QueueName,
    state: BrowseState,
    after: i64,
    limit: usize,
    preview: usize,
) -> Result<Vec<BrowsedMessage>> {
    if !(1..=MAX_BROWSE_PAGE).contains(&limit) {
        return Err(Error::invalid(
            Invalid::MaxMessages,
            format!("a page holds 1 to {MAX_BROWSE_PAGE} messages, not {limit}"),
        ));
    }
    let preview = i32::try_from(preview.min(MAX_BODY_PREVIEW)).unwrap_or(0);
    let limit = i64::try_from(limit).unwrap_or(1);
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let client = broker.client().await?;
    let rows = client
        .query(
            &broker.inner.queues.sql.browse,
            &[&meta.id, &state.as_str(), &after, &limit, &preview],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let source: Option<String> = r.get(8);
            Ok(BrowsedMessage {
                id: r.get(0),
                enqueued_at: r.get(1),
                visible_at: r.get(2),
                attempts: r.get(3),
                dead_attempts: r.get(4),
                priority: r.get(5),
                group: r.get(6),
                last_error: r.get(7),
                dead_letter_source: source.map(QueueName::new).transpose()?,
                headers: headers::from_json(r.get(9)),
                body_bytes: r.get(10),
                body_preview: r.get(11),
            })
        })
        .collect()
}

/// The browse statement: `$1` queue id, `$2` state name, `$3` the id to
/// start after, `$4` the page size, `$5` the preview length.
pub(super) const BROWSE: &str = "
SELECT m.id, m.enqueued_at, m.visible_at, m.attempts, m.dead_attempts, m.priority, m.group_key,
       m.last_error, (SELECT q.name FROM {s}queues q WHERE q.id = m.dead_source AND m.queue_id <> m.dead_source),
       m.headers, octet_length(m.body)::int8, substring(m.body FROM 1 FOR $5)
FROM {s}queue_messages m
WHERE m.queue_id = $1 AND m.id > $3
  AND CASE $2::text
        WHEN 'ready' THEN NOT m.dead AND m.visible_at <= now()
        WHEN 'in_flight' THEN NOT m.dead AND m.receipt IS NOT NULL AND m.visible_at > now()
        WHEN 'delayed' THEN NOT m.dead AND m.receipt IS NULL AND m.visible_at > now()
        WHEN 'dead' THEN m.dead OR m.dead_source IS NOT NULL
        ELSE false
      END
ORDER BY m.id
LIMIT $4";
