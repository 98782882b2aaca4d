//! `pgbroker-bench compare`: any pub/sub workload against chosen systems in
//! turn (A B A B ...), so that they share the machine's state and noise,
//! then medians per system and ratios against the first.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::suite::Plan;
use crate::systems::{Endpoints, PubsubSystem};
use crate::workload::PubsubArgs;

/// Flags of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Systems to run in turn each round; ratios are against the first.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pgbroker,article")]
    pub systems: Vec<PubsubSystem>,
    /// Rounds; each runs every system once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Append each run's summary to this file as one JSON line (scenario
    /// `compare`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The workload (its --json is ignored).
    #[command(flatten)]
    pub workload: PubsubArgs,
}

/// Runs the comparison and prints its table.
pub async fn compare(env: &Endpoints, args: CompareArgs) -> Result<()> {
    if let Some(dir) = args
        .out
        .as_ref()
        .and_then(|o| o.parent())
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let plan = Plan::Pubsub(args.workload, args.systems);
    let ran = plan.rounds(env, "compare", args.rounds, args.out.as_deref()).await;
    crate::systems::drop_schema(&env.database_url).await?;
    ran.map(drop)
}
