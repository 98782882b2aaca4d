//! Message actions: send (one or a batch), delete, change visibility.

use std::time::Duration;

use pgbroker::queues::{LeaseScope, NackOptions};
use pgbroker::{Error, Message, QueueName, Receipt};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::attributes::{self, AttrValue};
use crate::error::{SqsError, SqsResult};
use crate::protocol::{self, Input};
use crate::queue_attrs::Queue;

/// Most bytes of all messages of one batch together.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// A message ready to send, with what its answer reports.
struct Outgoing {
    message: Message,
    dedup: Option<String>,
    size: usize,
    md5_body: String,
    md5_attributes: Option<String>,
}

fn check_key(what: &str, key: &str) -> SqsResult<()> {
    let ok = !key.is_empty() && key.len() <= 128 && key.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(SqsError::invalid_parameter(format!(
            "Value {key:?} for parameter {what} is invalid. Reason: must be 1 to 128 printable ASCII characters."
        )))
    }
}

fn outgoing(e: &Input<'_>, q: &Queue) -> SqsResult<Outgoing> {
    let body = e.str("MessageBody")?;
    protocol::check_body(body)?;
    let attrs = attributes::parse(e.0.get("MessageAttributes"))?;
    let (headers, priority) = attributes::to_headers(&attrs)?;
    let size = body.len()
        + attrs
            .iter()
            .map(|(n, a)| {
                n.len()
                    + a.data_type.len()
                    + match &a.value {
                        AttrValue::Text(s) => s.len(),
                        AttrValue::Bytes(b) => b.len(),
                    }
            })
            .sum::<usize>();
    if size > q.config.max_message_bytes {
        return Err(SqsError::invalid_parameter(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
            q.config.max_message_bytes
        )));
    }
    let delay = e.int_in("DelaySeconds", 0, 900)?;
    let group = e.opt_str("MessageGroupId")?;
    let dedup = e.opt_str("MessageDeduplicationId")?;
    let mut message = Message::new(body.as_bytes().to_vec());
    message.headers = headers;
    message.priority = priority.unwrap_or(0);
    let mut dedup_id = None;
    if q.sqs.fifo {
        if delay.is_some() {
            return Err(SqsError::invalid_parameter(
                "Value for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.",
            ));
        }
        let group = group
            .ok_or_else(|| SqsError::missing_parameter("The request must contain the parameter MessageGroupId."))?;
        check_key("MessageGroupId", group)?;
        message.group = Some(group.to_string());
        let d = match dedup {
            Some(d) => {
                check_key("MessageDeduplicationId", d)?;
                d.to_string()
            }
            None if q.sqs.content_based_dedup => hex::encode(Sha256::digest(body.as_bytes())),
            None => {
                return Err(SqsError::invalid_parameter(
                    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                ))
            }
        };
        message.headers.push(pgbroker::Header {
            key: attributes::DEDUP_HEADER.to_string(),
            value: Some(d.clone().into_bytes()),
        });
        dedup_id = Some(d);
    } else {
        if dedup.is_some() {
            return Err(SqsError::invalid_parameter(
                "Value for parameter MessageDeduplicationId is invalid. Reason: The request include parameter that is not valid for this queue type.",
            ));
        }
        if let Some(g) = group {
            check_key("MessageGroupId", g)?;
        }
        let secs = delay.unwrap_or(i64::from(q.sqs.delay_seconds));
        if secs > 0 {
            message.delay = Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
        }
    }
    Ok(Outgoing {
        message,
        dedup: dedup_id,
        size,
        md5_body: attributes::md5_hex(body.as_bytes()),
        md5_attributes: attributes::md5_of(&attrs),
    })
}

/// The answer fields of one sent message.
fn sent_json(o: &Outgoing, id: i64, fifo: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("MessageId".into(), json!(id.to_string()));
    m.insert("MD5OfMessageBody".into(), json!(o.md5_body));
    if let Some(a) = &o.md5_attributes {
        m.insert("MD5OfMessageAttributes".into(), json!(a));
    }
    if fifo {
        m.insert("SequenceNumber".into(), json!(attributes::sequence_number(id)));
    }
    m
}

async fn send_all(ctx: &Ctx<'_>, name: &QueueName, out: &[&Outgoing]) -> SqsResult<Vec<i64>> {
    if let [one] = out {
        if one.dedup.is_none() {
            // Without a deduplication id, one message is a plain send, which
            // shares its statement with the concurrent sends of this broker.
            let sent = ctx.broker().queues().send(name, &one.message).await?;
            crate::metrics::sent(1);
            return Ok(vec![sent.id]);
        }
    }
    let messages: Vec<Message> = out.iter().map(|o| o.message.clone()).collect();
    let dedup: Vec<Option<String>> = out.iter().map(|o| o.dedup.clone()).collect();
    let sent = ctx.broker().queues().sqs_send(name, &messages, &dedup).await?;
    crate::metrics::sent(out.len());
    Ok(sent.iter().map(|s| s.id).collect())
}

pub(super) async fn send(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let q = ctx.settings(&name).await?;
    let o = outgoing(input, &q)?;
    let ids = send_all(ctx, &name, &[&o]).await?;
    let id = ids.first().copied().unwrap_or_default();
    Ok(Value::Object(sent_json(&o, id, q.sqs.fifo)))
}

fn failed(id: &str, e: &SqsError) -> Value {
    json!({"Id": id, "SenderFault": e.status < 500, "Code": e.shape, "Message": e.message})
}

pub(super) async fn send_batch(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let entries = input.objects("Entries")?;
    let ids = protocol::check_batch(&entries)?;
    let q = ctx.settings(&name).await?;
    let parsed: Vec<SqsResult<Outgoing>> = entries.iter().map(|e| outgoing(&Input(e), &q)).collect();
    let total: usize = parsed.iter().flatten().map(|o| o.size).sum();
    if total > MAX_BATCH_BYTES {
        return Err(SqsError::batch_too_long(format!(
            "Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes. You have sent {total} bytes."
        )));
    }
    let good: Vec<&Outgoing> = parsed.iter().flatten().collect();
    let sent = if good.is_empty() {
        Vec::new()
    } else {
        send_all(ctx, &name, &good).await?
    };
    let (mut ok, mut bad, mut next) = (Vec::new(), Vec::new(), sent.into_iter());
    for (id, p) in ids.iter().zip(&parsed) {
        match p {
            Ok(o) => {
                let mut m = sent_json(o, next.next().unwrap_or_default(), q.sqs.fifo);
                m.insert("Id".into(), json!(id));
                ok.push(Value::Object(m));
            }
            Err(e) => bad.push(failed(id, e)),
        }
    }
    Ok(json!({"Successful": ok, "Failed": bad}))
}

fn receipt(handle: &str) -> SqsResult<Receipt> {
    handle.parse().map_err(|_| {
        SqsError::invalid_receipt(format!(
            "The input receipt handle \"{handle}\" is not a valid receipt handle."
        ))
    })
}

/// Deletes one message; a receipt that is no longer current deletes
/// nothing and succeeds, as in SQS.
async fn delete_one(ctx: &Ctx<'_>, name: &QueueName, r: &Receipt) -> SqsResult<()> {
    match ctx.broker().queues().ack(name, std::slice::from_ref(r)).await {
        Ok(()) | Err(Error::StaleReceipt { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn delete(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let r = receipt(input.str("ReceiptHandle")?)?;
    delete_one(ctx, &name, &r).await?;
    Ok(json!({}))
}

pub(super) async fn delete_batch(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let entries = input.objects("Entries")?;
    let ids = protocol::check_batch(&entries)?;
    ctx.settings(&name).await?;
    let parsed: Vec<SqsResult<Receipt>> = entries
        .iter()
        .map(|e| Input(e).str("ReceiptHandle").and_then(receipt))
        .collect();
    let good: Vec<Receipt> = parsed.iter().flatten().cloned().collect();
    let mut one_by_one = false;
    match ctx.broker().queues().ack(&name, &good).await {
        Ok(()) => {}
        Err(Error::StaleReceipt { .. }) => one_by_one = true,
        Err(e) => return Err(e.into()),
    }
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (id, p) in ids.iter().zip(&parsed) {
        let done = match p {
            Ok(r) if one_by_one => delete_one(ctx, &name, r).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        };
        match done {
            Ok(()) => ok.push(json!({"Id": id})),
            Err(e) => bad.push(failed(id, &e)),
        }
    }
    Ok(json!({"Successful": ok, "Failed": bad}))
}

/// Sets one message's lease to end `secs` from now; 0 releases it. In a
/// FIFO queue the other messages of its group in flight (held by the same
/// receiver) get the same lease end in the same statement, so that the
/// group is not handed to another receiver while one still holds some of
/// it; released that way, a message out of receives is dead-lettered by
/// the next receive that finds it.
async fn change_one(ctx: &Ctx<'_>, name: &QueueName, r: &Receipt, secs: i64, fifo: bool) -> SqsResult<()> {
    let not_inflight = || {
        SqsError::not_inflight("Value for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.")
    };
    if secs == 0 && !fifo {
        let release = NackOptions {
            delay: Some(Duration::ZERO),
            error: None,
        };
        return match ctx
            .broker()
            .queues()
            .nack(name, std::slice::from_ref(r), &release)
            .await
        {
            Ok(()) => Ok(()),
            Err(Error::StaleReceipt { .. }) => Err(not_inflight()),
            Err(e) => Err(e.into()),
        };
    }
    let timeout = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let scope = if fifo {
        LeaseScope::MessagesAndGroups
    } else {
        LeaseScope::Messages
    };
    let changed = ctx
        .broker()
        .queues()
        .sqs_set_visibility(name, std::slice::from_ref(r), timeout, scope)
        .await?;
    if changed.first().copied().unwrap_or(false) {
        Ok(())
    } else {
        Err(not_inflight())
    }
}

fn visibility(e: &Input<'_>) -> SqsResult<i64> {
    e.int_in("VisibilityTimeout", 0, 43_200)?
        .ok_or_else(|| SqsError::missing_parameter("The request must contain the parameter VisibilityTimeout."))
}

pub(super) async fn change_visibility(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let r = receipt(input.str("ReceiptHandle")?)?;
    let secs = visibility(input)?;
    let q = ctx.settings(&name).await?;
    change_one(ctx, &name, &r, secs, q.sqs.fifo).await?;
    Ok(json!({}))
}

pub(super) async fn change_visibility_batch(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let entries = input.objects("Entries")?;
    let ids = protocol::check_batch(&entries)?;
    let q = ctx.settings(&name).await?;
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (id, e) in ids.iter().zip(&entries) {
        let e = Input(e);
        let done = match (e.str("ReceiptHandle").and_then(receipt), visibility(&e)) {
            (Ok(r), Ok(secs)) => change_one(ctx, &name, &r, secs, q.sqs.fifo).await,
            (Err(x), _) | (_, Err(x)) => Err(x),
        };
        match done {
            Ok(()) => ok.push(json!({"Id": id})),
            Err(x) if x.status >= 500 => return Err(x),
            Err(x) => bad.push(failed(id, &x)),
        }
    }
    Ok(json!({"Successful": ok, "Failed": bad}))
}
