//! Message attributes: parsing, the MD5 digests SQS computes, and their
//! storage as pgbroker message headers.
//!
//! Each attribute is a header named like it holding the raw value (UTF-8
//! for String and Number types, the bytes for Binary). Types other than
//! `String` are listed in one more header, [`TYPES_HEADER`], as a JSON
//! object, so that headers sent by other pgbroker clients arrive as
//! String attributes (Binary when not UTF-8).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest, Md5};
use pgbroker::Header;
use serde_json::{Map, Value};

use crate::error::{SqsError, SqsResult};

/// The header listing attribute types other than `String`.
pub const TYPES_HEADER: &str = "pgbroker.sqs.types";
/// The header keeping a FIFO message's deduplication id (given, or the
/// body's SHA-256 under content-based deduplication), reported back as
/// the `MessageDeduplicationId` system attribute.
pub const DEDUP_HEADER: &str = "pgbroker.sqs.dedup";
/// The message attribute that sets a message's pgbroker priority (0-9).
pub const PRIORITY_ATTRIBUTE: &str = "pgbroker.priority";
/// Most attributes of one message.
pub const MAX_ATTRIBUTES: usize = 10;

/// One attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// For `String` and `Number` types.
    Text(String),
    /// For `Binary` types.
    Bytes(Vec<u8>),
}

/// One message attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// `String`, `Number` or `Binary`, with an optional `.label`.
    pub data_type: String,
    /// The value.
    pub value: AttrValue,
}

/// Attributes by name (byte order, as the digest needs).
pub type Attrs = BTreeMap<String, Attr>;

fn check_name(name: &str) -> SqsResult<()> {
    let lower = name.to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
        && (!lower.starts_with("pgbroker.") || name == PRIORITY_ATTRIBUTE);
    if ok {
        Ok(())
    } else {
        Err(SqsError::invalid_parameter(format!(
            "Message attribute name {name:?} is invalid."
        )))
    }
}

/// Parses the `MessageAttributes` of a send.
pub fn parse(map: Option<&Value>) -> SqsResult<Attrs> {
    let Some(map) = map.filter(|v| !v.is_null()) else {
        return Ok(Attrs::new());
    };
    let map = map
        .as_object()
        .ok_or_else(|| SqsError::serialization("MessageAttributes must be a map"))?;
    if map.len() > MAX_ATTRIBUTES {
        return Err(SqsError::invalid_parameter(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_ATTRIBUTES}].",
            map.len()
        )));
    }
    let mut out = Attrs::new();
    for (name, v) in map {
        check_name(name)?;
        let v: &Map<String, Value> = v
            .as_object()
            .ok_or_else(|| SqsError::serialization("a message attribute must be an object"))?;
        let input = crate::protocol::Input(v);
        let data_type = input.opt_str("DataType")?.ok_or_else(|| {
            SqsError::invalid_parameter(format!(
                "The message attribute '{name}' must contain a non-empty attribute type."
            ))
        })?;
        let base = data_type.split('.').next().unwrap_or_default();
        let value = match base {
            "String" | "Number" => {
                let s = input.opt_str("StringValue")?.ok_or_else(|| {
                    SqsError::invalid_parameter(format!(
                        "The message attribute '{name}' must contain a non-empty message attribute value."
                    ))
                })?;
                if base == "Number" && s.trim().parse::<f64>().is_err() {
                    return Err(SqsError::invalid_parameter(format!(
                        "Can't cast the value of message attribute '{name}' to a number."
                    )));
                }
                AttrValue::Text(s.to_string())
            }
            "Binary" => {
                let s = input.opt_str("BinaryValue")?.ok_or_else(|| {
                    SqsError::invalid_parameter(format!(
                        "The message attribute '{name}' must contain a non-empty message attribute value."
                    ))
                })?;
                AttrValue::Bytes(
                    B64.decode(s)
                        .map_err(|_| SqsError::invalid_parameter(format!("BinaryValue of '{name}' is not base64")))?,
                )
            }
            _ => {
                return Err(SqsError::invalid_parameter(format!(
                    "The message attribute '{name}' has an invalid message attribute type {data_type:?}."
                )))
            }
        };
        out.insert(
            name.clone(),
            Attr {
                data_type: data_type.to_string(),
                value,
            },
        );
    }
    Ok(out)
}

/// The MD5 of a body, as hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// The MD5 of message attributes as SQS computes it: for each name in
/// byte order, length-prefixed name and type, a transport byte (1 for
/// text, 2 for binary), and the length-prefixed value. `None` when there
/// are none.
pub fn md5_of(attrs: &Attrs) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    fn field(buf: &mut Vec<u8>, b: &[u8]) {
        buf.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
        buf.extend_from_slice(b);
    }
    let mut buf = Vec::new();
    for (name, a) in attrs {
        field(&mut buf, name.as_bytes());
        field(&mut buf, a.data_type.as_bytes());
        match &a.value {
            AttrValue::Text(s) => {
                buf.push(1);
                field(&mut buf, s.as_bytes());
            }
            AttrValue::Bytes(b) => {
                buf.push(2);
                field(&mut buf, b);
            }
        }
    }
    Some(md5_hex(&buf))
}

/// The headers storing attributes, and the priority they set, if any.
pub fn to_headers(attrs: &Attrs) -> SqsResult<(Vec<Header>, Option<u8>)> {
    let mut headers = Vec::with_capacity(attrs.len() + 1);
    let mut types = Map::new();
    let mut priority = None;
    for (name, a) in attrs {
        if name == PRIORITY_ATTRIBUTE {
            let p = match &a.value {
                AttrValue::Text(s) => s
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= pgbroker::queues::MAX_PRIORITY),
                AttrValue::Bytes(_) => None,
            };
            priority = Some(p.ok_or_else(|| {
                SqsError::invalid_parameter(format!(
                    "{PRIORITY_ATTRIBUTE} must be a Number from 0 to {}",
                    pgbroker::queues::MAX_PRIORITY
                ))
            })?);
        }
        let value = match &a.value {
            AttrValue::Text(s) => s.as_bytes().to_vec(),
            AttrValue::Bytes(b) => b.clone(),
        };
        if a.data_type != "String" {
            types.insert(name.clone(), Value::String(a.data_type.clone()));
        }
        headers.push(Header {
            key: name.clone(),
            value: Some(value),
        });
    }
    if !types.is_empty() {
        headers.push(Header {
            key: TYPES_HEADER.to_string(),
            value: Some(Value::Object(types).to_string().into_bytes()),
        });
    }
    Ok((headers, priority))
}

/// The deduplication id kept in a message's headers, if any.
pub fn dedup_id(headers: &[Header]) -> Option<String> {
    headers
        .iter()
        .rev()
        .find(|h| h.key == DEDUP_HEADER)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
}

/// A FIFO message's `SequenceNumber`: its id, which grows with every send
/// to the queue, as 20 decimal digits (SQS's are 20 digits too).
pub fn sequence_number(id: i64) -> String {
    format!("{id:020}")
}

/// The attributes stored in a message's headers.
pub fn from_headers(headers: &[Header]) -> Attrs {
    let types: Map<String, Value> = headers
        .iter()
        .rev()
        .find(|h| h.key == TYPES_HEADER)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default();
    let mut out = Attrs::new();
    for h in headers
        .iter()
        .filter(|h| h.key != TYPES_HEADER && check_name(&h.key).is_ok())
    {
        let raw = h.value.clone().unwrap_or_default();
        let declared = types.get(&h.key).and_then(Value::as_str);
        let attr = match (declared, String::from_utf8(raw)) {
            (Some(t), Ok(s)) if !t.starts_with("Binary") => Attr {
                data_type: t.to_string(),
                value: AttrValue::Text(s),
            },
            (Some(t), Ok(s)) => Attr {
                data_type: t.to_string(),
                value: AttrValue::Bytes(s.into_bytes()),
            },
            (Some(t), Err(e)) => Attr {
                data_type: t.to_string(),
                value: AttrValue::Bytes(e.into_bytes()),
            },
            (None, Ok(s)) => Attr {
                data_type: "String".into(),
                value: AttrValue::Text(s),
            },
            (None, Err(e)) => Attr {
                data_type: "Binary".into(),
                value: AttrValue::Bytes(e.into_bytes()),
            },
        };
        out.insert(h.key.clone(), attr);
    }
    out
}

/// Attributes as they appear in a received message.
pub fn to_json(attrs: &Attrs) -> Value {
    let mut out = Map::new();
    for (name, a) in attrs {
        let v = match &a.value {
            AttrValue::Text(s) => serde_json::json!({"DataType": a.data_type, "StringValue": s}),
            AttrValue::Bytes(b) => serde_json::json!({"DataType": a.data_type, "BinaryValue": B64.encode(b)}),
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// The attributes a receive asked for: `All`, `.*`, exact names, or
/// `prefix.*`.
pub fn select(attrs: &Attrs, wanted: &[String]) -> Attrs {
    attrs
        .iter()
        .filter(|(name, _)| {
            wanted.iter().any(|w| {
                w == "All"
                    || w == ".*"
                    || w == *name
                    || w.strip_suffix(".*").is_some_and(|p| name.starts_with(&format!("{p}.")))
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_digest_matches_the_published_vector() {
        let mut attrs = Attrs::new();
        attrs.insert(
            "attribName1".into(),
            Attr {
                data_type: "String".into(),
                value: AttrValue::Text("attribValue 1".into()),
            },
        );
        assert_eq!(md5_of(&attrs).as_deref(), Some("19e27d4e946b072f3f58da80d94fd778"));
        assert_eq!(md5_of(&Attrs::new()), None);
    }

    #[test]
    fn attributes_survive_headers() {
        let v = serde_json::json!({
            "a": {"DataType": "String", "StringValue": "x"},
            "n": {"DataType": "Number.float", "StringValue": "1.5"},
            "b": {"DataType": "Binary", "BinaryValue": "AAEC"},
        });
        let attrs = parse(Some(&v)).expect("valid");
        let (headers, priority) = to_headers(&attrs).expect("valid");
        assert_eq!(priority, None);
        assert_eq!(from_headers(&headers), attrs);
        let bad = serde_json::json!({"AWS.x": {"DataType": "String", "StringValue": "x"}});
        assert_eq!(parse(Some(&bad)).map_err(|e| e.shape), Err("InvalidParameterValue"));
        let nan = serde_json::json!({"n": {"DataType": "Number", "StringValue": "one"}});
        assert!(parse(Some(&nan)).is_err());
    }
}
