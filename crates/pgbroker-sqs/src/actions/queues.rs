//! Queue actions: create, look up, list, delete, attributes, purge, dead
//! letter sources, tags.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use pgbroker::{Error, QueueName};
use serde_json::{json, Value};

use super::{name_from, Ctx};
use crate::error::{SqsError, SqsResult};
use crate::protocol::{self, Input};
use crate::queue_attrs::{self, Queue};

/// A queue's current settings, read from Postgres.
async fn load(ctx: &Ctx<'_>, name: &QueueName) -> SqsResult<(Queue, pgbroker::queues::QueueInfo)> {
    crate::queue_cache::read(ctx.broker(), name).await
}

/// Checks that a redrive policy's dead-letter queue exists and is of the
/// same kind (FIFO or standard) as the queue.
async fn check_dead_letter(ctx: &Ctx<'_>, q: &Queue) -> SqsResult<()> {
    let Some(dlq) = &q.config.dead_letter else {
        return Ok(());
    };
    let dead = match ctx.broker().queues().sqs_settings(dlq).await {
        Ok(s) => s,
        Err(Error::UnknownQueue(_)) => {
            return Err(SqsError::invalid_parameter(format!(
                "Value for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist: {dlq}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if dead.fifo != q.sqs.fifo {
        return Err(SqsError::invalid_parameter(
            "Value for parameter RedrivePolicy is invalid. Reason: Dead-letter queue must be same type of queue as the source.",
        ));
    }
    Ok(())
}

pub(super) async fn create(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = input.str("QueueName")?;
    protocol::check_queue_name(name)?;
    let qname = name_from(name)?;
    let attrs = input.str_map("Attributes")?;
    let tags = input.str_map("tags")?;
    let fifo = name.ends_with(".fifo");
    if fifo && attrs.get("FifoQueue").map(|v| v.to_ascii_lowercase()) != Some("true".into()) {
        return Err(SqsError::invalid_parameter(
            "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length. Set FifoQueue to true.",
        ));
    }
    let mut q = Queue::new(fifo);
    queue_attrs::apply(&mut q, &attrs, true)?;
    check_dead_letter(ctx, &q).await?;
    q.sqs.tags = tags;
    match ctx.broker().queues().create(&qname, &q.config).await {
        Ok(_) => {
            let set = ctx.broker().queues().set_sqs_settings(&qname, &q.sqs).await;
            if set.is_err() {
                let _ = ctx.broker().queues().delete(&qname).await;
            }
            ctx.changed(&qname);
            set?;
        }
        Err(Error::QueueExists(_)) => {
            // Idempotent when the attributes given match the queue's.
            let (current, _) = load(ctx, &qname).await?;
            let mut wanted = current.clone();
            queue_attrs::apply(&mut wanted, &attrs, false).map_err(|_| exists(name))?;
            if wanted != current || current.sqs.fifo != fifo {
                return Err(exists(name));
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(json!({ "QueueUrl": ctx.url(name) }))
}

fn exists(name: &str) -> SqsError {
    SqsError::queue_exists(format!(
        "A queue already exists with the same name and a different value for attribute(s): {name}"
    ))
}

pub(super) async fn get_url(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = input.str("QueueName")?;
    let qname = name_from(name).map_err(|_| SqsError::no_queue("The specified queue does not exist."))?;
    ctx.broker().queues().info(&qname).await?;
    Ok(json!({ "QueueUrl": ctx.url(name) }))
}

pub(super) async fn list(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let prefix = input.opt_str("QueueNamePrefix")?.unwrap_or_default();
    let max = input.int_in("MaxResults", 1, 1000)?;
    let after = match input.opt_str("NextToken")? {
        Some(t) => Some(
            B64.decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| SqsError::invalid_parameter("Invalid NextToken value."))?,
        ),
        None => None,
    };
    let names: Vec<String> = ctx
        .broker()
        .queues()
        .list()
        .await?
        .into_iter()
        .map(|q| q.name.to_string())
        .filter(|n| n.starts_with(prefix) && protocol::check_queue_name(n).is_ok() && ctx.caller.may_see(n))
        .filter(|n| after.as_ref().is_none_or(|a| n > a))
        .collect();
    let limit = max.map_or(1000, |m| usize::try_from(m).unwrap_or(1000));
    let page: Vec<&String> = names.iter().take(limit).collect();
    let mut out = json!({ "QueueUrls": page.iter().map(|n| ctx.url(n)).collect::<Vec<_>>() });
    if max.is_some() && names.len() > limit {
        if let Some(last) = page.last() {
            out["NextToken"] = json!(B64.encode(last.as_bytes()));
        }
    }
    Ok(out)
}

pub(super) async fn delete(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let q = ctx.queue(input)?;
    let deleted = ctx.broker().queues().delete(&q).await;
    ctx.changed(&q);
    deleted?;
    Ok(json!({}))
}

pub(super) async fn get_attributes(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let names = input.str_list("AttributeNames")?;
    queue_attrs::check_names(&names)?;
    let (q, info) = load(ctx, &name).await?;
    let stats = if queue_attrs::wants_counts(&names) {
        Some(ctx.broker().queues().stats(&name).await?)
    } else {
        None
    };
    let attrs = queue_attrs::report(&q, &info, stats.as_ref(), &|n| ctx.arn(n), &names);
    if attrs.is_empty() {
        return Ok(json!({}));
    }
    Ok(json!({ "Attributes": attrs }))
}

pub(super) async fn set_attributes(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    if input.0.get("Attributes").is_none() {
        return Err(SqsError::missing_parameter(
            "The request must contain the parameter Attributes.",
        ));
    }
    let attrs = input.str_map("Attributes")?;
    let (mut q, _) = load(ctx, &name).await?;
    let before = q.clone();
    queue_attrs::apply(&mut q, &attrs, false)?;
    check_dead_letter(ctx, &q).await?;
    let updated = async {
        if q.config != before.config {
            ctx.broker().queues().update(&name, &q.config).await?;
        }
        ctx.broker().queues().set_sqs_settings(&name, &q.sqs).await
    }
    .await;
    ctx.changed(&name);
    updated?;
    Ok(json!({}))
}

pub(super) async fn purge(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let q = ctx.queue(input)?;
    ctx.broker().queues().purge(&q).await?;
    Ok(json!({}))
}

pub(super) async fn dead_letter_sources(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let q = ctx.queue(input)?;
    ctx.broker().queues().info(&q).await?;
    let max = input.int_in("MaxResults", 1, 1000)?;
    let urls: Vec<String> = ctx
        .broker()
        .queues()
        .list()
        .await?
        .into_iter()
        .filter(|i| i.dead_letter.as_ref() == Some(&q) && ctx.caller.may_see(i.name.as_str()))
        .take(max.map_or(1000, |m| usize::try_from(m).unwrap_or(1000)))
        .map(|i| ctx.url(i.name.as_str()))
        .collect();
    Ok(json!({ "queueUrls": urls }))
}

pub(super) async fn tags(ctx: &Ctx<'_>, action: &str, input: &Input<'_>) -> SqsResult<Value> {
    let name = ctx.queue(input)?;
    let mut sqs = ctx.broker().queues().sqs_settings(&name).await?;
    match action {
        "TagQueue" => {
            let add: BTreeMap<String, String> = input.str_map("Tags")?;
            if add.is_empty() {
                return Err(SqsError::missing_parameter(
                    "The request must contain the parameter Tags.",
                ));
            }
            if let Some(k) = add.keys().find(|k| k.is_empty() || k.len() > 128) {
                return Err(SqsError::invalid_parameter(format!(
                    "Tag key {k:?} must be 1 to 128 characters."
                )));
            }
            sqs.tags.extend(add);
            if sqs.tags.len() > 50 {
                return Err(SqsError::invalid_parameter(
                    "Too many tags added for queue (at most 50).",
                ));
            }
        }
        "UntagQueue" => {
            for k in input.str_list("TagKeys")? {
                sqs.tags.remove(&k);
            }
        }
        _ => {
            if sqs.tags.is_empty() {
                return Ok(json!({}));
            }
            return Ok(json!({ "Tags": sqs.tags }));
        }
    }
    let set = ctx.broker().queues().set_sqs_settings(&name, &sqs).await;
    ctx.changed(&name);
    set?;
    Ok(json!({}))
}
