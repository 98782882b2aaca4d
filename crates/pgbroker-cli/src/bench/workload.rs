//! What the shared benchmark machinery (`measure`, `produce_loop`) needs to
//! know of a workload's flags.

use std::time::Duration;

use serde_json::json;

use super::PubsubArgs;

/// How producers pace their sends.
pub(super) struct Pace {
    /// Messages per send call.
    pub(super) batch: u32,
    pub(super) producers: u32,
    /// Target total messages/s; flat out when `None`.
    pub(super) rate: Option<u64>,
    /// Partitions to rotate over (1 when there are none).
    pub(super) partitions: i32,
}

/// What `measure` and `produce_loop` need to know of a workload.
pub(super) trait Workload {
    fn warmup(&self) -> Duration;
    fn duration(&self) -> Duration;
    fn message_size(&self) -> u32;
    fn pace(&self) -> Pace;
    /// The summary's leading keys: system, workload name and parameters.
    fn head(&self) -> serde_json::Value;
}

impl Workload for PubsubArgs {
    fn warmup(&self) -> Duration {
        self.warmup
    }
    fn duration(&self) -> Duration {
        self.duration
    }
    fn message_size(&self) -> u32 {
        self.message_size
    }
    fn pace(&self) -> Pace {
        Pace {
            batch: self.write_batch,
            producers: self.producers,
            rate: self.rate,
            partitions: self.partitions,
        }
    }
    fn head(&self) -> serde_json::Value {
        json!({
            "system": self.system.name(),
            "workload": "pubsub",
            "message_size": self.message_size,
            "partitions": self.partitions,
            "producers": self.producers,
            "groups": self.groups,
            "consumers_per_group": self.consumers_per_group,
            "write_batch": self.write_batch,
            "read_batch": self.read_batch,
            "target_rate": self.rate,
        })
    }
}
