//! The `pgbroker` command: migrate, administer topics and groups, produce
//! and consume records, run retention, and work with queues.

mod acl;
mod embedded;
mod group;
mod help;
mod output;
mod progress;
mod queue;
mod queue_text;
mod serve;
mod stream;
mod topic;
mod txn;
mod user;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use pgbroker::{Broker, BrokerConfig, GroupId, TopicName};

/// Keeps a hostile request's absurd array count from aborting the server;
/// see [`pgbroker_kafka::GuardedAlloc`].
#[global_allocator]
static ALLOC: pgbroker_kafka::GuardedAlloc = pgbroker_kafka::GuardedAlloc;

/// Largest `--max-message-bytes` the library accepts (its
/// `MAX_MESSAGE_BYTES_LIMIT`, which it does not export); checked here so a
/// bad value is refused before connecting.
const MAX_MESSAGE_BYTES_LIMIT: u64 = 64 << 20;

/// The command line: global flags and one command.
#[derive(Debug, Parser)]
#[command(name = "pgbroker", version, about = help::ABOUT, after_help = help::TOP)]
struct Cli {
    /// PostgreSQL connection URL or key=value string.
    // hide_env_values: the URL may hold a password, which --help must not show.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true,
          default_value = pgbroker::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Schema holding pgbroker's tables.
    #[arg(long, global = true, env = "PGBROKER_SCHEMA", default_value = pgbroker::DEFAULT_SCHEMA,
          value_parser = parse_schema)]
    schema: String,
    /// Log filter for stderr (tracing EnvFilter syntax, e.g. `info` or
    /// `pgbroker=debug`); `info` for `serve`, `warn` for other commands.
    #[arg(long, global = true, env = "PGBROKER_LOG")]
    log: Option<String>,
    /// Most Postgres connections the command opens (default: 32 for
    /// `serve`, 8 for other commands).
    #[arg(long, global = true, env = "PGBROKER_POOL_SIZE", value_name = "N",
          value_parser = clap::value_parser!(u16).range(2..=1000))]
    pool_size: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade pgbroker's tables in the schema.
    Migrate,
    /// Create, list, describe, grow and delete topics.
    #[command(subcommand, after_help = help::TOPIC)]
    Topic(TopicCommand),
    /// Write one record per line of standard input.
    #[command(after_help = help::PRODUCE)]
    Produce(ProduceArgs),
    /// Print records of a topic.
    #[command(after_help = help::CONSUME)]
    Consume(ConsumeArgs),
    /// Inspect and administer consumer groups.
    #[command(subcommand, after_help = help::GROUP)]
    Group(GroupCommand),
    /// Work queues: create, send, receive, acknowledge, dead letters.
    #[command(subcommand, after_help = help::QUEUE)]
    Queue(queue::QueueCommand),
    /// Users that Kafka clients authenticate as (SASL SCRAM-SHA-256 or
    /// PLAIN), and their access keys for SQS clients.
    #[command(subcommand, after_help = help::USER)]
    User(user::UserCommand),
    /// What each user may do on the Kafka listener once SASL authentication
    /// is on, and on the SQS listener: produce, consume, group and admin
    /// rights per topic, group or queue.
    #[command(subcommand, after_help = help::ACL)]
    Acl(acl::AclCommand),
    /// Kafka transactions: list transactional ids, describe one, abort a
    /// hanging transaction.
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// Run one maintenance pass: drop expired segments, compact compacted
    /// topics, rotate queue storage.
    Maintain {
        /// Compact every compacted topic now, whatever its dirty ratio.
        #[arg(long)]
        force_compaction: bool,
    },
    /// Serve the Kafka protocol, with health and metrics over HTTP, and
    /// the SQS API when asked for.
    #[command(after_help = help::SERVE)]
    Serve(Box<serve::ServeArgs>),
    /// Print a shell completion script (bash, zsh, fish, ...).
    #[command(after_help = help::COMPLETIONS)]
    Completions(help::CompletionsArgs),
    /// Print the manual page (roff), or write one per command.
    #[command(after_help = help::MAN)]
    Man(help::ManArgs),
}

/// Output format of administrative commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Output format of `consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecordFormat {
    /// The value, one record per line.
    Text,
    /// One JSON object per line with position, key, value and headers.
    Json,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create(CreateTopicArgs),
    /// List topics.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a topic's settings and the state of each partition.
    Describe {
        #[arg(value_parser = parse_topic)]
        topic: TopicName,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Add partitions to a topic.
    AddPartitions {
        #[arg(value_parser = parse_topic)]
        topic: TopicName,
        /// How many partitions to add.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=i64::from(pgbroker::streams::MAX_PARTITIONS)))]
        count: i32,
    },
    /// Delete a topic with its records and committed offsets.
    Delete {
        #[arg(value_parser = parse_topic)]
        topic: TopicName,
    },
    /// Change a topic's retention, largest record or clean-up settings;
    /// what is not given stays as it is.
    Alter(AlterTopicArgs),
    /// The cleaner's state of every partition of the compacted topics.
    Cleaner {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// A topic's clean-up settings, as Kafka's topic configs of the same names.
#[derive(Debug, Args)]
struct CleanupArgs {
    /// `delete` (retention only), `compact` (keep the latest record of each
    /// key) or `compact,delete` (both).
    #[arg(long, value_parser = parse_cleanup_policy)]
    cleanup_policy: Option<pgbroker::streams::CleanupPolicy>,
    /// A record stays uncompacted at least this many milliseconds.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    min_compaction_lag_ms: Option<i64>,
    /// A record is compacted at the latest this many milliseconds after it
    /// was written, whatever the dirty ratio.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    max_compaction_lag_ms: Option<i64>,
    /// Tombstones are kept this many milliseconds after their segment was
    /// first compacted.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    delete_retention_ms: Option<i64>,
    /// Share of not yet compacted records (0 to 1) that starts a compaction.
    #[arg(long, value_parser = parse_ratio)]
    min_cleanable_dirty_ratio: Option<f64>,
}

impl CleanupArgs {
    /// Applies the given settings over `cleanup`.
    fn apply(&self, cleanup: &mut pgbroker::streams::Cleanup) {
        if let Some(p) = self.cleanup_policy {
            cleanup.policy = p;
        }
        if let Some(v) = self.min_compaction_lag_ms {
            cleanup.min_compaction_lag_ms = v;
        }
        if let Some(v) = self.max_compaction_lag_ms {
            cleanup.max_compaction_lag_ms = v;
        }
        if let Some(v) = self.delete_retention_ms {
            cleanup.delete_retention_ms = v;
        }
        if let Some(v) = self.min_cleanable_dirty_ratio {
            cleanup.min_cleanable_dirty_ratio = v;
        }
    }
}

#[derive(Debug, Args)]
struct AlterTopicArgs {
    #[arg(value_parser = parse_topic)]
    topic: TopicName,
    /// Drop segments whose newest record is older than this (e.g. `7d`, `12h`).
    #[arg(long, value_parser = parse_positive_duration)]
    retention: Option<Duration>,
    /// Drop the oldest segments while a partition is larger than this many bytes.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    retention_bytes: Option<i64>,
    /// Largest record (key, value and headers) accepted, in bytes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGE_BYTES_LIMIT))]
    max_message_bytes: Option<u64>,
    #[command(flatten)]
    cleanup: CleanupArgs,
}

#[derive(Debug, Args)]
struct CreateTopicArgs {
    #[arg(value_parser = parse_topic)]
    topic: TopicName,
    /// Number of partitions.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=i64::from(pgbroker::streams::MAX_PARTITIONS)))]
    partitions: i32,
    /// Drop segments whose newest record is older than this (e.g. `7d`,
    /// `12h`); `forever` or `none` keeps records however old (the default).
    #[arg(long, value_name = "DURATION", value_parser = parse_retention)]
    retention: Option<Retention>,
    /// Drop the oldest segments while a partition is larger than this many bytes.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    retention_bytes: Option<i64>,
    /// Records per segment, the unit retention drops.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1_i64 << 40))]
    segment_records: Option<i64>,
    /// Largest record (key, value and headers) accepted, in bytes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGE_BYTES_LIMIT))]
    max_message_bytes: Option<u64>,
    #[command(flatten)]
    cleanup: CleanupArgs,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[arg(value_parser = parse_topic)]
    topic: TopicName,
    /// Split each line at the first occurrence of SEP into key and value;
    /// lines without it get no key.
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    key_separator: Option<String>,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// A header added to every record (repeatable).
    #[arg(long = "header", value_name = "K=V", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[arg(value_parser = parse_topic)]
    topic: TopicName,
    /// Consume as a member of this group, committing what was printed.
    #[arg(long, value_parser = parse_group)]
    group: Option<GroupId>,
    /// Consume as a member of this share group: records are shared with
    /// its other members, each acknowledged once printed (accepted unless
    /// --release or --reject). Where a group starts is its
    /// `share.auto.offset.reset` (`pgbroker group config GROUP --set ...`).
    #[arg(long, value_parser = parse_group, conflicts_with_all = ["group", "partition", "from_beginning"])]
    share_group: Option<GroupId>,
    /// With --share-group: release each printed record (it is delivered again).
    #[arg(long, requires = "share_group", conflicts_with = "reject")]
    release: bool,
    /// With --share-group: reject each printed record (it is archived).
    #[arg(long, requires = "share_group")]
    reject: bool,
    /// Without a committed offset, start at the log start instead of new records only.
    #[arg(long)]
    from_beginning: bool,
    /// Read only --partition, starting at this offset.
    #[arg(long, requires = "partition", conflicts_with = "group", value_parser = clap::value_parser!(i64).range(0..))]
    offset: Option<i64>,
    /// Read only this partition (no group).
    #[arg(long, conflicts_with = "group", value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Exit after printing this many records.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// Exit when no record arrived for this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    #[arg(long, value_enum, default_value_t = RecordFormat::Text)]
    format: RecordFormat,
    /// In text format, print `key<TAB>value`.
    #[arg(long)]
    print_key: bool,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List groups with members or committed offsets.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a group's members and, per partition, committed offset and lag.
    Describe {
        #[arg(value_parser = parse_group)]
        group: GroupId,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Move an inactive group's committed offsets on one topic.
    ResetOffsets(ResetArgs),
    /// Delete an inactive group and its committed offsets.
    Delete {
        #[arg(value_parser = parse_group)]
        group: GroupId,
    },
    /// Show a group's settings (`share.*`, `consumer.*`), or change them.
    Config {
        #[arg(value_parser = parse_group)]
        group: GroupId,
        /// Set a setting, e.g. `share.auto.offset.reset=earliest` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_header)]
        set: Vec<(String, String)>,
        /// Put a setting back to its default (repeatable).
        #[arg(long = "unset", value_name = "NAME")]
        unset: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).multiple(false)
    .args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
struct ResetArgs {
    #[arg(value_parser = parse_group)]
    group: GroupId,
    #[arg(long, value_parser = parse_topic)]
    topic: TopicName,
    /// Move to each partition's log start.
    #[arg(long)]
    to_earliest: bool,
    /// Move to each partition's high watermark.
    #[arg(long)]
    to_latest: bool,
    /// Move to this offset, clamped into each partition's range.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    to_offset: Option<i64>,
    /// Move to the first record at or after this RFC 3339 time (e.g. `2024-05-01T12:00:00Z`).
    #[arg(long, value_parser = parse_datetime)]
    to_datetime: Option<SystemTime>,
}

fn parse_topic(s: &str) -> Result<TopicName, String> {
    TopicName::new(s).map_err(|e| e.to_string())
}

fn parse_group(s: &str) -> Result<GroupId, String> {
    GroupId::new(s).map_err(|e| e.to_string())
}

fn parse_schema(s: &str) -> Result<String, String> {
    pgbroker::validate_schema(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{s:?} is not a duration ({e}); use a number and a unit, e.g. 30s, 15m, 12h, 7d"
        )),
    }
}

/// `--retention`: a time, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retention {
    /// Records older than this are dropped.
    For(Duration),
    /// Records are kept however old.
    Forever,
}

impl Retention {
    fn duration(self) -> Option<Duration> {
        match self {
            Retention::For(d) => Some(d),
            Retention::Forever => None,
        }
    }
}

fn parse_retention(s: &str) -> Result<Retention, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "forever" | "none" | "infinite" => Ok(Retention::Forever),
        _ => parse_positive_duration(s)
            .map(Retention::For)
            .map_err(|e| format!("{e}; or `forever` (also `none`) to keep records however old")),
    }
}

fn parse_cleanup_policy(s: &str) -> Result<pgbroker::streams::CleanupPolicy, String> {
    s.parse().map_err(|e: pgbroker::Error| e.to_string())
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

fn parse_datetime(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s).map_err(|e| format!("{e}; expected RFC 3339, e.g. 2024-05-01T12:00:00Z"))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected K=V with a non-empty key".to_string()),
    }
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).with_context(|| format!("invalid --log {filter:?}"))?;
    // Colour only for a person at a terminal: a log file or a pipe gets
    // plain text (and NO_COLOR turns it off everywhere).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn connect(cli: &Cli) -> anyhow::Result<Broker> {
    // One command runs a few statements at a time; produce fans out per
    // partition.
    let pool_size = match (&cli.command, cli.pool_size) {
        (_, Some(n)) => usize::from(n),
        (Command::Serve(_), None) => serve::POOL_SIZE,
        _ => 8,
    };
    let mut config = BrokerConfig {
        database_url: cli.database_url.clone(),
        schema: cli.schema.clone(),
        pool_size,
        migrate: !only_reads(&cli.command),
        ..BrokerConfig::default()
    };
    if let Command::Serve(args) = &cli.command {
        config.cache_bytes_per_partition = args.cache_bytes_per_partition;
        config.replica_urls.clone_from(&args.replica_urls);
    }
    match Broker::connect(config).await {
        Ok(broker) => Ok(broker),
        // No fallback to the embedded cluster: a broker whose database is
        // briefly down must not start writing somewhere else.
        Err(e @ pgbroker::Error::Connect { .. })
            if matches!(cli.command, Command::Serve(_)) && cli.database_url == pgbroker::DEFAULT_DATABASE_URL =>
        {
            Err(anyhow::Error::new(e).context(
                "no PostgreSQL at the default address: start one there, name yours with --database-url, \
                 or run a private one with `pgbroker serve --embedded`",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Commands that only read: they never create or migrate the schema, so a
/// misspelled `--schema` is reported instead of created.
fn only_reads(command: &Command) -> bool {
    matches!(
        command,
        Command::Topic(TopicCommand::List { .. } | TopicCommand::Describe { .. })
            | Command::Group(GroupCommand::List { .. } | GroupCommand::Describe { .. })
            | Command::Queue(queue::QueueCommand::List { .. } | queue::QueueCommand::Stats { .. })
            | Command::User(user::UserCommand::List { .. } | user::UserCommand::Key(user::KeyCommand::List { .. }))
            | Command::Acl(acl::AclCommand::List { .. })
            | Command::Txn(txn::TxnCommand::List { .. } | txn::TxnCommand::Describe { .. })
            | Command::Consume(_)
    )
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Completions(args) => return help::completions(args),
        Command::Man(args) => return help::man(args),
        _ => {}
    }
    let embedded = match &cli.command {
        Command::Serve(args) => embedded::start(&args.embedded, &cli.database_url).await?,
        _ => None,
    };
    let Some(embedded) = embedded else {
        return run_connected(cli).await;
    };
    cli.database_url = embedded.database_url();
    let result = run_connected(cli).await;
    embedded.stop().await;
    result
}

async fn run_connected(cli: Cli) -> anyhow::Result<()> {
    let broker = connect(&cli).await?;
    match cli.command {
        Command::Migrate => {
            let report = broker.migrate().await?;
            println!("schema {} at version {}", broker.schema(), report.to);
            Ok(())
        }
        Command::Topic(cmd) => topic::run(&broker, cmd).await,
        Command::Produce(args) => stream::produce(&broker, args).await,
        Command::Consume(args) => stream::consume(&broker, args).await,
        Command::Group(cmd) => group::run(&broker, cmd).await,
        Command::Queue(cmd) => queue::run(&broker, cmd).await,
        Command::User(cmd) => user::run(&broker, cmd).await,
        Command::Acl(cmd) => acl::run(&broker, cmd).await,
        Command::Txn(cmd) => txn::run(&broker, cmd).await,
        Command::Serve(args) => serve::run(broker, *args).await,
        Command::Completions(_) | Command::Man(_) => Ok(()),
        Command::Maintain { force_compaction } => {
            let dropped = broker.maintenance().enforce_retention().await?;
            println!("dropped {}", output::count(dropped, "segment"));
            let c = broker.maintenance().compact(force_compaction).await?;
            println!(
                "compaction: {} cleaned ({} busy), {} rewritten, {} removed, {} bytes reclaimed",
                output::count(c.partitions_cleaned, "partition"),
                c.partitions_busy,
                output::count(c.segments_rewritten, "segment"),
                output::count(c.records_removed, "record"),
                c.bytes_reclaimed
            );
            let q = broker.maintenance().maintain_queues().await?;
            println!(
                "queues: {} ({} moved, {} freed), {} expired",
                if q.rotated {
                    "storage rotated"
                } else {
                    "storage not rotated"
                },
                output::count(q.moved, "message"),
                output::count(q.reclaimed_bytes, "byte"),
                output::count(q.archive_expired, "archived message")
            );
            Ok(())
        }
    }
}

/// True when the error is a closed stdout (e.g. piped into `head`): not a
/// failure of this command, so it exits quietly.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = cli.log.clone().unwrap_or_else(|| default_log.to_string());
    let result = init_logging(&filter).and_then(|()| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let result = runtime.block_on(run(cli));
        // A blocking stdin read may still be pending; dropping the runtime
        // would wait for it forever.
        runtime.shutdown_background();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
