//! How queue commands word their output: received messages as JSON, and
//! the notes under `queue stats` that say where dead letters are counted.

use pgbroker::queues::QueueInfo;
use pgbroker::{to_millis, QueueName, ReceivedMessage};
use serde_json::{json, Value};

use crate::output::bytes_json;

/// What DEAD-LETTERED and READY mean for this queue, so that the counts of
/// a queue and of its dead-letter queue cannot be misread: a message out of
/// attempts counts in both, as this queue's dead letter and as the
/// dead-letter queue's ready message.
pub fn dead_letter_notes(queue: &QueueName, queues: &[QueueInfo]) -> Vec<String> {
    let mut notes = Vec::new();
    match queues
        .iter()
        .find(|q| &q.name == queue)
        .and_then(|q| q.dead_letter.as_ref())
    {
        Some(dlq) if dlq != queue => notes.push(format!(
            "DEAD-LETTERED: messages of {queue} out of attempts, held in its dead-letter queue {dlq} \
             (counted there as READY)"
        )),
        _ => notes.push(format!(
            "DEAD-LETTERED: messages of {queue} out of attempts, held dead in {queue} itself"
        )),
    }
    let sources: Vec<&str> = queues
        .iter()
        .filter(|q| q.dead_letter.as_ref() == Some(queue) && &q.name != queue)
        .map(|q| q.name.as_str())
        .collect();
    if !sources.is_empty() {
        notes.push(format!(
            "READY: includes the dead letters of {} (this is their dead-letter queue; \
             `pgbroker queue redrive {queue}` sends them back)",
            sources.join(", ")
        ));
    }
    notes
}

/// A received message as the JSON object `queue receive --format json`
/// prints.
pub fn message_json(m: &ReceivedMessage) -> Value {
    let headers: Vec<Value> = m
        .headers
        .iter()
        .map(|h| json!({ "key": h.key, "value": bytes_json(h.value.as_deref()) }))
        .collect();
    json!({
        "id": m.id,
        "receipt": m.receipt.to_string(),
        "attempt": m.attempt,
        "enqueued_at": to_millis(m.enqueued_at),
        "lease_expires_at": to_millis(m.lease_expires_at),
        "body": bytes_json(Some(&m.body)),
        "group": m.group,
        "priority": m.priority,
        "dedup_key": m.dedup_key,
        "headers": headers,
        "last_error": m.last_error,
        "dead_letter_source": m.dead_letter_source.as_ref().map(QueueName::as_str),
        "dead_letter_attempts": m.dead_letter_attempts,
    })
}
