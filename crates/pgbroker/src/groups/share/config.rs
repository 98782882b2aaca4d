//! Group settings, as Kafka 4 clients set them with IncrementalAlterConfigs
//! on GROUP resources: validated here, stored in `group_configs` (only the
//! names set), read by the share engine at each call.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::types::GroupId;

/// Where a share group starts reading a partition it has not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AutoOffsetReset {
    /// At the high watermark: only records written from now on.
    Latest,
    /// At the log start.
    Earliest,
}

/// What a share group delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ShareIsolation {
    /// Every record up to the high watermark.
    ReadUncommitted,
    /// Records up to the last stable offset.
    ReadCommitted,
}

/// The settings a share group runs with: its stored settings over the
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShareSettings {
    /// `share.auto.offset.reset` (default `latest`).
    pub auto_offset_reset: AutoOffsetReset,
    /// `share.record.lock.duration.ms` (default 30 s).
    pub lock_duration: Duration,
    /// `share.delivery.count.limit` (default 5): a record delivered this
    /// many times without being accepted is archived.
    pub delivery_count_limit: i16,
    /// `share.isolation.level` (default `read_uncommitted`).
    pub isolation: ShareIsolation,
    /// `share.session.timeout.ms` (default 45 s).
    pub session_timeout: Duration,
    /// `share.heartbeat.interval.ms` (default 5 s).
    pub heartbeat_interval: Duration,
    /// `consumer.session.timeout.ms` for a consumer-protocol group (KIP-848);
    /// `None` when unset: the broker's `group.consumer.session.timeout.ms`.
    pub consumer_session_timeout: Option<Duration>,
    /// `consumer.heartbeat.interval.ms`; `None` when unset: the broker's.
    pub consumer_heartbeat_interval: Option<Duration>,
}

impl Default for ShareSettings {
    fn default() -> Self {
        ShareSettings {
            auto_offset_reset: AutoOffsetReset::Latest,
            lock_duration: Duration::from_secs(30),
            delivery_count_limit: 5,
            isolation: ShareIsolation::ReadUncommitted,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(5),
            consumer_session_timeout: None,
            consumer_heartbeat_interval: None,
        }
    }
}

impl ShareSettings {
    /// The lock duration in whole milliseconds.
    pub fn lock_ms(&self) -> i32 {
        i32::try_from(self.lock_duration.as_millis()).unwrap_or(i32::MAX)
    }
}

/// One group setting as DescribeConfigs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupConfigEntry {
    /// Its name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// True when it was never set (the value is the default).
    pub is_default: bool,
}

/// Every group setting: name, default, and the check of a value.
const KNOWN: &[(&str, &str)] = &[
    ("consumer.heartbeat.interval.ms", "5000"),
    ("consumer.session.timeout.ms", "45000"),
    ("share.auto.offset.reset", "latest"),
    ("share.delivery.count.limit", "5"),
    ("share.heartbeat.interval.ms", "5000"),
    ("share.isolation.level", "read_uncommitted"),
    ("share.record.lock.duration.ms", "30000"),
    ("share.session.timeout.ms", "45000"),
];

fn bad(name: &str, value: &str, rule: &str) -> Error {
    Error::invalid(Invalid::GroupConfig, format!("{name}={value:?}: {rule}"))
}

fn millis(name: &str, value: &str, min: u64, max: u64) -> Result<Duration> {
    match value.trim().parse::<u64>() {
        Ok(ms) if (min..=max).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(bad(name, value, &format!("milliseconds from {min} to {max}"))),
    }
}

/// Checks one setting's name and value without storing it, returning the
/// name as known; [`Error::Invalid`] for a name no group has or a value
/// out of range.
pub fn check(name: &str, value: &str) -> Result<&'static str> {
    let known = KNOWN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, _)| *n)
        .ok_or_else(|| Error::invalid(Invalid::GroupConfig, format!("{name:?} is not a group setting")))?;
    let mut s = ShareSettings::default();
    apply(&mut s, known, value)?;
    Ok(known)
}

fn apply(s: &mut ShareSettings, name: &str, value: &str) -> Result<()> {
    match name {
        "share.auto.offset.reset" => {
            s.auto_offset_reset = match value {
                "latest" => AutoOffsetReset::Latest,
                "earliest" => AutoOffsetReset::Earliest,
                _ => return Err(bad(name, value, "latest or earliest")),
            }
        }
        "share.isolation.level" => {
            s.isolation = match value {
                "read_uncommitted" => ShareIsolation::ReadUncommitted,
                "read_committed" => ShareIsolation::ReadCommitted,
                _ => return Err(bad(name, value, "read_uncommitted or read_committed")),
            }
        }
        "share.record.lock.duration.ms" => s.lock_duration = millis(name, value, 1_000, 3_600_000)?,
        "share.delivery.count.limit" => {
            s.delivery_count_limit = match value.trim().parse::<i16>() {
                Ok(n) if (2..=10).contains(&n) => n,
                _ => return Err(bad(name, value, "a count from 2 to 10")),
            }
        }
        "share.session.timeout.ms" => s.session_timeout = millis(name, value, 1_000, 3_600_000)?,
        "share.heartbeat.interval.ms" => s.heartbeat_interval = millis(name, value, 100, 60_000)?,
        "consumer.session.timeout.ms" => s.consumer_session_timeout = Some(millis(name, value, 1_000, 3_600_000)?),
        "consumer.heartbeat.interval.ms" => {
            s.consumer_heartbeat_interval = Some(millis(name, value, 100, 60_000)?);
        }
        _ => {
            return Err(Error::invalid(
                Invalid::GroupConfig,
                format!("{name:?} is not a group setting"),
            ))
        }
    }
    Ok(())
}

async fn stored(broker: &Broker, group: &str) -> Result<BTreeMap<String, String>> {
    let client = broker.client().await?;
    let sql = &broker.inner.sql.share;
    let rows = client.query(&sql.configs, &[&group]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The settings of a group; see [`super::ShareGroups::settings`].
pub(crate) async fn settings(broker: &Broker, group: &GroupId) -> Result<ShareSettings> {
    let mut s = ShareSettings::default();
    for (name, value) in stored(broker, group.as_str()).await? {
        // A value stored by an older build that no longer passes is
        // ignored rather than failing the group.
        if apply(&mut s, &name, &value).is_err() {
            tracing::warn!(group = group.as_str(), name, value, "ignoring an invalid group setting");
        }
    }
    Ok(s)
}

/// Every setting of a group; see [`super::ShareGroups::configs`].
pub(crate) async fn configs(broker: &Broker, group: &GroupId) -> Result<Vec<GroupConfigEntry>> {
    let set = stored(broker, group.as_str()).await?;
    Ok(KNOWN
        .iter()
        .map(|(name, default)| match set.get(*name) {
            Some(v) => GroupConfigEntry {
                name,
                value: v.clone(),
                is_default: false,
            },
            None => GroupConfigEntry {
                name,
                value: (*default).to_string(),
                is_default: true,
            },
        })
        .collect())
}

/// Sets (`Some`) or removes (`None`) settings of a group, all or none;
/// see [`super::ShareGroups::alter_configs`].
pub(crate) async fn alter(broker: &Broker, group: &GroupId, changes: &[(String, Option<String>)]) -> Result<()> {
    for (name, value) in changes {
        match value {
            Some(v) => {
                check(name, v)?;
            }
            None => {
                check_name(name)?;
            }
        }
    }
    let sql = &broker.inner.sql.share;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    for (name, value) in changes {
        match value {
            Some(v) => tx.execute(&sql.set_config, &[&group.as_str(), name, v]).await?,
            None => tx.execute(&sql.delete_config, &[&group.as_str(), name]).await?,
        };
    }
    tx.commit().await?;
    Ok(())
}

/// Checks that a name is a group setting.
pub fn check_name(name: &str) -> Result<()> {
    if KNOWN.iter().any(|(n, _)| *n == name) {
        Ok(())
    } else {
        Err(Error::invalid(
            Invalid::GroupConfig,
            format!("{name:?} is not a group setting"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_checks() {
        for (name, default) in KNOWN {
            assert_eq!(check(name, default).ok(), Some(*name));
        }
    }

    #[test]
    fn bad_values_and_names_are_refused() {
        assert!(check("share.auto.offset.reset", "sometimes").is_err());
        assert!(check("share.delivery.count.limit", "1").is_err());
        assert!(check("share.delivery.count.limit", "11").is_err());
        assert!(check("share.record.lock.duration.ms", "999").is_err());
        assert!(check("share.record.lock.duration.ms", "-5").is_err());
        assert!(check("share.isolation.level", "read_dirty").is_err());
        assert!(check("group.secret", "1").is_err());
        assert!(check_name("group.secret").is_err());
    }

    #[test]
    fn values_apply() {
        let mut s = ShareSettings::default();
        apply(&mut s, "share.auto.offset.reset", "earliest").ok();
        apply(&mut s, "share.record.lock.duration.ms", "2500").ok();
        apply(&mut s, "share.delivery.count.limit", "3").ok();
        assert_eq!(s.auto_offset_reset, AutoOffsetReset::Earliest);
        assert_eq!(s.lock_duration, Duration::from_millis(2500));
        assert_eq!(s.delivery_count_limit, 3);
    }
}
