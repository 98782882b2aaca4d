//! The listener and the path of a request: read the body (bounded), find
//! the action, produce the caller (the authentication hook), parse the
//! JSON, run the action, answer, count.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::Router;
use pgbroker::Broker;
use pgbroker_kafka::TlsListener;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

use crate::auth::{AuthConfig, Principal};
use crate::error::{SqsError, SqsResult};
use crate::first_receives::FirstReceives;
use crate::moves::MoveTasks;
use crate::protocol::{self, Input};
use crate::queue_cache::QueueCache;

/// Settings of the SQS listener.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Accept requests without an `Authorization` header: from loopback
    /// peers, or from any peer when the listener has TLS. Signed requests
    /// are verified either way.
    pub allow_anonymous: bool,
    /// Serve HTTPS with this rustls configuration (see
    /// [`pgbroker_kafka::tls_server_config`]); plain HTTP when `None`.
    pub tls: Option<Arc<ServerConfig>>,
    /// Users that may do everything, whatever their ACLs.
    pub super_users: Vec<String>,
    /// Region named in queue ARNs.
    pub region: String,
    /// Account id in queue URLs and ARNs.
    pub account_id: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9324)),
            allow_anonymous: false,
            super_users: Vec::new(),
            tls: None,
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            max_body_bytes: 2 << 20,
        }
    }
}

/// What every request shares.
pub(crate) struct Shared {
    pub broker: Broker,
    pub config: SqsConfig,
    pub moves: Arc<Mutex<MoveTasks>>,
    /// Queue settings read in the last second.
    pub queues: QueueCache,
    /// Records first receives that no answer waits for.
    pub first_receives: FirstReceives,
}

/// The address of the client, over plain TCP or TLS.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// A bound SQS listener, not yet serving.
pub struct SqsServer {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl SqsServer {
    /// Binds the listen address.
    pub async fn bind(broker: Broker, config: SqsConfig) -> anyhow::Result<SqsServer> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let shared = Arc::new(Shared {
            config,
            moves: Arc::new(Mutex::new(MoveTasks::default())),
            queues: QueueCache::default(),
            first_receives: FirstReceives::start(broker.clone()),
            broker,
        });
        Ok(SqsServer { listener, shared })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let shared = self.shared;
        let sweeper = tokio::spawn(sweep(shared.broker.clone()));
        let tls = shared.config.tls.clone();
        let app = Router::new().fallback(handle).with_state(shared);
        let service = app.into_make_service_with_connect_info::<Peer>();
        let listen = self.listener.local_addr()?;
        let served = match tls {
            Some(config) => {
                tracing::info!(%listen, "sqs listener up (https)");
                let listener = TlsListener::new(self.listener, config)?;
                axum::serve(listener, service).with_graceful_shutdown(shutdown).await
            }
            None => {
                tracing::info!(%listen, "sqs listener up");
                axum::serve(self.listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        sweeper.abort();
        Ok(served?)
    }
}

/// Serves the SQS API on `config.listen` until `shutdown` completes.
pub async fn serve(
    broker: Broker,
    config: SqsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    SqsServer::bind(broker, config).await?.run(shutdown).await
}

async fn sweep(broker: Broker) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        if let Err(e) = broker.queues().sqs_sweep().await {
            tracing::debug!(error = %e, "sqs sweep failed");
        }
    }
}

/// A JSON answer body.
pub(crate) fn json_body(v: &Value) -> ([(header::HeaderName, HeaderValue); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.0"),
        )],
        v.to_string(),
    )
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: Request<Body>,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let action = protocol::action(parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()));
    let label = action.as_ref().map_or("Unknown", |a| *a);
    let result = match action {
        Ok(action) => run(&shared, &parts, peer, action, body).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(v) => (StatusCode::OK, json_body(&v)).into_response(),
        Err(e) => {
            crate::metrics::error(label, e.shape);
            e.into_response()
        }
    };
    crate::metrics::request(label, response.status().is_success(), started.elapsed().as_secs_f64());
    let id = request_id();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

async fn run(shared: &Shared, parts: &Parts, peer: SocketAddr, action: &'static str, body: Body) -> SqsResult<Value> {
    let headers = &parts.headers;
    let bytes = axum::body::to_bytes(body, shared.config.max_body_bytes)
        .await
        .map_err(|_| SqsError::too_large(format!("request body over {} bytes", shared.config.max_body_bytes)))?;
    let caller = authenticate(shared, parts, peer, &bytes).await?;
    let input = protocol::body(&bytes)?;
    authorize(&caller, action, &Input(&input))?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| shared.config.listen.to_string(), str::to_string);
    let ctx = crate::actions::Ctx { shared, host, caller };
    crate::actions::dispatch(&ctx, action, &Input(&input)).await
}

/// Produces the caller of a request from its SigV4 signature over the
/// exact body bytes, or refuses it. Unsigned requests are anonymous when
/// allowed and the peer is on loopback or the listener has TLS.
async fn authenticate(shared: &Shared, parts: &Parts, peer: SocketAddr, body: &[u8]) -> SqsResult<Principal> {
    let config = AuthConfig {
        allow_anonymous: shared.config.allow_anonymous && (peer.ip().is_loopback() || shared.config.tls.is_some()),
        super_users: shared.config.super_users.clone(),
    };
    crate::auth::authenticate(&shared.broker, &config, parts, body, SystemTime::now())
        .await
        .map_err(SqsError::from)
}

/// Checks the caller's right on the queue the request names (`QueueUrl`,
/// `QueueName` or `SourceArn`; a move's destination needs `produce`).
/// Requests that name no queue are checked by their action.
fn authorize(caller: &Principal, action: &str, input: &Input<'_>) -> SqsResult<()> {
    let named = ["QueueUrl", "QueueName", "SourceArn"]
        .into_iter()
        .find_map(|key| input.opt_str(key).ok().flatten());
    if let Some(queue) = named.and_then(|n| protocol::queue_name_of(n).ok()) {
        caller.check(action, &queue)?;
    }
    if action == "StartMessageMoveTask" {
        if let Some(dest) = input.opt_str("DestinationArn").ok().flatten() {
            let queue = protocol::queue_name_of(dest).unwrap_or_default();
            caller.check("SendMessage", &queue)?;
        }
    }
    Ok(())
}

fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
