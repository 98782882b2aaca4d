//! `kafka-protocol`: pgbroker's Kafka front end driven by librdkafka. The
//! harness starts `pgbroker serve` on a fresh schema, creates the topic,
//! and runs the workload's producers (acks=all, one librdkafka producer
//! each, awaiting every batch's deliveries) and groups of consumers. The
//! send time travels in the first 8 bytes of each value, as in the queue
//! workload, so end-to-end latency is on this process's clock. CPU and
//! memory are those of the `pgbroker serve` process.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;
use pgbroker::{Broker, BrokerConfig, TopicConfig, TopicName};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::console::OverviewPoller;
use crate::db;
use crate::measure::{histogram, latency_micros, payload, produce_loop, record, stamped, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::window::{Probe, Window};
use crate::workload::PubsubArgs;

/// The `pgbroker serve` child, killed when dropped.
pub struct Server {
    child: tokio::process::Child,
    /// `host:port` of its Kafka listener.
    pub bootstrap: String,
    /// `host:port` of its SQS listener, when started with one.
    pub sqs: Option<String>,
    /// `host:port` of its HTTP listener (health, metrics, the console).
    pub http: String,
}

impl Server {
    /// Starts `bin serve` on `schema` with free ports and waits until its
    /// Kafka listener (and its SQS listener, with `sqs`: unsigned requests
    /// allowed, on loopback) accepts connections.
    pub async fn start(bin: &Path, url: &str, schema: &str, sqs: bool) -> Result<Server> {
        Server::start_with(bin, url, schema, sqs, &[]).await
    }

    /// [`Server::start`] with more flags of `serve` (`--replica-url ...`).
    pub async fn start_with(bin: &Path, url: &str, schema: &str, sqs: bool, serve: &[String]) -> Result<Server> {
        let free_port = || -> Result<u16> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
        let (kafka, http) = (free_port()?, free_port()?);
        let bootstrap = format!("127.0.0.1:{kafka}");
        let http = format!("127.0.0.1:{http}");
        let sqs = if sqs {
            Some(format!("127.0.0.1:{}", free_port()?))
        } else {
            None
        };
        let mut command = tokio::process::Command::new(bin);
        command
            .args(["--database-url", url, "--schema", schema, "--log", "warn", "serve"])
            .args(["--kafka-listen", &bootstrap, "--http-listen", &http])
            .args(serve);
        if let Some(addr) = &sqs {
            command.args(["--sqs-listen", addr, "--sqs-allow-anonymous"]);
        }
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build --release -p pgbroker-cli`)",
                    bin.display()
                )
            })?;
        let started = Instant::now();
        for addr in [&bootstrap, &http].into_iter().chain(&sqs) {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("pgbroker serve did not listen on {addr} within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(Server {
            child,
            bootstrap,
            sqs,
            http,
        })
    }

    /// The child's pid, for CPU and memory readings.
    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("pgbroker serve exited")
    }

    /// Stops the child and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        self.child.start_kill().ok();
        self.child.wait().await.context("waiting for pgbroker serve")?;
        Ok(())
    }
}

/// What a run adds to the plain workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Producers with idempotence off and acks=all, every batch awaited
    /// (system `kafka-protocol`).
    Plain,
    /// The same with the console's overview page open and refreshing
    /// all along (system `kafka-console`).
    Console,
    /// One transaction per batch (see [`crate::kafka_txn`]; system
    /// `kafka-transactional`).
    Transactional,
    /// The plain workload against Tansu (see [`crate::tansu`]; system
    /// `tansu`).
    Tansu,
}

/// Runs the workload through `pgbroker serve` on a fresh schema, dropped
/// afterwards; `variant` says what runs beside the plain workload.
pub async fn run(env: &Endpoints, args: &PubsubArgs, variant: Variant) -> Result<Summary> {
    let (url, bin) = (env.database_url.as_str(), env.pgbroker_bin.as_path());
    // Built from a number only: safe to place in SQL text.
    let schema = format!("bench_kafka_{}", std::process::id());
    let admin = db::connect(url).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    let outcome = async {
        let broker = Broker::connect(BrokerConfig {
            database_url: url.to_string(),
            schema: schema.clone(),
            pool_size: 2,
            ..BrokerConfig::default()
        })
        .await?;
        let topic = TopicName::new("bench")?;
        let config = TopicConfig {
            partitions: args.partitions,
            ..TopicConfig::default()
        };
        broker.topics().create(&topic, &config).await?;
        if variant == Variant::Transactional {
            let input = TopicConfig {
                partitions: i32::try_from(args.producers.max(1))?,
                ..TopicConfig::default()
            };
            let name = TopicName::new(crate::kafka_txn::INPUT_TOPIC)?;
            broker.topics().create(&name, &input).await?;
        }
        drop(broker);
        let server = Server::start(bin, url, &schema, false).await?;
        let target = Target {
            bootstrap: server.bootstrap.clone(),
            http: Some(server.http.clone()),
            pids: vec![server.pid()?],
        };
        let outcome = drive(&target, args, variant).await;
        server.stop().await?;
        outcome
    }
    .await;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    outcome
}

/// A running Kafka broker the workload is driven against.
pub struct Target {
    /// `host:port` of its Kafka listener.
    pub bootstrap: String,
    /// `host:port` of pgbroker's HTTP listener (the console variant's).
    pub http: Option<String>,
    /// Its processes, for CPU and memory readings (several brokers'
    /// figures are summed).
    pub pids: Vec<u32>,
}

/// Runs the workload's consumers and producers against `server`, as
/// `variant` says, and measures it as the variant's system.
pub async fn drive(server: &Target, args: &PubsubArgs, variant: Variant) -> Result<Summary> {
    Ok(drive_probed(server, args, variant, None).await?.0)
}

/// [`drive`], reading what `probe` says around the measured window too
/// (and each group's reads) when there is one.
pub async fn drive_probed(
    server: &Target,
    args: &PubsubArgs,
    variant: Variant,
    probe: Option<&Probe>,
) -> Result<(Summary, Option<Window>)> {
    let viewer = match (variant, &server.http) {
        (Variant::Console, Some(http)) => Some(OverviewPoller::start(http.clone())),
        (Variant::Console, None) => bail!("the console variant needs pgbroker's HTTP listener"),
        _ => None,
    };
    if args.backlog > 0 {
        prefill(&server.bootstrap, args).await?;
    }
    let mut run = Run::with_groups(usize::try_from(args.groups)?);
    let mut consumers = Vec::new();
    for g in 0..args.groups {
        for _ in 0..args.consumers_per_group {
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &server.bootstrap)
                .set("group.id", format!("bench-g{g}"))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "true")
                .set("fetch.wait.max.ms", "100")
                .set(
                    "max.partition.fetch.bytes",
                    (u64::from(args.read_batch) * u64::from(args.message_size))
                        .max(1 << 20)
                        .to_string(),
                )
                .create()
                .context("creating a librdkafka consumer")?;
            consumer.subscribe(&["bench"])?;
            let consumer = Arc::new(consumer);
            consumers.push(consumer.clone());
            let group = usize::try_from(g)?;
            run.spawn(move |s, st| consume(consumer, group, s, st));
        }
    }
    settle(&consumers, args).await;
    // Producers take the shared librdkafka instances in turn.
    let instances = args
        .kafka_producer_clients
        .unwrap_or(args.producers)
        .clamp(1, args.producers);
    let mut clients: Vec<FutureProducer> = Vec::new();
    for id in 0..args.producers {
        if variant == Variant::Transactional {
            crate::kafka_txn::spawn_producer(&mut run, &server.bootstrap, args, id).await?;
            continue;
        }
        let slot = usize::try_from(id % instances)?;
        if slot == clients.len() {
            clients.push(
                ClientConfig::new()
                    .set("bootstrap.servers", &server.bootstrap)
                    .set("acks", "all")
                    .set("linger.ms", "1")
                    .set("compression.type", "none")
                    .create()
                    .context("creating a librdkafka producer")?,
            );
        }
        let producer = clients[slot].clone();
        let a = args.clone();
        run.spawn(|s, st| produce(producer, a, id, s, st));
    }
    let process = match server.pids.as_slice() {
        [one] => BrokerProcess::Pid(*one),
        many => BrokerProcess::Pids(many.to_vec()),
    };
    let system = match variant {
        Variant::Plain => "kafka-protocol",
        Variant::Console => "kafka-console",
        Variant::Transactional => "kafka-transactional",
        Variant::Tansu => "tansu",
    };
    let (summary, window) = match probe {
        Some(p) => {
            let (s, w) = run.measure_probed(args, system, &process, p).await?;
            (s, Some(w))
        }
        None => (run.measure(args, system, &process).await?, None),
    };
    if let Some(viewer) = viewer {
        let drawn = viewer.stop().await?;
        if drawn == 0 {
            bail!("the overview page was never drawn");
        }
    }
    Ok((summary, window))
}

async fn produce(
    producer: FutureProducer,
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let base = payload(args.message_size.max(8));
    let (producer, base) = (&producer, &base);
    produce_loop(&args, id, stats, stop, |partition, now| async move {
        let values: Vec<Vec<u8>> = (0..args.write_batch).map(|_| stamped(base, now)).collect();
        let sends = values.iter().map(|v| {
            let record = FutureRecord::<(), [u8]>::to("bench").partition(partition).payload(v);
            producer.send(record, Duration::from_secs(10))
        });
        for outcome in join_all(sends).await {
            outcome.map_err(|(e, _)| e).context("producing")?;
        }
        Ok(())
    })
    .await
}

/// Produces `args.backlog` records round-robin over the partitions, in
/// flights of 10,000, before anything is measured.
async fn prefill(bootstrap: &str, args: &PubsubArgs) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .create()
        .context("creating the backlog's producer")?;
    let base = payload(args.message_size.max(8));
    let partitions = args.partitions.max(1);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.backlog {
        let n = (args.backlog - sent).min(10_000);
        let now = SystemTime::now();
        let values: Vec<Vec<u8>> = (0..n).map(|_| stamped(&base, now)).collect();
        let sends = values.iter().enumerate().map(|(i, v)| {
            let partition = i32::try_from(i % usize::try_from(partitions).unwrap_or(1)).unwrap_or(0);
            let record = FutureRecord::<(), [u8]>::to("bench").partition(partition).payload(v);
            producer.send(record, Duration::from_secs(60))
        });
        for outcome in join_all(sends).await {
            outcome.map_err(|(e, _)| e).context("producing the backlog")?;
        }
        sent += n;
    }
    eprintln!(
        "backlog of {} records produced in {:.1} s",
        args.backlog,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits (at most 30 s) until every consumer that can have partitions has
/// some, so that the group's first rebalance is not measured as latency.
async fn settle(consumers: &[Arc<StreamConsumer>], args: &PubsubArgs) {
    let expected = |c: &StreamConsumer| c.assignment().map_or(0, |a| a.count());
    let started = Instant::now();
    let per_group = usize::try_from(args.partitions).unwrap_or(0);
    let wanted = usize::try_from(args.groups).unwrap_or(0) * per_group;
    while started.elapsed() < Duration::from_secs(30) {
        if consumers.iter().map(|c| expected(c)).sum::<usize>() >= wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("kafka-protocol: consumers still without all partitions after 30 s");
}

async fn consume(
    consumer: Arc<StreamConsumer>,
    group: usize,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    while !stop.load(Ordering::Relaxed) {
        let Ok(got) = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await else {
            continue;
        };
        let message = got.context("consuming")?;
        let now = SystemTime::now();
        record(
            &stats,
            &mut latency,
            latency_micros(message.payload().unwrap_or_default(), now),
        );
        stats.read.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = stats.by_group.get(group) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
    consumer.unsubscribe();
    Ok(Measured::EndToEnd(latency))
}
