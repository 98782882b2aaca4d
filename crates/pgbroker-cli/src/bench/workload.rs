//! What the shared benchmark machinery (`measure`, `produce_loop`) needs to
//! know of a workload's flags.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::PubsubArgs;

/// Flags every benchmark has: how long it runs and where its summary goes.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Measured time.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time before measuring starts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Write the summary as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

impl RunArgs {
    /// Prints the summary and, with `--json`, writes it to the file.
    pub fn report(&self, summary: &serde_json::Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(summary)?);
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_vec_pretty(summary)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// How producers pace their sends.
pub struct Pace {
    /// Messages per send call.
    pub batch: u32,
    /// Concurrent producers.
    pub producers: u32,
    /// Target total messages/s; flat out when `None`.
    pub rate: Option<u64>,
    /// Partitions to rotate over (1 when there are none).
    pub partitions: i32,
}

/// What `measure` and `produce_loop` need to know of a workload.
pub trait Workload {
    /// Timing and output flags.
    fn run(&self) -> &RunArgs;
    /// Message size in bytes.
    fn message_size(&self) -> u32;
    /// How producers pace their sends.
    fn pace(&self) -> Pace;
    /// The summary's leading keys: system, workload name and parameters.
    fn head(&self) -> serde_json::Value;
}

impl Workload for PubsubArgs {
    fn run(&self) -> &RunArgs {
        &self.run
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

/// A workload reported under another system's name: how the comparison
/// harness runs the same flags against a peer.
pub struct Relabel<'a, W> {
    /// The workload's flags.
    pub workload: &'a W,
    /// The `system` key of the summary.
    pub system: &'a str,
}

impl<W: Workload> Workload for Relabel<'_, W> {
    fn run(&self) -> &RunArgs {
        self.workload.run()
    }
    fn message_size(&self) -> u32 {
        self.workload.message_size()
    }
    fn pace(&self) -> Pace {
        self.workload.pace()
    }
    fn head(&self) -> serde_json::Value {
        let mut head = self.workload.head();
        head["system"] = self.system.into();
        head
    }
}
