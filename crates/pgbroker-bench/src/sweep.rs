//! `pgbroker-bench sweep`: latency against offered rate. The pub/sub
//! workload at each target rate (and flat out), each system in turn per
//! rate and round, appended to the results as scenario `sweep`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::suite::pubsub_args;
use crate::summary::append_jsonl;
use crate::systems::{name_of, Endpoints, PubsubSystem};

/// Flags of `sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Offered rates in records/s; `max` for unthrottled.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000,50000,max")]
    pub rates: Vec<String>,
    /// Systems compared at each rate.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pgbroker,article")]
    pub systems: Vec<PubsubSystem>,
    /// The pub/sub workload's flags (default: the article's shape).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub flags: String,
    /// Rounds at each rate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Measured time of each run.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Warm-up of each run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Append every run to this JSON-lines file.
    #[arg(long, default_value = "results/bench.jsonl")]
    pub out: PathBuf,
}

/// Runs the sweep.
pub async fn sweep(env: &Endpoints, args: &SweepArgs) -> Result<()> {
    for round in 1..=args.rounds {
        for rate in &args.rates {
            let flags = if rate == "max" {
                args.flags.clone()
            } else {
                format!("{} --rate {}", args.flags, rate.parse::<u64>()?)
            };
            let workload = pubsub_args(&flags, args.duration, args.warmup)?;
            for system in &args.systems {
                eprintln!("sweep round {round}, rate {rate}: {}", name_of(system));
                let mut run = system.run(env, &workload).await?;
                run.scenario = Some("sweep".into());
                run.round = Some(round);
                append_jsonl(&args.out, &run)?;
            }
        }
    }
    crate::systems::drop_schema(&env.database_url).await
}
