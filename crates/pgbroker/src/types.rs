//! Domain types: validated names, records and positions.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Invalid, Result};

/// A validated topic name: 1 to 249 characters from `[A-Za-z0-9._-]`, not
/// `.` or `..` (Kafka's rule, so a topic can move to a Kafka cluster).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

impl TopicName {
    /// Validates `name` as a topic name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name.len() > 249 {
            return Err(Error::invalid(
                Invalid::TopicName,
                format!("must be 1 to 249 characters long, got {}", name.len()),
            ));
        }
        if name == "." || name == ".." {
            return Err(Error::invalid(Invalid::TopicName, "cannot be '.' or '..'"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(Error::invalid(
                Invalid::TopicName,
                format!("{c:?} is not allowed; use letters, digits, '.', '_' and '-'"),
            ));
        }
        Ok(TopicName(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TopicName::new(s)
    }
}

impl From<TopicName> for String {
    fn from(t: TopicName) -> String {
        t.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated consumer group id: 1 to 255 characters, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupId(String);

impl GroupId {
    /// Validates `id` as a group id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > 255 {
            return Err(Error::invalid(
                Invalid::GroupId,
                format!("must be 1 to 255 bytes long, got {}", id.len()),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid(Invalid::GroupId, "control characters are not allowed"));
        }
        Ok(GroupId(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GroupId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        GroupId::new(s)
    }
}

impl From<GroupId> for String {
    fn from(g: GroupId) -> String {
        g.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a Postgres schema name for pgbroker's tables: lower-case
/// letters, digits and `_`, starting with a letter or `_`, at most 48 bytes
/// (so derived names such as the NOTIFY channel stay under Postgres's
/// 63-byte identifier limit and are never truncated into a collision).
pub fn validate_schema(name: &str) -> Result<()> {
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_start || !ok_rest || name.len() > 48 {
        return Err(Error::invalid(
            Invalid::SchemaName,
            format!("{name:?}: use 1 to 48 of [a-z0-9_], not starting with a digit"),
        ));
    }
    if name.starts_with("pg_") {
        return Err(Error::invalid(
            Invalid::SchemaName,
            "names starting with pg_ are reserved",
        ));
    }
    Ok(())
}

/// One record header. Keys are strings, values are bytes or null, and a
/// key may repeat, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` is a null value.
    pub value: Option<Vec<u8>>,
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Optional key; it also picks the partition when none is given.
    pub key: Option<Bytes>,
    /// Optional value; `None` is a null value (a tombstone in Kafka terms).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Creation time; `None` means the time of the write.
    pub timestamp: Option<SystemTime>,
}

impl Record {
    /// A record with only a value.
    pub fn from_value(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: Some(Bytes::from(value.into())),
            ..Record::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: Some(Bytes::from(key.into())),
            value: Some(Bytes::from(value.into())),
            ..Record::default()
        }
    }

    /// Bytes this record counts against the topic's maximum record size.
    pub fn size(&self) -> usize {
        let h: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
            .sum();
        self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len) + h
    }
}

/// A record as stored, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Partition number within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Creation time given by the producer, or the time of the write.
    pub timestamp: SystemTime,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordPosition {
    /// Partition number.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: TopicName,
    /// Partition number.
    pub partition: i32,
}

/// Milliseconds since the Unix epoch, negative before it.
pub fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(TopicName::new("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a b", "x;drop table t", "é", "a\"b", "a'b"] {
            assert!(TopicName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TopicName::new("a".repeat(249)).is_ok());
        assert!(TopicName::new("a".repeat(250)).is_err());
    }

    #[test]
    fn group_ids() {
        assert!(GroupId::new("g'; DROP TABLE x; --").is_ok());
        assert!(GroupId::new("").is_err());
        assert!(GroupId::new("a\nb").is_err());
        assert!(GroupId::new("g".repeat(256)).is_err());
    }

    #[test]
    fn schemas() {
        assert!(validate_schema("pgbroker").is_ok());
        assert!(validate_schema("_t1").is_ok());
        for bad in ["", "1a", "Ab", "a-b", "a\"b", "pg_x", &"a".repeat(49)] {
            assert!(validate_schema(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn millis_round_trip() {
        for ms in [0, 1, 1_700_000_000_123, -5] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
    }
}
