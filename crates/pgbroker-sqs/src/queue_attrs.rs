//! Queue attributes: SQS's names and ranges, mapped onto pgbroker's queue
//! settings ([`QueueConfig`]) and the SQS settings kept beside them
//! ([`SqsQueueSettings`]).
//!
//! - `VisibilityTimeout` is the queue's visibility timeout (0 becomes 1 ms).
//! - `RedrivePolicy` sets `max_attempts` to `maxReceiveCount` and the
//!   dead-letter queue; without one, `max_attempts` is pgbroker's maximum
//!   ([`pgbroker::MAX_ATTEMPTS_LIMIT`]) and no dead-letter queue.
//! - `MaximumMessageSize` is `max_message_bytes` (body and attributes).
//! - Retries after `ChangeMessageVisibility` to 0 come due at once: the
//!   retry backoff of queues created here is zero.

use std::collections::BTreeMap;
use std::time::Duration;

use pgbroker::{QueueConfig, QueueInfo, QueueName, QueueStats, SqsQueueSettings};
use serde_json::{Map, Value};

use crate::error::{SqsError, SqsResult};

/// Every attribute name `GetQueueAttributes` knows.
pub const NAMES: &[&str] = &[
    "Policy",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "ApproximateNumberOfMessagesDelayed",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
    "SqsManagedSseEnabled",
];

/// Attributes kept as given.
const KEPT: &[&str] = &[
    "Policy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
];
/// Attributes kept as given, FIFO queues only.
const KEPT_FIFO: &[&str] = &["DeduplicationScope", "FifoThroughputLimit"];

/// Default `MaximumMessageSize`.
pub const DEFAULT_MAX_SIZE: usize = 1 << 20;

/// A queue's pgbroker config and SQS settings together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// pgbroker's settings.
    pub config: QueueConfig,
    /// The SQS-only settings.
    pub sqs: SqsQueueSettings,
}

impl Queue {
    /// A new queue's settings before its attributes apply.
    pub fn new(fifo: bool) -> Queue {
        Queue {
            config: QueueConfig {
                visibility_timeout: Duration::from_secs(30),
                max_attempts: pgbroker::MAX_ATTEMPTS_LIMIT,
                dead_letter: None,
                backoff_base: Duration::ZERO,
                backoff_max: Duration::ZERO,
                archive_retention: None,
                max_message_bytes: DEFAULT_MAX_SIZE,
            },
            sqs: SqsQueueSettings {
                fifo,
                ..SqsQueueSettings::default()
            },
        }
    }

    /// An existing queue's settings.
    pub fn from_info(info: &QueueInfo, sqs: SqsQueueSettings) -> Queue {
        let d = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        Queue {
            config: QueueConfig {
                visibility_timeout: d(info.visibility_timeout_ms),
                max_attempts: info.max_attempts,
                dead_letter: info.dead_letter.clone(),
                backoff_base: d(info.backoff_base_ms),
                backoff_max: d(info.backoff_max_ms),
                archive_retention: info.archive_retention_ms.map(d),
                max_message_bytes: info.max_message_bytes,
            },
            sqs,
        }
    }
}

fn int(name: &str, value: &str, min: i64, max: i64) -> SqsResult<i64> {
    match value.trim().parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(SqsError::invalid_attribute_value(format!(
            "Invalid value for the parameter {name}: {value:?} is not an integer from {min} to {max}."
        ))),
    }
}

fn boolean(name: &str, value: &str) -> SqsResult<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SqsError::invalid_attribute_value(format!(
            "Invalid value for the parameter {name}: {value:?}."
        ))),
    }
}

fn i32_of(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A parsed `RedrivePolicy`: the dead-letter queue's name and
/// `maxReceiveCount`; `None` for an empty policy (no redrive).
pub fn redrive_policy(value: &str) -> SqsResult<Option<(QueueName, i32)>> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        SqsError::invalid_parameter(format!(
            "Value {value} for parameter RedrivePolicy is invalid. Reason: {why}"
        ))
    };
    let v: Map<String, Value> =
        serde_json::from_str(value).map_err(|_| bad("Redrive policy is not a valid JSON map."))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Redrive policy does not contain mandatory attribute: deadLetterTargetArn."))?;
    let count = match v.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => {
            return Err(bad(
                "Redrive policy does not contain mandatory attribute: maxReceiveCount.",
            ))
        }
    };
    let count = count
        .filter(|c| (1..=i64::from(pgbroker::MAX_ATTEMPTS_LIMIT)).contains(c))
        .ok_or_else(|| bad("Invalid value for maxReceiveCount: must be between 1 and 1000."))?;
    let name = crate::protocol::queue_name_of(arn).map_err(|_| bad("Dead-letter target is not a valid queue ARN."))?;
    let name = QueueName::new(name).map_err(|e| bad(&e.to_string()))?;
    Ok(Some((name, i32_of(count))))
}

/// Applies attributes to `q` (of the queue named `name`), validating each.
pub fn apply(q: &mut Queue, attrs: &BTreeMap<String, String>, creating: bool) -> SqsResult<()> {
    for (name, value) in attrs {
        let name = name.as_str();
        match name {
            "DelaySeconds" => q.sqs.delay_seconds = i32_of(int(name, value, 0, 900)?),
            "MaximumMessageSize" => {
                q.config.max_message_bytes =
                    usize::try_from(int(name, value, 1024, 1 << 20)?).unwrap_or(DEFAULT_MAX_SIZE)
            }
            "MessageRetentionPeriod" => q.sqs.retention_seconds = i32_of(int(name, value, 60, 1_209_600)?),
            "ReceiveMessageWaitTimeSeconds" => q.sqs.receive_wait_seconds = i32_of(int(name, value, 0, 20)?),
            "VisibilityTimeout" => {
                let s = int(name, value, 0, 43_200)?;
                q.config.visibility_timeout =
                    Duration::from_secs(u64::try_from(s).unwrap_or(0)).max(Duration::from_millis(1));
            }
            "RedrivePolicy" => match redrive_policy(value)? {
                Some((dlq, count)) => {
                    q.config.dead_letter = Some(dlq);
                    q.config.max_attempts = count;
                }
                None => {
                    q.config.dead_letter = None;
                    q.config.max_attempts = pgbroker::MAX_ATTEMPTS_LIMIT;
                }
            },
            "FifoQueue" => {
                let fifo = boolean(name, value)?;
                if fifo != q.sqs.fifo {
                    let why = if creating {
                        "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix"
                    } else {
                        "FifoQueue cannot be changed"
                    };
                    return Err(SqsError::invalid_attribute_value(why));
                }
            }
            "ContentBasedDeduplication" if q.sqs.fifo => q.sqs.content_based_dedup = boolean(name, value)?,
            n if KEPT.contains(&n) || (q.sqs.fifo && KEPT_FIFO.contains(&n)) => {
                q.sqs.extra.insert(n.to_string(), value.clone());
            }
            _ => return Err(SqsError::invalid_attribute_name(format!("Unknown Attribute {name}."))),
        }
    }
    Ok(())
}

/// Checks the names a `GetQueueAttributes` asks for.
pub fn check_names(names: &[String]) -> SqsResult<()> {
    match names.iter().find(|n| *n != "All" && !NAMES.contains(&n.as_str())) {
        Some(n) => Err(SqsError::invalid_attribute_name(format!("Unknown Attribute {n}."))),
        None => Ok(()),
    }
}

/// Whether the names ask for message counts.
pub fn wants_counts(names: &[String]) -> bool {
    names
        .iter()
        .any(|n| n == "All" || n.starts_with("ApproximateNumberOfMessages"))
}

/// The attributes of a queue that `names` ask for.
pub fn report(
    q: &Queue,
    info: &QueueInfo,
    stats: Option<&QueueStats>,
    arn: &dyn Fn(&str) -> String,
    names: &[String],
) -> BTreeMap<String, String> {
    let all = names.iter().any(|n| n == "All");
    let want = |n: &str| all || names.iter().any(|x| x == n);
    let mut out = BTreeMap::new();
    let mut put = |n: &str, v: String| {
        if want(n) {
            out.insert(n.to_string(), v);
        }
    };
    let secs = |ms: i64| (ms / 1000).to_string();
    put("VisibilityTimeout", secs(info.visibility_timeout_ms));
    put("MaximumMessageSize", info.max_message_bytes.to_string());
    put("MessageRetentionPeriod", q.sqs.retention_seconds.to_string());
    put("DelaySeconds", q.sqs.delay_seconds.to_string());
    put("ReceiveMessageWaitTimeSeconds", q.sqs.receive_wait_seconds.to_string());
    put("CreatedTimestamp", secs(info.created_at_ms));
    put(
        "LastModifiedTimestamp",
        secs(q.sqs.modified_at_ms.max(info.created_at_ms)),
    );
    put("QueueArn", arn(info.name.as_str()));
    if let Some(s) = stats {
        put("ApproximateNumberOfMessages", s.ready.to_string());
        put("ApproximateNumberOfMessagesNotVisible", s.in_flight.to_string());
        put("ApproximateNumberOfMessagesDelayed", s.delayed.to_string());
    }
    if let Some(d) = &info.dead_letter {
        let policy = serde_json::json!({"deadLetterTargetArn": arn(d.as_str()), "maxReceiveCount": info.max_attempts});
        put("RedrivePolicy", policy.to_string());
    }
    if q.sqs.fifo {
        put("FifoQueue", "true".into());
        put("ContentBasedDeduplication", q.sqs.content_based_dedup.to_string());
    }
    if !q.sqs.extra.contains_key("SqsManagedSseEnabled") {
        // Nothing is encrypted at rest by this server.
        put("SqsManagedSseEnabled", "false".into());
    }
    for (k, v) in &q.sqs.extra {
        put(k, v.clone());
    }
    out
}
