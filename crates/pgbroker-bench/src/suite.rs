//! `pgbroker-bench suite`: every scenario of the comparison, each system in
//! turn per round (A B C, then C B A), every run appended to a JSON-lines
//! file with its scenario and round, and a table of medians and ratios
//! per scenario. `--smoke` runs one short round of two small scenarios;
//! `--quick` is the short form for checking a performance change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::summary::{append_jsonl, print_table, Summary};
use crate::systems::{name_of, Endpoints, PubsubSystem as P, QueueSystem as Q};
use crate::workload::{PubsubArgs, QueueArgs};

/// Flags of `suite`.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    /// Rounds; each runs every system of a scenario once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Measured time of each run.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Warm-up of each run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Only the scenarios whose names contain one of these.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// One short round of two small scenarios, every system once.
    #[arg(long)]
    pub smoke: bool,
    /// The short form to run before and after a performance change (a few
    /// minutes; compare the two files with `diff`): every workload
    /// scenario, pgbroker's system only, two rounds of 5 s after 2 s of
    /// warm-up. `--only` still applies.
    #[arg(long, conflicts_with = "smoke")]
    pub quick: bool,
    /// Append every run to this JSON-lines file (with an environment line first).
    #[arg(long, default_value = "results/bench.jsonl")]
    pub out: PathBuf,
}

/// What a scenario runs.
pub enum Kind {
    /// The pub/sub workload with these systems.
    Pubsub(Vec<P>),
    /// The queue workload with these systems.
    Queue(Vec<Q>),
    /// The console's page loads (module `pages`).
    Pages,
    /// Five groups on a primary of the harness's own, without and with
    /// its standby serving reads, at each rate of a sweep (module `standby`).
    Standby,
    /// One broker and three on one schema (module `brokers`).
    Brokers,
}

/// One workload shape and the systems compared on it; ratios are against
/// the first system.
pub struct Scenario {
    /// Its name in results and in the report.
    pub name: &'static str,
    /// Workload flags, as on the command line.
    pub flags: &'static str,
    /// Workload and systems.
    pub kind: Kind,
}

/// The full comparison.
pub fn scenarios() -> Vec<Scenario> {
    use Kind::{Pubsub, Queue};
    vec![
        Scenario {
            name: "pubsub-write-only",
            flags: "--groups 0",
            kind: Pubsub(vec![
                P::Pgbroker,
                P::Article,
                P::Ceiling,
                P::KafkaProtocol,
                P::Nats,
                P::Redis,
            ]),
        },
        Scenario {
            name: "pubsub-5-groups-at-5k",
            flags: "--rate 5000",
            kind: Pubsub(vec![P::Pgbroker, P::Article, P::Nats, P::Redis]),
        },
        Scenario {
            name: "pubsub-5-groups-max",
            flags: "",
            kind: Pubsub(vec![P::Pgbroker, P::Article, P::Nats, P::Redis]),
        },
        Scenario {
            name: "kafka-one-group-max",
            flags: "--groups 1 --consumers-per-group 4 --producers 8",
            kind: Pubsub(vec![P::KafkaProtocol, P::Pgbroker, P::Nats, P::Redis, P::Tansu]),
        },
        Scenario {
            name: "kafka-one-group-at-5k",
            flags: "--groups 1 --consumers-per-group 4 --producers 8 --rate 5000",
            kind: Pubsub(vec![P::KafkaProtocol, P::Pgbroker, P::Nats, P::Redis, P::Tansu]),
        },
        // One group of four drains a backlog of 3 million records (about
        // 3 GB) while a producer adds 1,000/s: the read rate is the
        // consumers' own, not the producers', only while the backlog
        // lasts. `pgbroker serve` reads it in about 7 s, so measure this
        // scenario with a short window (`--warmup 1s --duration 5s`);
        // the default window mostly measures the producer.
        Scenario {
            name: "kafka-drain-backlog",
            flags: "--groups 1 --consumers-per-group 4 --producers 1 --rate 1000 --backlog 3000000",
            kind: Pubsub(vec![P::KafkaProtocol, P::Tansu]),
        },
        // Transactions of 100 records over 4 partitions, each committing
        // an input offset: flat out, and at 5,000 records/s for latency.
        // Plain librdkafka produce of the same batches is the cost baseline.
        Scenario {
            name: "kafka-txn-100x4-max",
            flags: "--groups 1 --consumers-per-group 4 --producers 8 --partitions 4 --write-batch 100",
            kind: Pubsub(vec![P::KafkaTransactional, P::KafkaProtocol]),
        },
        Scenario {
            name: "kafka-txn-100x4-at-5k",
            flags: "--groups 1 --consumers-per-group 4 --producers 8 --partitions 4 --write-batch 100 --rate 5000",
            kind: Pubsub(vec![P::KafkaTransactional, P::KafkaProtocol]),
        },
        // The same run as kafka-one-group-max, without and with the
        // console's overview open and refreshing.
        Scenario {
            name: "kafka-one-group-console",
            flags: "--groups 1 --consumers-per-group 4 --producers 8",
            kind: Pubsub(vec![P::KafkaProtocol, P::KafkaConsole]),
        },
        Scenario {
            name: crate::pages::SCENARIO,
            flags: "--partitions 1000 --samples 20",
            kind: Kind::Pages,
        },
        // Needs the Postgres programs (initdb, pg_basebackup, pg_ctl) and,
        // as root, the `postgres` user: it runs a primary and standby of
        // its own.
        Scenario {
            name: crate::standby::SCENARIO,
            flags: "--groups 5 --consumers-per-group 4 --producers 8 --rates 25000,40000,55000,70000",
            kind: Kind::Standby,
        },
        // The same with the brokers' record cache off: every read goes to
        // Postgres, as when consumers read behind the cache.
        Scenario {
            name: "kafka-5-groups-standby-no-cache",
            flags: "--groups 5 --consumers-per-group 4 --producers 8 --rates 5000,10000,20000,30000 \
                    --cache-bytes-per-partition 0",
            kind: Kind::Standby,
        },
        // Consumers catching up: each group starts at the beginning of a
        // backlog of a million records, far beyond the record cache, while
        // producers keep writing; the standby has long replayed the backlog.
        Scenario {
            name: "kafka-5-groups-standby-catch-up",
            flags: "--groups 5 --consumers-per-group 4 --producers 8 --rates 5000 --backlog 1000000",
            kind: Kind::Standby,
        },
        Scenario {
            name: crate::brokers::SCENARIO,
            flags: "--brokers 1,3 --groups 5 --consumers-per-group 4 --producers 8",
            kind: Kind::Brokers,
        },
        Scenario {
            name: "queue-single",
            flags: "--send-batch 1 --receive-batch 1",
            kind: Queue(vec![Q::Pgbroker, Q::Article, Q::Pgmq, Q::Rabbitmq]),
        },
        Scenario {
            name: "queue-batch-100",
            flags: "--send-batch 100 --receive-batch 100",
            kind: Queue(vec![Q::Pgbroker, Q::Article, Q::Pgmq, Q::Rabbitmq]),
        },
        Scenario {
            name: "queue-batch-100-at-32k",
            flags: "--send-batch 100 --receive-batch 100 --rate 32000",
            kind: Queue(vec![Q::Pgbroker, Q::Article, Q::Pgmq, Q::Rabbitmq]),
        },
        Scenario {
            name: "queue-single-at-3k",
            flags: "--send-batch 1 --receive-batch 1 --rate 3000",
            kind: Queue(vec![Q::Pgbroker, Q::Article, Q::Pgmq, Q::Rabbitmq]),
        },
        Scenario {
            name: "sqs-batch-10",
            flags: "--send-batch 10 --receive-batch 10",
            kind: Queue(vec![Q::Sqs, Q::Pgbroker, Q::Rabbitmq]),
        },
        Scenario {
            name: "sqs-single",
            flags: "--send-batch 1 --receive-batch 1",
            kind: Queue(vec![Q::Sqs, Q::Pgbroker, Q::Rabbitmq]),
        },
        // Receivers long-poll an empty queue; each message wakes one.
        // Latency is from just before the send to the receive's answer.
        Scenario {
            name: "sqs-wake-up",
            flags: "--producers 1 --workers 4 --send-batch 1 --receive-batch 1 --rate 100 --long-poll-s 20",
            kind: Queue(vec![Q::Sqs, Q::Pgbroker, Q::Rabbitmq]),
        },
        Scenario {
            name: "sql-single",
            flags: "--send-batch 1 --receive-batch 1",
            kind: Queue(vec![Q::PgbrokerSql, Q::Article, Q::Pgmq, Q::PgbrokerSqlLease]),
        },
        Scenario {
            name: "sql-batch-100",
            flags: "--send-batch 100 --receive-batch 100",
            kind: Queue(vec![Q::PgbrokerSql, Q::Pgmq, Q::Article]),
        },
    ]
}

/// The smoke version: every system once, small and short.
fn smoke_scenarios() -> Vec<Scenario> {
    use Kind::{Pubsub, Queue};
    vec![
        Scenario {
            name: "smoke-pubsub",
            flags: "--groups 1 --consumers-per-group 2 --producers 2 --partitions 2 --rate 2000",
            kind: Pubsub(vec![
                P::KafkaProtocol,
                P::Pgbroker,
                P::Article,
                P::Ceiling,
                P::Nats,
                P::Redis,
            ]),
        },
        Scenario {
            name: "smoke-queue",
            flags: "--producers 2 --workers 2 --send-batch 10 --receive-batch 10 --rate 2000",
            kind: Queue(vec![
                Q::Pgbroker,
                Q::Article,
                Q::Pgmq,
                Q::Rabbitmq,
                Q::Sqs,
                Q::PgbrokerSql,
            ]),
        },
    ]
}

/// The short form: every workload scenario with its first system only,
/// which is always pgbroker's (the tables' ratios are against it).
fn quick_scenarios() -> Vec<Scenario> {
    scenarios()
        .into_iter()
        .filter_map(|s| {
            let kind = match s.kind {
                Kind::Pubsub(v) => Kind::Pubsub(v.into_iter().take(1).collect()),
                Kind::Queue(v) => Kind::Queue(v.into_iter().take(1).collect()),
                Kind::Pages | Kind::Standby | Kind::Brokers => return None,
            };
            Some(Scenario { kind, ..s })
        })
        .collect()
}

#[derive(Parser)]
struct PubsubFlags {
    #[command(flatten)]
    args: PubsubArgs,
}

#[derive(Parser)]
struct PagesFlags {
    #[command(flatten)]
    args: crate::pages::PagesArgs,
}

#[derive(Parser)]
struct QueueFlags {
    #[command(flatten)]
    args: QueueArgs,
}

/// Workload flags plus the suite's timing, as clap parses them.
fn argv(flags: &str, duration: Duration, warmup: Duration) -> Vec<String> {
    let mut v = vec!["scenario".to_string()];
    v.extend(flags.split_whitespace().map(String::from));
    v.extend(["--duration".into(), humantime::format_duration(duration).to_string()]);
    v.extend(["--warmup".into(), humantime::format_duration(warmup).to_string()]);
    v
}

/// Parses a scenario's pub/sub flags.
pub fn pubsub_args(flags: &str, duration: Duration, warmup: Duration) -> Result<PubsubArgs> {
    Ok(PubsubFlags::try_parse_from(argv(flags, duration, warmup))?.args)
}

/// Parses a scenario's queue flags.
pub fn queue_args(flags: &str, duration: Duration, warmup: Duration) -> Result<QueueArgs> {
    Ok(QueueFlags::try_parse_from(argv(flags, duration, warmup))?.args)
}

/// Parses the page-load scenario's flags.
pub fn pages_args(flags: &str) -> Result<crate::pages::PagesArgs> {
    let argv = std::iter::once("scenario").chain(flags.split_whitespace());
    Ok(PagesFlags::try_parse_from(argv)?.args)
}

/// A workload and the systems that run it in turn.
pub enum Plan {
    /// The pub/sub workload.
    Pubsub(PubsubArgs, Vec<P>),
    /// The queue workload.
    Queue(QueueArgs, Vec<Q>),
}

impl Plan {
    /// The plan of scenario `s` with the given timing.
    pub fn of(s: &Scenario, duration: Duration, warmup: Duration) -> Result<Plan> {
        Ok(match &s.kind {
            Kind::Pubsub(systems) => Plan::Pubsub(pubsub_args(s.flags, duration, warmup)?, systems.clone()),
            Kind::Queue(systems) => Plan::Queue(queue_args(s.flags, duration, warmup)?, systems.clone()),
            Kind::Pages | Kind::Standby | Kind::Brokers => {
                anyhow::bail!("{} is not a workload of systems", s.name)
            }
        })
    }

    fn systems(&self) -> usize {
        match self {
            Plan::Pubsub(_, v) => v.len(),
            Plan::Queue(_, v) => v.len(),
        }
    }

    fn name(&self, i: usize) -> String {
        match self {
            Plan::Pubsub(_, v) => name_of(&v[i]),
            Plan::Queue(_, v) => name_of(&v[i]),
        }
    }

    async fn available(&self, env: &Endpoints, i: usize) -> bool {
        match self {
            Plan::Pubsub(_, v) => v[i].available(env).await,
            Plan::Queue(_, v) => v[i].available(env).await,
        }
    }

    async fn run(&self, env: &Endpoints, i: usize) -> Result<Summary> {
        match self {
            Plan::Pubsub(args, v) => v[i].run(env, args).await,
            Plan::Queue(args, v) => v[i].run(env, args).await,
        }
    }

    /// Runs every system `rounds` times in turn as `scenario`, the order
    /// reversed every other round (A B C, C B A, A B C ...) so that no
    /// system always follows the same one (a run pays for the checkpoint
    /// and vacuum of the run before it); appends each run to `out`,
    /// prints the table of medians and returns the runs.
    pub async fn rounds(
        &self,
        env: &Endpoints,
        scenario: &str,
        rounds: u32,
        out: Option<&Path>,
    ) -> Result<Vec<Summary>> {
        let mut runs = Vec::new();
        let total = u64::from(rounds) * u64::try_from(self.systems()).unwrap_or(0);
        let bar = runs_bar(total, scenario);
        let say = |line: String| match &bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        };
        for round in 1..=rounds {
            let order: Vec<usize> = if round % 2 == 1 {
                (0..self.systems()).collect()
            } else {
                (0..self.systems()).rev().collect()
            };
            for i in order {
                let name = self.name(i);
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                if !self.available(env, i).await {
                    say(format!("{scenario}: {name} does not answer; skipped"));
                    continue;
                }
                say(format!("{scenario} round {round}: {name}"));
                if let Some(bar) = &bar {
                    bar.set_message(format!("round {round}: {name}"));
                }
                let mut run = self
                    .run(env, i)
                    .await
                    .with_context(|| format!("{scenario} on {name}"))?;
                run.scenario = Some(scenario.to_string());
                run.round = Some(round);
                if let Some(out) = out {
                    append_jsonl(out, &run)?;
                }
                runs.push(run);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        println!("\n== {scenario} ==");
        print_table(&runs, rounds);
        Ok(runs)
    }
}

/// A bar over the runs of one scenario (which run it is, and the time
/// spent), on standard error when it is a terminal; `None` otherwise, when
/// the plain lines are printed instead.
fn runs_bar(total: u64, scenario: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() || total == 0 {
        return None;
    }
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:25}] run {pos}/{len} {msg} ({elapsed})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let bar = indicatif::ProgressBar::new(total).with_style(style);
    bar.set_prefix(scenario.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    Some(bar)
}

/// Runs the suite.
pub async fn suite(env: &Endpoints, args: &SuiteArgs) -> Result<()> {
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    append_jsonl(&args.out, &crate::db::environment(&env.database_url).await?)?;
    let (list, rounds, duration, warmup) = if args.smoke {
        (smoke_scenarios(), 1, Duration::from_secs(2), Duration::from_secs(1))
    } else if args.quick {
        (quick_scenarios(), 2, Duration::from_secs(5), Duration::from_secs(2))
    } else {
        (scenarios(), args.rounds, args.duration, args.warmup)
    };
    let chosen = list
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o.as_str())));
    let mut outcome = Ok(());
    for s in chosen {
        if let Err(e) = one_scenario(env, s, rounds, duration, warmup, &args.out).await {
            outcome = Err(e);
            break;
        }
    }
    crate::systems::drop_schema(&env.database_url).await?;
    outcome
}

/// Runs scenario `s`, appending its lines to `out`.
async fn one_scenario(
    env: &Endpoints,
    s: &Scenario,
    rounds: u32,
    duration: Duration,
    warmup: Duration,
    out: &Path,
) -> Result<()> {
    match s.kind {
        Kind::Pages => crate::pages::run(env, &pages_args(s.flags)?, rounds, Some(out))
            .await
            .map(drop),
        Kind::Standby => {
            let a = crate::standby::args(s.flags, duration, warmup)?;
            crate::standby::run(env, s.name, &a, rounds, out).await.map(drop)
        }
        Kind::Brokers => {
            let a = crate::brokers::args(s.flags, duration, warmup)?;
            crate::brokers::run(env, &a, rounds, out).await.map(drop)
        }
        Kind::Pubsub(_) | Kind::Queue(_) => Plan::of(s, duration, warmup)?
            .rounds(env, s.name, rounds, Some(out))
            .await
            .map(drop),
    }
}
