//! The AWS JSON 1.0 framing: which action a request names, its body as a
//! JSON object, and typed access to its fields. Nothing here touches the
//! database, so it can be fuzzed on its own.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use crate::error::{SqsError, SqsResult};

/// The actions this server answers, as named in `X-Amz-Target`.
pub const ACTIONS: &[&str] = &[
    "CreateQueue",
    "GetQueueUrl",
    "ListQueues",
    "DeleteQueue",
    "GetQueueAttributes",
    "SetQueueAttributes",
    "SendMessage",
    "SendMessageBatch",
    "ReceiveMessage",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "PurgeQueue",
    "ListDeadLetterSourceQueues",
    "StartMessageMoveTask",
    "ListMessageMoveTasks",
    "CancelMessageMoveTask",
    "TagQueue",
    "UntagQueue",
    "ListQueueTags",
];

/// Most entries of a batch.
pub const MAX_BATCH: usize = 10;

/// The action named by an `X-Amz-Target` header value
/// (`AmazonSQS.<Action>`).
pub fn action(target: Option<&str>) -> SqsResult<&'static str> {
    let target = target.ok_or_else(|| SqsError::unknown_operation("missing X-Amz-Target header"))?;
    let name = target
        .strip_prefix("AmazonSQS.")
        .ok_or_else(|| SqsError::unknown_operation(format!("unknown target {target:?}")))?;
    ACTIONS
        .iter()
        .find(|a| **a == name)
        .copied()
        .ok_or_else(|| SqsError::unknown_operation(format!("unknown operation {name:?}")))
}

/// The request body as a JSON object (an empty body is an empty object).
pub fn body(bytes: &[u8]) -> SqsResult<Map<String, Value>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(SqsError::serialization("the request body must be a JSON object")),
        Err(e) => Err(SqsError::serialization(format!("malformed JSON: {e}"))),
    }
}

/// Typed access to a request's fields.
pub struct Input<'a>(pub &'a Map<String, Value>);

impl<'a> Input<'a> {
    /// A string field, if present.
    pub fn opt_str(&self, name: &str) -> SqsResult<Option<&'a str>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(SqsError::serialization(format!("{name} must be a string"))),
        }
    }

    /// A required string field.
    pub fn str(&self, name: &str) -> SqsResult<&'a str> {
        self.opt_str(name)?
            .ok_or_else(|| SqsError::missing_parameter(format!("The request must contain the parameter {name}.")))
    }

    /// An integer field, if present.
    pub fn opt_int(&self, name: &str) -> SqsResult<Option<i64>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| SqsError::invalid_parameter(format!("{name} must be an integer"))),
            Some(_) => Err(SqsError::serialization(format!("{name} must be a number"))),
        }
    }

    /// An integer field within `[min, max]`, if present.
    pub fn int_in(&self, name: &str, min: i64, max: i64) -> SqsResult<Option<i64>> {
        match self.opt_int(name)? {
            Some(v) if !(min..=max).contains(&v) => Err(SqsError::invalid_parameter(format!(
                "Value {v} for parameter {name} is invalid. Reason: must be between {min} and {max}."
            ))),
            v => Ok(v),
        }
    }

    /// A list of strings, empty when absent.
    pub fn str_list(&self, name: &str) -> SqsResult<Vec<String>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| SqsError::serialization(format!("{name} must hold strings")))
                })
                .collect(),
            Some(_) => Err(SqsError::serialization(format!("{name} must be a list"))),
        }
    }

    /// A map of strings to strings, empty when absent.
    pub fn str_map(&self, name: &str) -> SqsResult<BTreeMap<String, String>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(SqsError::serialization(format!("{name} values must be strings"))),
                })
                .collect(),
            Some(_) => Err(SqsError::serialization(format!("{name} must be a map"))),
        }
    }

    /// The objects of a list field, empty when absent.
    pub fn objects(&self, name: &str) -> SqsResult<Vec<&'a Map<String, Value>>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_object()
                        .ok_or_else(|| SqsError::serialization(format!("{name} must hold objects")))
                })
                .collect(),
            Some(_) => Err(SqsError::serialization(format!("{name} must be a list"))),
        }
    }
}

/// Checks a queue name as SQS does: 1 to 80 characters from
/// `[A-Za-z0-9_-]`, a FIFO queue's name ending in `.fifo`.
pub fn check_queue_name(name: &str) -> SqsResult<()> {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    let ok =
        !stem.is_empty() && name.len() <= 80 && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SqsError::invalid_parameter(format!(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length: {name:?}"
        )))
    }
}

/// The queue name at the end of a queue URL (or an ARN's last field).
pub fn queue_name_of(url: &str) -> SqsResult<String> {
    let name = url.rsplit(['/', ':']).next().unwrap_or_default();
    check_queue_name(name).map_err(|_| SqsError::no_queue("The specified queue does not exist."))?;
    Ok(name.to_string())
}

/// Checks the entries of a batch: 1 to [`MAX_BATCH`], each with a valid,
/// distinct `Id`. Returns the ids in order.
pub fn check_batch(entries: &[&Map<String, Value>]) -> SqsResult<Vec<String>> {
    if entries.is_empty() {
        return Err(SqsError::empty_batch(
            "There should be at least one entry in the request.",
        ));
    }
    if entries.len() > MAX_BATCH {
        return Err(SqsError::too_many_entries(format!(
            "Maximum number of entries per request are {MAX_BATCH}. You have sent {}.",
            entries.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(entries.len());
    for e in entries {
        let id = Input(e).str("Id")?;
        let valid =
            !id.is_empty() && id.len() <= 80 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(SqsError::invalid_entry_id(format!(
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long: {id:?}"
            )));
        }
        if !seen.insert(id) {
            return Err(SqsError::ids_not_distinct(format!("Id {id} repeated.")));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// Checks that a message body has only the characters SQS allows:
/// `#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`.
pub fn check_body(body: &str) -> SqsResult<()> {
    if body.is_empty() {
        return Err(SqsError::missing_parameter(
            "The request must contain the parameter MessageBody.",
        ));
    }
    let bad = body.chars().find(|&c| {
        !matches!(c, '\u{9}' | '\u{a}' | '\u{d}' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
    });
    match bad {
        Some(c) => Err(SqsError::invalid_message_contents(format!(
            "Invalid binary character '#x{:X}' was found in the message body",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}
