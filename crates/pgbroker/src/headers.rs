//! How headers are stored: a JSON array of `{"key": text, "value": base64}`
//! objects (value `null` for a null value), or SQL NULL when there are none.
//! JSON keeps them readable and queryable with plain SQL while keeping
//! order, repeats and binary values exact.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::types::Header;

/// Encodes headers for the `headers` column.
pub(crate) fn to_json(headers: &[Header]) -> Option<Value> {
    if headers.is_empty() {
        return None;
    }
    Some(Value::Array(
        headers
            .iter()
            .map(|h| json!({"key": h.key, "value": h.value.as_ref().map(|v| STANDARD.encode(v))}))
            .collect(),
    ))
}

/// Decodes the `headers` column. Entries that do not have the stored shape
/// (only possible if edited by hand) are skipped.
pub(crate) fn from_json(value: Option<Value>) -> Vec<Header> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let key = item.get("key")?.as_str()?.to_string();
            let value = match item.get("value") {
                None | Some(Value::Null) => None,
                Some(v) => Some(STANDARD.decode(v.as_str()?).ok()?),
            };
            Some(Header { key, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let hs = vec![
            Header {
                key: "a".into(),
                value: Some(vec![0, 255, 1]),
            },
            Header {
                key: "a".into(),
                value: None,
            },
            Header {
                key: "ü".into(),
                value: Some(b"x".to_vec()),
            },
        ];
        assert_eq!(from_json(to_json(&hs)), hs);
        assert_eq!(to_json(&[]), None);
    }
}
