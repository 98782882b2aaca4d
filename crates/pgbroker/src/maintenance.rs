//! Background and on-demand upkeep: retention of topics' segments, the
//! compaction of compacted topics and the rotation, archive expiry and
//! clean-up of queues' tables.

use std::time::Duration;

use crate::broker::Broker;
use crate::error::Result;
use crate::queues::QueueMaintenance;
use crate::streams::compact::CompactionReport;

/// The upkeep operations of a [`Broker`]; see [`Broker::maintenance`].
#[derive(Debug, Clone, Copy)]
pub struct Maintenance<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Retention and queue upkeep, on demand or in the background.
    pub fn maintenance(&self) -> Maintenance<'_> {
        Maintenance { broker: self }
    }
}

impl Maintenance<'_> {
    /// Runs every queue maintenance step now: a rotation of the message
    /// partitions (unless the older one holds too many live messages or a
    /// lock cannot be had at once), archive expiry and clean-up. Brokers
    /// that use queues also run these steps in the background as they come
    /// due; call this from a scheduler of your own, or `pgbroker maintain`,
    /// if you prefer.
    pub async fn maintain_queues(self) -> Result<QueueMaintenance> {
        crate::queues::maintain::maintain_queues(self.broker).await
    }

    /// One pass of retention: drops every closed segment that is past its
    /// topic's retention time or beyond its retention bytes, advancing the
    /// partition's log start first, and drops segment tables left over from
    /// deleted topics. Returns how many segment tables were dropped.
    pub async fn enforce_retention(self) -> Result<usize> {
        crate::streams::segments::enforce_retention(self.broker).await
    }

    /// One pass of the cleaner over every partition of every compacted
    /// topic (`cleanup.policy` `compact` or `compact,delete`): closed
    /// segments below the cleanable limit are rewritten to keep the
    /// latest record of each key, and tombstones past
    /// `delete.retention.ms`. A partition is cleaned when its dirty share
    /// reaches `min.cleanable.dirty.ratio` or a record or tombstone is
    /// due; with `force`, whatever the ratio. See
    /// `crates/pgbroker/src/streams/compact.rs`.
    pub async fn compact(self, force: bool) -> Result<CompactionReport> {
        crate::streams::compact::compact(self.broker, force).await
    }

    /// The cleaner's state of every partition of every compacted topic.
    pub async fn cleaner_status(self) -> Result<Vec<crate::streams::CleanerStatus>> {
        crate::streams::compact::cleaner_status(self.broker).await
    }

    /// Runs retention, compaction and segment clean-up every `interval` until the
    /// returned task is aborted. Errors are logged and the loop goes on.
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        crate::streams::segments::spawn_maintenance(self.broker, interval)
    }
}
