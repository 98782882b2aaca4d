//! ReceiveMessage: a pgbroker receive (long polling woken by sends), each
//! message with the system and message attributes asked for.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use pgbroker::queues::ReceiveOptions;
use pgbroker::{to_millis, QueueName, Receipt, ReceivedMessage};
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::attributes;
use crate::error::{SqsError, SqsResult};
use crate::protocol::Input;

/// The system attribute names a receive may ask for.
const SYSTEM: &[&str] = &[
    "All",
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
];

pub(super) async fn receive(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let max = input.int_in("MaxNumberOfMessages", 1, 10)?.unwrap_or(1);
    let visibility = input.int_in("VisibilityTimeout", 0, 43_200)?;
    let wait = input.int_in("WaitTimeSeconds", 0, 20)?;
    let mut system = input.str_list("MessageSystemAttributeNames")?;
    system.extend(input.str_list("AttributeNames")?);
    if let Some(bad) = system.iter().find(|n| !SYSTEM.contains(&n.as_str())) {
        return Err(SqsError::invalid_attribute_name(format!("Unknown Attribute {bad}.")));
    }
    let wanted_attrs = input.str_list("MessageAttributeNames")?;
    let q = ctx.settings(&name).await?;
    let wait = wait.unwrap_or(i64::from(q.sqs.receive_wait_seconds));
    let options = ReceiveOptions {
        max_messages: usize::try_from(max).unwrap_or(1),
        wait: Duration::from_secs(u64::try_from(wait).unwrap_or(0)),
        visibility_timeout: visibility
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)).max(Duration::from_millis(1))),
    };
    let got = receive_retained(ctx, &name, options, q.sqs.retention_seconds).await?;
    if got.is_empty() {
        return Ok(json!({}));
    }
    // SQS hands out several messages of one FIFO group in one receive.
    let got = match (q.sqs.fifo, options.max_messages.checked_sub(got.len())) {
        (true, Some(more)) if more > 0 => {
            let followers = ctx.broker().queues().sqs_claim_followers(&name, &got, more).await?;
            let followers = retained(ctx, &name, followers, q.sqs.retention_seconds).await?;
            in_group_order(got, followers)
        }
        _ => got,
    };
    crate::metrics::received(got.len());
    let ids: Vec<i64> = got.iter().map(|m| m.id).collect();
    // The first receive of each message is recorded either way; the answer
    // waits for it only when it reports it.
    let reports_first = system
        .iter()
        .any(|n| n == "All" || n == "ApproximateFirstReceiveTimestamp");
    let first = if reports_first {
        ctx.broker().queues().sqs_first_receives(&ids).await?
    } else {
        ctx.shared.first_receives.received(ids);
        HashMap::new()
    };
    let messages: Vec<Value> = got
        .iter()
        .map(|m| message_json(ctx, m, &system, &wanted_attrs, &first, q.sqs.fifo))
        .collect();
    Ok(json!({ "Messages": messages }))
}

/// A receive that deletes, instead of handing out, the messages it claimed
/// that are older than the queue's retention period (the sweep deletes the
/// others), and tries again while the wait lasts when nothing else came.
async fn receive_retained(
    ctx: &Ctx<'_>,
    name: &QueueName,
    mut options: ReceiveOptions,
    retention_seconds: i32,
) -> SqsResult<Vec<ReceivedMessage>> {
    let deadline = Instant::now() + options.wait;
    loop {
        let got = ctx.broker().queues().receive(name, &options).await?;
        let claimed = got.len();
        let kept = retained(ctx, name, got, retention_seconds).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if kept.len() == claimed || !kept.is_empty() || left.is_zero() {
            return Ok(kept);
        }
        options.wait = left;
    }
}

/// The messages younger than the retention period; the others, just
/// claimed, are deleted.
async fn retained(
    ctx: &Ctx<'_>,
    name: &QueueName,
    got: Vec<ReceivedMessage>,
    retention_seconds: i32,
) -> SqsResult<Vec<ReceivedMessage>> {
    let retention = Duration::from_secs(u64::try_from(retention_seconds).unwrap_or(0));
    let now = SystemTime::now();
    let (kept, expired): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|m| now.duration_since(m.enqueued_at).unwrap_or_default() < retention);
    if !expired.is_empty() {
        let receipts: Vec<Receipt> = expired.into_iter().map(|m| m.receipt).collect();
        match ctx.broker().queues().ack(name, &receipts).await {
            Ok(()) | Err(pgbroker::Error::StaleReceipt { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(kept)
}

/// The heads and the messages that follow them, each group's together
/// and in order, groups in the order of their heads.
fn in_group_order(heads: Vec<ReceivedMessage>, followers: Vec<ReceivedMessage>) -> Vec<ReceivedMessage> {
    let mut out = Vec::with_capacity(heads.len() + followers.len());
    let mut rest = followers;
    for h in heads {
        let group = h.group.clone();
        out.push(h);
        let (mine, others): (Vec<_>, Vec<_>) = rest.into_iter().partition(|f| group.is_some() && f.group == group);
        out.extend(mine);
        rest = others;
    }
    out.extend(rest);
    out
}

fn message_json(
    ctx: &Ctx<'_>,
    m: &ReceivedMessage,
    system: &[String],
    wanted_attrs: &[String],
    first: &HashMap<i64, i64>,
    fifo: bool,
) -> Value {
    let mut out = Map::new();
    out.insert("MessageId".into(), json!(m.id.to_string()));
    out.insert("ReceiptHandle".into(), json!(m.receipt.to_string()));
    out.insert("MD5OfBody".into(), json!(attributes::md5_hex(&m.body)));
    out.insert("Body".into(), json!(String::from_utf8_lossy(&m.body)));
    let all = system.iter().any(|n| n == "All");
    let want = |n: &str| all || system.iter().any(|s| s == n);
    let mut sys = Map::new();
    if want("SenderId") {
        sys.insert("SenderId".into(), json!(ctx.shared.config.account_id));
    }
    if want("SentTimestamp") {
        sys.insert("SentTimestamp".into(), json!(to_millis(m.enqueued_at).to_string()));
    }
    if want("ApproximateReceiveCount") {
        sys.insert("ApproximateReceiveCount".into(), json!(m.attempt.to_string()));
    }
    if want("ApproximateFirstReceiveTimestamp") {
        let at = first
            .get(&m.id)
            .copied()
            .unwrap_or_else(|| to_millis(SystemTime::now()));
        sys.insert("ApproximateFirstReceiveTimestamp".into(), json!(at.to_string()));
    }
    if fifo {
        if let (true, Some(g)) = (want("MessageGroupId"), &m.group) {
            sys.insert("MessageGroupId".into(), json!(g));
        }
        if want("SequenceNumber") {
            sys.insert("SequenceNumber".into(), json!(attributes::sequence_number(m.id)));
        }
        if let (true, Some(d)) = (want("MessageDeduplicationId"), attributes::dedup_id(&m.headers)) {
            sys.insert("MessageDeduplicationId".into(), json!(d));
        }
    }
    if let (true, Some(src)) = (want("DeadLetterQueueSourceArn"), &m.dead_letter_source) {
        sys.insert("DeadLetterQueueSourceArn".into(), json!(ctx.arn(src.as_str())));
    }
    if !sys.is_empty() {
        out.insert("Attributes".into(), Value::Object(sys));
    }
    let attrs = attributes::select(&attributes::from_headers(&m.headers), wanted_attrs);
    if let Some(md5) = attributes::md5_of(&attrs) {
        out.insert("MD5OfMessageAttributes".into(), json!(md5));
        out.insert("MessageAttributes".into(), attributes::to_json(&attrs));
    }
    Value::Object(out)
}
