//! Background and on-demand upkeep: retention of topics' segments and the
//! rotation, archive expiry and clean-up of queues' tables.

use std::time::Duration;

use crate::broker::Broker;
use crate::error::Result;
use crate::queues::QueueMaintenance;

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

    /// Runs retention and segment clean-up every `interval` until the
    /// returned task is aborted. Errors are logged and the loop goes on.
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        crate::streams::segments::spawn_maintenance(self.broker, interval)
    }
}
