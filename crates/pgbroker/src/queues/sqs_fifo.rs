//! Receiving several messages of one FIFO group at once, as SQS does for a
//! FIFO queue when a receive asks for more than one message.
//!
//! The claim hands out group heads only, so one receive gets at most one
//! message per group. After it, [`sqs_claim_followers`] leases the
//! messages that follow each claimed head in its group, in order, up to
//! the number asked for, with the head's lease end. They are not heads, so
//! no claim can take them; when the head is acknowledged the oldest
//! remaining one becomes head still under that lease. Because the messages
//! of a group that one receiver holds share one lease end (a visibility
//! change applies to all of them, see
//! [`super::sqs_attrs::LeaseScope`]), the group's head becomes claimable
//! only when none of them is held any more: two receivers never hold
//! messages of one group at the same time.

use super::receive::message_from_row;
use super::{QueueName, ReceivedMessage};
use crate::broker::Broker;
use crate::error::Result;

/// Leases, after the heads `$2` of queue `$1` (just claimed, in the order
/// given), the messages that follow each in its group, oldest first: at
/// most `$3` in all, the first group's before the next one's. A group's
/// run stops at the first message that is not available (delayed, still
/// in flight) or out of attempts (it is left for the claim to dead-letter
/// once it is head, `$4` being the queue's attempts). Each gets a new
/// receipt, one more attempt and the head's lease end. Columns as the
/// claim's.
pub(super) const FOLLOWERS: &str = "
WITH h AS (
    SELECT m.id AS head_id, m.group_key, m.visible_at, array_position($2::int8[], m.id) AS pos
    FROM {s}queue_messages m
    WHERE m.queue_id = $1 AND m.id = ANY($2::int8[]) AND m.head AND m.group_key IS NOT NULL
      AND m.receipt IS NOT NULL AND m.visible_at > now()
), cand AS (
    SELECT f.id, h.visible_at, h.pos,
           bool_and(f.visible_at <= now() AND f.attempts < $4) OVER (PARTITION BY h.head_id ORDER BY f.id) AS ok
    FROM h, LATERAL (
        SELECT m.id, m.visible_at, m.attempts FROM {s}queue_messages m
        WHERE m.queue_id = $1 AND m.group_key = h.group_key AND NOT m.head AND NOT m.dead
        ORDER BY m.id
        LIMIT $3) f
), pick AS (
    SELECT id, visible_at FROM cand WHERE ok ORDER BY pos, id LIMIT $3
)
UPDATE {s}queue_messages m
SET receipt = gen_random_uuid(), timed = true, attempts = m.attempts + 1, visible_at = p.visible_at
FROM pick p
WHERE m.id = p.id AND m.queue_id = $1 AND NOT m.head
RETURNING m.id, m.receipt::text AS receipt, m.attempts, m.enqueued_at, m.visible_at, m.priority,
          m.group_key, m.dedup_key, m.last_error,
          CASE WHEN m.dead_source IS NOT NULL
               THEN (SELECT s.name FROM {s}queues s WHERE s.id = m.dead_source) END AS dead_source,
          m.dead_attempts, m.headers, m.body";

/// Leases up to `max` messages that follow the just received `heads` in
/// their FIFO groups (see [`FOLLOWERS`]). Returns them in the order to
/// hand out: by head, then oldest first.
pub(crate) async fn sqs_claim_followers(
    broker: &Broker,
    queue: &QueueName,
    heads: &[ReceivedMessage],
    max: usize,
) -> Result<Vec<ReceivedMessage>> {
    let grouped: Vec<i64> = heads.iter().filter(|m| m.group.is_some()).map(|m| m.id).collect();
    if grouped.is_empty() || max == 0 {
        return Ok(Vec::new());
    }
    let meta = crate::queues::queue_meta(broker, queue).await?;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let client = broker.client().await?;
    let rows = client
        .query(
            &broker.inner.queues.sql.sqs_followers,
            &[&meta.id, &grouped, &limit, &meta.max_attempts],
        )
        .await?;
    let mut out = rows.iter().map(message_from_row).collect::<Result<Vec<_>>>()?;
    let pos = |m: &ReceivedMessage| {
        heads
            .iter()
            .position(|h| h.group.is_some() && h.group == m.group)
            .unwrap_or(usize::MAX)
    };
    out.sort_by_key(|m| (pos(m), m.id));
    Ok(out)
}
