//! A topic's clean-up policy: deletion by retention (the default),
//! compaction to the latest record per key, or both, with Kafka's
//! compaction settings. The cleaner itself is in [`super::compact`].

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Invalid, Result};

/// What happens to old records of a topic, as Kafka's `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Whole segments are dropped by retention time and size.
    #[default]
    Delete,
    /// Only the latest record of each key is kept (`compact`).
    Compact,
    /// Both: compacted, and segments past retention are dropped.
    CompactDelete,
}

impl CleanupPolicy {
    /// The value as Kafka writes it: `delete`, `compact` or `compact,delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Whether the topic is compacted (and so refuses records without a key).
    pub fn compacts(self) -> bool {
        self != CleanupPolicy::Delete
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CleanupPolicy {
    type Err = Error;

    /// Parses Kafka's list form: `delete`, `compact`, `compact,delete` or
    /// `delete,compact` (spaces around the items allowed, no repeats).
    fn from_str(s: &str) -> Result<Self> {
        let mut items: Vec<&str> = s.split(',').map(str::trim).collect();
        items.sort_unstable();
        match items.as_slice() {
            ["delete"] => Ok(CleanupPolicy::Delete),
            ["compact"] => Ok(CleanupPolicy::Compact),
            ["compact", "delete"] => Ok(CleanupPolicy::CompactDelete),
            _ => Err(Error::invalid(
                Invalid::CleanupPolicy,
                format!("{s:?} is not delete, compact or compact,delete"),
            )),
        }
    }
}

/// Default `delete.retention.ms`: one day, as Kafka.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 86_400_000;
/// Default `min.cleanable.dirty.ratio`, as Kafka.
pub const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;

/// A topic's clean-up settings, named after Kafka's topic configs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cleanup {
    /// `cleanup.policy`.
    pub policy: CleanupPolicy,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record is compacted at the latest this
    /// long after it was written, whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone (a record with a key and
    /// no value) is kept after its segment was first compacted.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of not yet compacted records
    /// that starts a compaction.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for Cleanup {
    fn default() -> Self {
        Cleanup {
            policy: CleanupPolicy::Delete,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_cleanable_dirty_ratio: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO,
        }
    }
}

// The ratio is validated to lie in [0, 1], never NaN, so equality is total.
impl Eq for Cleanup {}

impl Cleanup {
    /// Checks each setting's range, as Kafka does.
    pub fn validate(&self) -> Result<()> {
        if self.min_compaction_lag_ms < 0 {
            return Err(Error::invalid(
                Invalid::CompactionLag,
                format!(
                    "min.compaction.lag.ms {} must not be negative",
                    self.min_compaction_lag_ms
                ),
            ));
        }
        if self.max_compaction_lag_ms < 1 {
            return Err(Error::invalid(
                Invalid::CompactionLag,
                format!(
                    "max.compaction.lag.ms {} must be at least 1",
                    self.max_compaction_lag_ms
                ),
            ));
        }
        if self.delete_retention_ms < 0 {
            return Err(Error::invalid(
                Invalid::DeleteRetention,
                format!("delete.retention.ms {} must not be negative", self.delete_retention_ms),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(Error::invalid(
                Invalid::DirtyRatio,
                format!(
                    "min.cleanable.dirty.ratio {} is not between 0 and 1",
                    self.min_cleanable_dirty_ratio
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_kafka_writes_them() {
        for (s, p) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("delete, compact", CleanupPolicy::CompactDelete),
        ] {
            assert_eq!(s.parse::<CleanupPolicy>().ok(), Some(p), "{s}");
        }
        for bad in ["", "compacted", "compact,compact", "delete,delete", "compact,delete,x"] {
            assert!(bad.parse::<CleanupPolicy>().is_err(), "{bad}");
        }
        assert_eq!(CleanupPolicy::CompactDelete.to_string(), "compact,delete");
    }

    #[test]
    fn ranges() {
        assert!(Cleanup::default().validate().is_ok());
        let bad = [
            Cleanup {
                min_compaction_lag_ms: -1,
                ..Cleanup::default()
            },
            Cleanup {
                max_compaction_lag_ms: 0,
                ..Cleanup::default()
            },
            Cleanup {
                delete_retention_ms: -5,
                ..Cleanup::default()
            },
            Cleanup {
                min_cleanable_dirty_ratio: 1.5,
                ..Cleanup::default()
            },
            Cleanup {
                min_cleanable_dirty_ratio: f64::NAN,
                ..Cleanup::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
