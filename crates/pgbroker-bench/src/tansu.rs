//! `tansu`: Tansu, a Kafka-compatible broker written in Rust that keeps
//! its data in Postgres, the closest peer of `pgbroker serve`. The harness
//! creates a database of its own on the same Postgres, loads Tansu's
//! schema into it, starts `tansu broker` on a free port with that database
//! as its storage engine, creates the topic through the Kafka admin API,
//! and drives it with exactly the librdkafka workload of `kafka-protocol`
//! (see [`crate::kafka::drive`]). CPU and memory are those of the Tansu
//! process.

use std::net::TcpListener;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

use crate::db;
use crate::kafka::{drive, Target, Variant};
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::PubsubArgs;

/// The first librdkafka that can talk to Tansu 0.6.0: Debian 12's 2.0.2
/// cannot read its ApiVersions answer ("Read underflow"); 2.16 can.
const FIRST_LIBRDKAFKA: i32 = 0x0201_0000;

/// Whether Tansu can run here: its binary answers `--version`, its schema
/// file was given, and the librdkafka this harness loaded can talk to it
/// (`LD_LIBRARY_PATH` can point at a newer one than the system's).
pub async fn installed(env: &Endpoints) -> bool {
    let Some(schema) = &env.tansu_schema else {
        return false;
    };
    let (version, name) = rdkafka::util::get_rdkafka_version();
    if version < FIRST_LIBRDKAFKA {
        eprintln!("tansu: skipped, librdkafka {name} cannot talk to it (load 2.1 or newer with LD_LIBRARY_PATH)");
        return false;
    }
    let answers = tokio::process::Command::new(&env.tansu_bin)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    answers && schema.is_file()
}

/// One run against Tansu on a fresh database, dropped afterwards.
pub async fn run(env: &Endpoints, args: &PubsubArgs) -> Result<Summary> {
    let Some(schema) = &env.tansu_schema else {
        bail!("Tansu's schema file is not set (--tansu-schema)");
    };
    let ddl = std::fs::read_to_string(schema).with_context(|| format!("reading {}", schema.display()))?;
    // Built from a number only: safe to place in SQL text.
    let database = format!("bench_tansu_{}", std::process::id());
    let admin = db::connect(&env.database_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    // A statement of its own: neither may run inside a transaction block.
    admin.batch_execute(&format!("CREATE DATABASE {database}")).await?;
    let outcome = async {
        let mut config = Config::from_str(&env.database_url).context("parsing --database-url")?;
        config.dbname(&database);
        let (client, conn) = config.connect(NoTls).await.context("connecting to Tansu's database")?;
        let driver = tokio::spawn(conn);
        client.batch_execute(&ddl).await.context("loading Tansu's schema")?;
        drop(client);
        let _ = driver.await;
        let mut broker = start(env, &storage_url(&config)?).await?;
        let target = Target {
            bootstrap: broker.bootstrap.clone(),
            http: None,
            pids: vec![broker.child.id().context("tansu exited at start")?],
        };
        let outcome = async {
            create_topic(&target.bootstrap, args.partitions).await?;
            drive(&target, args, Variant::Tansu).await
        }
        .await;
        broker.child.start_kill().ok();
        broker.child.wait().await.context("waiting for tansu")?;
        outcome
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    outcome
}

/// The `tansu broker` child, killed when dropped.
struct Broker {
    child: tokio::process::Child,
    bootstrap: String,
}

/// Tansu's storage engine URL for the database of `config`: host, port,
/// user and password as given, the password percent-free, without TLS.
fn storage_url(config: &Config) -> Result<String> {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => bail!("Tansu needs a TCP host in --database-url"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = match config.get_password() {
        None => String::new(),
        Some(p) if p.iter().all(u8::is_ascii_alphanumeric) => format!(":{}", String::from_utf8_lossy(p)),
        Some(_) => bail!("Tansu's URL is built with the password as is: use one of letters and digits"),
    };
    let dbname = config.get_dbname().unwrap_or("postgres");
    // Every other system's connections use no TLS: neither do Tansu's.
    Ok(format!(
        "postgres://{user}{password}@{host}:{port}/{dbname}?sslmode=disable"
    ))
}

/// Starts `tansu broker` on a free port, in an empty directory (it reads
/// a `.env` from its working directory), and waits for its listener.
async fn start(env: &Endpoints, storage: &str) -> Result<Broker> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let bootstrap = format!("127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("pgbroker-bench-tansu-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let listener = format!("tcp://{bootstrap}");
    let log = dir.join("tansu.log");
    let child = tokio::process::Command::new(&env.tansu_bin)
        .args(["broker", "--storage-engine", storage])
        .args(["--listener-url", &listener, "--advertised-listener-url", &listener])
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("tansu.err"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", env.tansu_bin.display()))?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&bootstrap).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("tansu did not listen on {bootstrap} within 30 s; it said:\n{said}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Broker { child, bootstrap })
}

/// Creates the workload's topic through the Kafka admin API.
async fn create_topic(bootstrap: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a librdkafka admin client")?;
    let topic = NewTopic::new("bench", partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        if let Err((name, code)) = result {
            bail!("creating topic {name} on tansu: {code}");
        }
    }
    Ok(())
}
