//! ReceiveMessage: a pgbroker receive (long polling woken by sends), each
//! message with the system and message attributes asked for.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use pgbroker::{to_millis, ReceiveOptions, ReceivedMessage};
use serde_json::{json, Map, Value};

use super::queues::load;
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
    let (q, _) = load(ctx, &name).await?;
    let wait = wait.unwrap_or(i64::from(q.sqs.receive_wait_seconds));
    let options = ReceiveOptions {
        max_messages: usize::try_from(max).unwrap_or(1),
        wait: Duration::from_secs(u64::try_from(wait).unwrap_or(0)),
        visibility_timeout: visibility
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)).max(Duration::from_millis(1))),
    };
    let got = ctx.broker().receive(&name, &options).await?;
    if got.is_empty() {
        return Ok(json!({}));
    }
    crate::metrics::received(got.len());
    let ids: Vec<i64> = got.iter().map(|m| m.id).collect();
    // The first receive of each message is recorded either way; the answer
    // waits for it only when it reports it.
    let reports_first = system
        .iter()
        .any(|n| n == "All" || n == "ApproximateFirstReceiveTimestamp");
    let first = if reports_first {
        ctx.broker().sqs_first_receives(&ids).await?
    } else {
        let broker = ctx.broker().clone();
        tokio::spawn(async move {
            if let Err(e) = broker.sqs_first_receives(&ids).await {
                tracing::debug!(error = %e, "could not record first receives");
            }
        });
        HashMap::new()
    };
    let messages: Vec<Value> = got
        .iter()
        .map(|m| message_json(ctx, m, &system, &wanted_attrs, &first, q.sqs.fifo))
        .collect();
    Ok(json!({ "Messages": messages }))
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
            sys.insert("SequenceNumber".into(), json!(format!("{:020}", m.id)));
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
