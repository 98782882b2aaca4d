//! The listener: accepts connections, registers this process as a broker
//! node, keeps the registration fresh, and shuts down gracefully.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgbroker::cluster::{Node, SecurityProtocol};
use pgbroker::Broker;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, RwLock};
use tokio::task::JoinSet;

use crate::auth::AuthConfig;
use crate::conn;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Host clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// Largest request frame accepted; a larger one closes the connection.
    /// Requests other than Produce are held to [`MAX_OTHER_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// Most bytes one record batch may decompress to.
    pub max_decompressed_bytes: usize,
    /// Create unknown topics on Metadata or Produce, as Kafka's
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic.
    pub default_partitions: i32,
    /// A node not seen for this long is left out of Metadata.
    pub node_ttl: Duration,
    /// TLS for client connections; `None` for plain TCP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// SASL authentication of clients.
    pub auth: AuthConfig,
    /// Most client connections open at once; a connection beyond it is
    /// closed as soon as it is accepted (Kafka's `max.connections`).
    pub max_connections: usize,
    /// How long a batch of an idempotent producer that skips sequence
    /// numbers is answered as retriable (NOT_ENOUGH_REPLICAS, nothing
    /// written) before it is refused with OUT_OF_ORDER_SEQUENCE_NUMBER;
    /// see [`crate::sequence_gaps`].
    pub sequence_gap_grace: Duration,
}

impl KafkaConfig {
    /// The security protocol of this listener: TLS or not, SASL offered or
    /// not.
    pub fn security_protocol(&self) -> SecurityProtocol {
        SecurityProtocol::of(self.tls.is_some(), !self.auth.mechanisms.is_empty())
    }
}

/// Default of [`KafkaConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: 9092,
            max_frame_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            auto_create_topics: false,
            default_partitions: 1,
            node_ttl: Duration::from_secs(10),
            tls: None,
            auth: AuthConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            sequence_gap_grace: crate::sequence_gaps::DEFAULT_GRACE,
        }
    }
}

/// Largest frame of any request other than Produce: they are small, and
/// what one decodes into is bounded by what it may weigh.
pub const MAX_OTHER_FRAME_BYTES: usize = 1 << 20;

/// Signals the server to stop; cloneable.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Shutdown {
    /// Asks the server to stop accepting and finish what is in flight.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

/// State shared by every connection of one server.
pub(crate) struct Ctx {
    pub broker: Broker,
    pub config: KafkaConfig,
    pub node_id: i32,
    /// Live nodes of this node's security protocol as of the last
    /// refresh, by node id.
    pub nodes: RwLock<Vec<Node>>,
    pub connections: AtomicUsize,
    /// The share sessions of this broker's share consumers.
    pub share_sessions: crate::share_sessions::ShareSessions,
    /// Batches of idempotent producers that skipped ahead, by when first seen.
    pub sequence_gaps: crate::sequence_gaps::SequenceGaps,
}

impl Ctx {
    /// Live nodes, never empty: this node is always among them.
    pub async fn live_nodes(&self) -> Vec<Node> {
        let nodes = self.nodes.read().await.clone();
        if nodes.iter().any(|n| n.node_id == self.node_id) {
            return nodes;
        }
        let mut with_self = nodes;
        with_self.push(self.self_node());
        with_self.sort_by_key(|n| n.node_id);
        with_self
    }

    pub fn self_node(&self) -> Node {
        Node {
            node_id: self.node_id,
            host: self.config.advertised_host.clone(),
            port: i32::from(self.config.advertised_port),
            rack: None,
            listener: self.config.security_protocol(),
        }
    }
}

/// How often this node refreshes its registration and its view of others.
const REFRESH: Duration = Duration::from_secs(2);

/// Serves the Kafka protocol until `shutdown` fires, then stops accepting,
/// lets every connection finish its request in flight, and deregisters.
pub async fn serve(broker: Broker, config: KafkaConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    serve_on(listener, broker, config, shutdown).await
}

/// As [`serve`], on a listener the caller bound (tests bind port 0 and
/// advertise the port they got). Refuses to start when the
/// [`AuthConfig`] is inconsistent.
pub async fn serve_on(
    listener: TcpListener,
    broker: Broker,
    mut config: KafkaConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        config.listen = addr;
    }
    config.auth.validate(config.tls.is_some()).map_err(anyhow::Error::msg)?;
    let security = config.security_protocol();
    let node_id = broker
        .cluster()
        .register(&config.advertised_host, config.advertised_port, None, security)
        .await?;
    tracing::info!(listen = %config.listen, node_id, %security, advertised = %format!("{}:{}", config.advertised_host, config.advertised_port), "kafka listener up");
    let ctx = Arc::new(Ctx {
        nodes: RwLock::new(reachable(&broker, &config).await.unwrap_or_default()),
        broker,
        config,
        node_id,
        connections: AtomicUsize::new(0),
        share_sessions: crate::share_sessions::ShareSessions::default(),
        sequence_gaps: crate::sequence_gaps::SequenceGaps::default(),
    });
    let mut stop = shutdown.subscribe();
    let refresher = tokio::spawn(refresh_nodes(ctx.clone(), shutdown.subscribe()));
    // Every node sweeps transaction timeouts; they skip each other's rows.
    let txn_timeouts = ctx.broker.transactions().spawn_timeouts(TXN_TIMEOUT_SWEEP);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(guard) = ConnGuard::admit(&ctx) else {
                        crate::metrics::connection_refused();
                        tracing::debug!(%peer, limit = ctx.config.max_connections, "connection limit reached; closing");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    conns.spawn(accept(ctx.clone(), guard, stream, peer, shutdown.subscribe()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            // wait_for, not changed: a shutdown asked for before this loop
            // began (another listener failing at start) must stop it too.
            () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => break,
        }
    }
    drop(listener);
    tracing::info!(open = conns.len(), "shutting down: finishing requests in flight");
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), drain).await.is_err() {
        tracing::warn!("connections still open after 30s; closing them");
    }
    refresher.abort();
    txn_timeouts.abort();
    if let Err(e) = ctx.broker.cluster().deregister(ctx.node_id).await {
        tracing::warn!(error = %e, "could not deregister node");
    }
    Ok(())
}

/// How often this node aborts transactions past their timeout.
const TXN_TIMEOUT_SWEEP: Duration = Duration::from_secs(1);

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one accepted connection, after the TLS handshake when TLS is on;
/// `_guard` counts it open until it ends.
async fn accept(ctx: Arc<Ctx>, _guard: ConnGuard, stream: TcpStream, peer: SocketAddr, stop: watch::Receiver<bool>) {
    let Some(tls) = ctx.config.tls.clone() else {
        return conn::run(ctx, stream, peer, stop).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => conn::run(ctx, tls_stream, peer, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// The live nodes a client of this listener can reach: those of its own
/// security protocol. A SASL client told of a plaintext node would fail
/// there, and a plaintext client would be refused by a SASL one.
async fn reachable(broker: &Broker, config: &KafkaConfig) -> pgbroker::Result<Vec<Node>> {
    let security = config.security_protocol();
    let mut nodes = broker.cluster().live_nodes(config.node_ttl).await?;
    nodes.retain(|n| n.listener == security);
    Ok(nodes)
}

async fn refresh_nodes(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = ctx.broker.cluster().touch(ctx.node_id).await {
            tracing::warn!(error = %e, "node heartbeat failed");
            continue;
        }
        match reachable(&ctx.broker, &ctx.config).await {
            Ok(nodes) => *ctx.nodes.write().await = nodes,
            Err(e) => tracing::warn!(error = %e, "reading live nodes failed"),
        }
    }
}

/// Counts a connection open for as long as the guard lives.
pub(crate) struct ConnGuard(Arc<Ctx>);

impl ConnGuard {
    /// Counts one more connection, unless that would pass the limit.
    fn admit(ctx: &Arc<Ctx>) -> Option<Self> {
        let max = ctx.config.max_connections;
        let open = ctx
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .ok()?;
        crate::metrics::connections(open + 1);
        Some(ConnGuard(ctx.clone()))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::connections(self.0.connections.load(Ordering::Relaxed));
    }
}
