//! `pgbroker bench compare`: the same workload against several systems in
//! turn (A B A B ...), so that they share the machine's state and noise,
//! then medians per system and ratios against the first.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use pgbroker::Broker;
use serde_json::Value;

use super::{run_once, PubsubArgs, System};

/// Flags of `bench compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Systems to run in turn each round; ratios are against the first.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pgbroker,article")]
    pub systems: Vec<System>,
    /// Rounds; each runs every system once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Append each run's summary to this file as one JSON line.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The workload (its --system and --json are ignored).
    #[command(flatten)]
    pub workload: PubsubArgs,
}

/// The figures compared, with whether more is better.
pub const FIGURES: &[(&str, bool)] = &[
    ("write_msgs_per_s", true),
    ("read_msgs_per_s", true),
    ("e2e_p50_ms", false),
    ("e2e_p99_ms", false),
    ("e2e_p999_ms", false),
    ("produce_p99_ms", false),
    ("postgres_cpu_s_per_million", false),
    ("broker_cpu_s_per_million", false),
    ("client_cpu_s_per_million", false),
    ("broker_rss_max_mib", false),
];

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs the comparison and prints its table.
pub async fn compare(broker: Broker, database_url: &str, args: CompareArgs) -> Result<()> {
    let mut runs: Vec<Value> = Vec::new();
    for round in 1..=args.rounds {
        for system in &args.systems {
            let mut workload = args.workload.clone();
            workload.system = *system;
            workload.run.json = None;
            eprintln!("round {round}: {}", system.name());
            let mut summary = run_once(&broker, database_url, &workload).await?;
            summary["round"] = round.into();
            if let Some(path) = &args.out {
                append_jsonl(path, &summary)?;
            }
            runs.push(summary);
        }
    }
    let names: Vec<&str> = args.systems.iter().map(|s| s.name()).collect();
    print_table(&runs, &names, args.rounds);
    Ok(())
}

/// Appends `summary` to `path` as one JSON line.
pub fn append_jsonl(path: &std::path::Path, summary: &Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(summary)?)?;
    Ok(())
}

/// Medians of [`FIGURES`] per system over `runs`, in the order of `systems`.
pub fn medians(runs: &[Value], systems: &[&str]) -> Vec<Vec<f64>> {
    systems
        .iter()
        .map(|s| {
            let mine: Vec<&Value> = runs.iter().filter(|r| r["system"] == *s).collect();
            FIGURES
                .iter()
                .map(|(k, _)| median(mine.iter().filter_map(|r| r[*k].as_f64()).collect()))
                .collect()
        })
        .collect()
}

/// Prints medians per system and ratios against the first system.
pub fn print_table(runs: &[Value], systems: &[&str], rounds: u32) {
    let medians = medians(runs, systems);
    println!(
        "median of {rounds} rounds; ratio = system / {}",
        systems.first().copied().unwrap_or("-")
    );
    print!("{:<28}", "figure");
    for s in systems {
        print!("{s:>14}{:>9}", "ratio");
    }
    println!();
    for (i, (figure, _)) in FIGURES.iter().enumerate() {
        print!("{figure:<28}");
        let base = medians.first().map_or(f64::NAN, |m| m[i]);
        for values in &medians {
            print!("{:>14.1}{:>9.2}", values[i], values[i] / base);
        }
        println!();
    }
}
