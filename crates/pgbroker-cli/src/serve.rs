//! `pgbroker serve`: the Kafka listener, the HTTP (or HTTPS) listener with
//! health, metrics and the web console and, when asked for, the SQS-compatible API, with
//! retention and queue maintenance running alongside.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use pgbroker::Broker;
use pgbroker_kafka::{AuthConfig, KafkaConfig, Mechanism, Shutdown};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the Kafka protocol listens on.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_listen: SocketAddr,
    /// HOST:PORT clients are told to connect to (default: the listen address).
    #[arg(long, value_parser = parse_host_port)]
    advertised_listener: Option<(String, u16)>,
    /// Address of the HTTP listener (`/healthz`, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// PEM certificate chain (leaf first) for HTTPS on the HTTP listener
    /// (may be the same files as --tls-cert/--tls-key).
    #[arg(long, requires = "http_tls_key", value_name = "PATH")]
    http_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --http-tls-cert.
    #[arg(long, requires = "http_tls_cert", value_name = "PATH")]
    http_tls_key: Option<std::path::PathBuf>,
    /// Create unknown topics when a client asks for them (Kafka's auto.create.topics.enable).
    #[arg(long)]
    auto_create_topics: bool,
    /// Partitions of topics created without a count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=i64::from(pgbroker::streams::MAX_PARTITIONS)))]
    default_partitions: i32,
    /// Largest request accepted, in bytes; a larger frame closes the connection
    /// (requests other than Produce: 1 MiB).
    #[arg(long, default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    max_request_bytes: u64,
    /// Most Kafka client connections open at once; more are closed on arrival.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// PEM certificate chain (leaf first) for TLS on the Kafka listener.
    #[arg(long, requires = "tls_key", value_name = "PATH")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PATH")]
    tls_key: Option<std::path::PathBuf>,
    /// Memory each partition's record cache may use, in bytes (0: no cache).
    #[arg(long, default_value_t = 8 << 20)]
    pub cache_bytes_per_partition: usize,
    /// A streaming standby of the database (a PostgreSQL URL) that serves
    /// record reads it has already replayed; repeat for several. Produce,
    /// commits, groups and queues stay on the primary.
    #[arg(long = "replica-url", value_name = "URL")]
    pub replica_urls: Vec<String>,
    /// Require clients to authenticate with one of these SASL mechanisms
    /// (SCRAM-SHA-256, PLAIN), against the users of `pgbroker user`.
    #[arg(long, value_delimiter = ',', value_name = "MECHANISMS")]
    sasl_mechanisms: Vec<Mechanism>,
    /// Users that may do everything whatever their ACLs say (Kafka's
    /// super.users); everyone else may do only what `pgbroker acl` grants.
    #[arg(long, value_delimiter = ',', value_name = "USERS", requires = "sasl_mechanisms",
          value_parser = parse_user)]
    super_users: Vec<String>,
    /// Allow SASL PLAIN although this listener has no TLS, so passwords
    /// cross the network in clear text.
    #[arg(long)]
    allow_plain_without_tls: bool,
    /// Address of the SQS-compatible HTTP API (off unless given; ElasticMQ
    /// and other SQS emulators use port 9324).
    #[arg(long, value_name = "ADDR")]
    sqs_listen: Option<SocketAddr>,
    /// Accept SQS requests that carry no signature, with every right
    /// (signed requests are still verified): from loopback clients, or
    /// from anyone with --sqs-tls-cert. Refused when --sqs-listen is not a
    /// loopback address and the SQS listener has no TLS.
    #[arg(long, requires = "sqs_listen")]
    sqs_allow_anonymous: bool,
    /// PEM certificate chain: serve the SQS API over HTTPS (may be the
    /// same files as --tls-cert/--tls-key).
    #[arg(long, requires_all = ["sqs_tls_key", "sqs_listen"], value_name = "PATH")]
    sqs_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --sqs-tls-cert.
    #[arg(long, requires = "sqs_tls_cert", value_name = "PATH")]
    sqs_tls_key: Option<std::path::PathBuf>,
    /// Region named in the ARNs of SQS queues.
    #[arg(long, default_value = "us-east-1", requires = "sqs_listen")]
    sqs_region: String,
    #[command(flatten)]
    pub embedded: crate::embedded::EmbeddedArgs,
    /// Do not serve the web console and its admin API (`/console/`,
    /// `/api/`) on the HTTP listener.
    #[arg(long)]
    no_console: bool,
    /// How often retention and queue maintenance run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    maintenance_interval: Duration,
    /// Kafka's `group.consumer.session.timeout.ms`: a member of a
    /// consumer-protocol group (KIP-848) that has not heartbeated for this
    /// long is removed and its partitions move.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    group_consumer_session_timeout: Duration,
    /// Kafka's `group.consumer.heartbeat.interval.ms`: how often members
    /// of consumer-protocol groups are told to heartbeat.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    group_consumer_heartbeat_interval: Duration,
}

fn parse_user(s: &str) -> Result<String, String> {
    pgbroker::auth::validate_user_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port: u16 = port.parse().map_err(|_| format!("{port:?} is not a port"))?;
    if host.is_empty() || port == 0 {
        return Err("expected HOST:PORT with a non-empty host and a non-zero port".to_string());
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Connections the server's pool keeps: produce and fetch of many clients
/// run at once.
pub const POOL_SIZE: usize = 32;

pub async fn run(broker: Broker, args: ServeArgs) -> anyhow::Result<()> {
    broker
        .consumer_groups()
        .set_session_timeout(args.group_consumer_session_timeout);
    broker
        .consumer_groups()
        .set_heartbeat_interval(args.group_consumer_heartbeat_interval);
    let (host, port) = args
        .advertised_listener
        .clone()
        .unwrap_or_else(|| (args.kafka_listen.ip().to_string(), args.kafka_listen.port()));
    let auth = AuthConfig {
        required: !args.sasl_mechanisms.is_empty(),
        mechanisms: args.sasl_mechanisms.clone(),
        allow_plain_without_tls: args.allow_plain_without_tls,
        super_users: args.super_users.clone(),
        ..AuthConfig::default()
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(pgbroker_kafka::tls_server_config(cert, key)?),
        _ => None,
    };
    let http_tls = match (&args.http_tls_cert, &args.http_tls_key) {
        (Some(cert), Some(key)) => {
            Some(pgbroker_kafka::tls_server_config(cert, key).context("TLS of the HTTP listener")?)
        }
        _ => None,
    };
    let sqs_tls = match (&args.sqs_tls_cert, &args.sqs_tls_key) {
        (Some(cert), Some(key)) => {
            Some(pgbroker_kafka::tls_server_config(cert, key).context("TLS of the SQS listener")?)
        }
        _ => None,
    };
    if let Some(listen) = args
        .sqs_listen
        .filter(|l| args.sqs_allow_anonymous && !l.ip().is_loopback() && sqs_tls.is_none())
    {
        anyhow::bail!(
            "--sqs-allow-anonymous on {listen}, not a loopback address, needs --sqs-tls-cert/--sqs-tls-key; \
             or sign requests with an access key (pgbroker user key create)"
        );
    }
    auth.validate(tls.is_some())
        .map_err(|e| anyhow::anyhow!("{e}; pass --allow-plain-without-tls to accept that"))?;
    let config = KafkaConfig {
        listen: args.kafka_listen,
        advertised_host: host,
        advertised_port: port,
        max_frame_bytes: usize::try_from(args.max_request_bytes).unwrap_or(usize::MAX),
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions,
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        auth,
        tls,
        ..KafkaConfig::default()
    };
    // Every listener is bound before the start goes on: an address in use
    // ends the start with an error that names it.
    let kafka_listener = tokio::net::TcpListener::bind(args.kafka_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for Kafka clients (--kafka-listen)",
                args.kafka_listen
            )
        })?;
    let shutdown = Shutdown::default();
    let console = if args.no_console {
        axum::Router::new()
    } else {
        let config = pgbroker_console::ConsoleConfig {
            tls: http_tls.is_some(),
            super_users: args.super_users.clone(),
            ..pgbroker_console::ConsoleConfig::default()
        };
        let scheme = if http_tls.is_some() { "https" } else { "http" };
        tracing::info!("console at {scheme}://{}/console/", args.http_listen);
        pgbroker_console::Console::new(broker.clone(), config).router()
    };
    let mut http = tokio::spawn(pgbroker_kafka::serve_http_with(
        broker.clone(),
        args.http_listen,
        http_tls,
        console,
        shutdown.clone(),
    ));
    let (sqs_stop, sqs) = match args.sqs_listen {
        Some(listen) => {
            let config = pgbroker_sqs::SqsConfig {
                listen,
                allow_anonymous: args.sqs_allow_anonymous,
                super_users: args.super_users.clone(),
                tls: sqs_tls,
                region: args.sqs_region.clone(),
                ..pgbroker_sqs::SqsConfig::default()
            };
            let server = pgbroker_sqs::SqsServer::bind(broker.clone(), config)
                .await
                .with_context(|| format!("cannot listen on {listen} for SQS clients (--sqs-listen)"))?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(server.run(async move {
                let _ = stopped.await;
            }));
            (Some(stop), Some(task))
        }
        None => (None, None),
    };
    let retention = broker.maintenance().spawn(args.maintenance_interval);
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; shutting down");
            shutdown.trigger();
        })
    };
    let serve = pgbroker_kafka::serve_on(kafka_listener, broker, config, shutdown.clone());
    tokio::pin!(serve);
    // The HTTP listener binds in its task: when it cannot (or fails later),
    // the whole server stops with its error.
    let (served, http_failed) = tokio::select! {
        served = &mut serve => (served, None),
        ended = &mut http => {
            shutdown.trigger();
            (serve.await, Some(ended))
        }
    };
    shutdown.trigger();
    signals.abort();
    retention.abort();
    let http_ended = match http_failed {
        Some(ended) => ended,
        None => http.await,
    };
    let http_error = match http_ended {
        Ok(Err(e)) => Some(e),
        Err(e) => Some(anyhow::Error::new(e)),
        Ok(Ok(())) => None,
    };
    if let Some(stop) = sqs_stop {
        let _ = stop.send(());
    }
    if let Some(sqs) = sqs {
        match sqs.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "sqs listener failed"),
            Err(e) => tracing::warn!(error = %e, "sqs listener task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(e) = http_error {
        return Err(e.context(format!("cannot serve HTTP on {} (--http-listen)", args.http_listen)));
    }
    served.context("kafka listener")
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
