//! Formatting: aligned tables, JSON documents and consumed records.

use std::io::Write;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pgbroker::{StoredRecord, TopicName};
use serde::Serialize;
use serde_json::{json, Value};

use crate::RecordFormat;

/// Prints `value` as one line of JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Prints rows under upper-case headers, columns left-aligned and separated
/// by two spaces.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()?;
    Ok(())
}

/// A duration in milliseconds as humantime text (`7days`), `-` when unset.
pub fn millis(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => humantime::format_duration(Duration::from_millis(ms)).to_string(),
        None => "-".to_string(),
    }
}

/// An optional value as text, `-` when unset.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Bytes as a JSON string when valid UTF-8, else `{"base64": ...}`; null
/// when absent.
pub fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => json!({ "base64": STANDARD.encode(b) }),
        },
    }
}

/// A consumed record as the JSON object `consume --format json` prints.
pub fn record_json(topic: &TopicName, r: &StoredRecord) -> Value {
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| json!({ "key": h.key, "value": bytes_json(h.value.as_deref()) }))
        .collect();
    json!({
        "topic": topic.as_str(),
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": pgbroker::streams::timestamp_ms(r),
        "key": bytes_json(r.key.as_deref()),
        "value": bytes_json(r.value.as_deref()),
        "headers": headers,
    })
}

/// Text form of a key or value; `null` when absent, as Kafka's console
/// consumer prints it.
fn text(bytes: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    match bytes {
        Some(b) => String::from_utf8_lossy(b),
        None => "null".into(),
    }
}

/// Writes one consumed record as a line.
pub fn write_record(
    out: &mut impl Write,
    format: RecordFormat,
    print_key: bool,
    topic: &TopicName,
    r: &StoredRecord,
) -> std::io::Result<()> {
    match format {
        RecordFormat::Json => writeln!(out, "{}", record_json(topic, r)),
        RecordFormat::Text if print_key => {
            writeln!(out, "{}\t{}", text(r.key.as_deref()), text(r.value.as_deref()))
        }
        RecordFormat::Text => writeln!(out, "{}", text(r.value.as_deref())),
    }
}

/// `n` and a noun, plural unless `n` is one: `1 record`, `2 records`.
pub fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, noun: &str) -> String {
    if n == N::from(1) {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_as_json() {
        assert_eq!(bytes_json(None), Value::Null);
        assert_eq!(bytes_json(Some(b"hi")), json!("hi"));
        assert_eq!(bytes_json(Some(&[0xff, 0])), json!({"base64": "/wA="}));
    }
}
