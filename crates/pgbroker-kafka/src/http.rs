//! The HTTP listener: `/healthz` (200 only while Postgres answers) and
//! `/metrics` in Prometheus text format, including consumer lag computed
//! from Postgres at scrape time; over TLS when configured (`http_tls`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::Router;
use pgbroker::Broker;
use tokio_rustls::rustls::ServerConfig;

use crate::http_tls::TlsListener;
use crate::server::Shutdown;

/// Serves `/healthz` and `/metrics` on `addr` until `shutdown` fires,
/// over plain HTTP.
pub async fn serve_http(broker: Broker, addr: SocketAddr, shutdown: Shutdown) -> anyhow::Result<()> {
    serve_http_on(broker, addr, None, shutdown).await
}

/// Serves `/healthz` and `/metrics` on `addr` until `shutdown` fires, over
/// HTTPS when `tls` is given (see [`crate::tls_server_config`]).
pub async fn serve_http_on(
    broker: Broker,
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    serve_http_with(broker, addr, tls, Router::new(), shutdown).await
}

/// As [`serve_http_on`], with the routes of `extra` (the console) served
/// beside `/healthz` and `/metrics`. Handlers can read the client's
/// address as `ConnectInfo<SocketAddr>`.
pub async fn serve_http_with(
    broker: Broker,
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    extra: Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    crate::metrics::handle();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(broker)
        .merge(extra)
        .layer(axum::middleware::from_fn(peer_address));
    let app = app.into_make_service_with_connect_info::<Peer>();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let mut stop = shutdown.subscribe();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match tls {
        Some(config) => {
            tracing::info!(listen = %addr, "https listener up");
            let listener = TlsListener::new(listener, config)?;
            axum::serve(listener, app).with_graceful_shutdown(stopped).await?;
        }
        None => {
            tracing::info!(listen = %addr, "http listener up");
            axum::serve(listener, app).with_graceful_shutdown(stopped).await?;
        }
    }
    Ok(())
}

/// The client's address, as both listeners know it.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// Hands the client's address to handlers as `ConnectInfo<SocketAddr>`.
async fn peer_address(mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(Peer(addr))) = request.extensions().get::<ConnectInfo<Peer>>().copied() {
        request.extensions_mut().insert(ConnectInfo(addr));
    }
    next.run(request).await
}

async fn healthz(State(broker): State<Broker>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(Duration::from_secs(2), broker.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "postgres unreachable\n"),
    }
}

async fn metrics(State(broker): State<Broker>) -> String {
    let _ = tokio::time::timeout(Duration::from_secs(2), broker.probe_replicas()).await;
    let mut out = crate::metrics::handle().map(|h| h.render()).unwrap_or_default();
    let (open, idle, max) = broker.pool_status();
    let _ = writeln!(
        out,
        "# HELP pgbroker_pool_connections Postgres connections of the broker's pool: open, idle and the most it opens"
    );
    let _ = writeln!(out, "# TYPE pgbroker_pool_connections gauge");
    let _ = writeln!(out, "pgbroker_pool_connections{{state=\"open\"}} {open}");
    let _ = writeln!(out, "pgbroker_pool_connections{{state=\"idle\"}} {idle}");
    let _ = writeln!(out, "pgbroker_pool_connections{{state=\"max\"}} {max}");
    if let Ok(lags) = broker.groups().lag_all().await {
        let _ = writeln!(
            out,
            "# HELP pgbroker_consumer_lag Records between a group's committed offset and the high watermark, per partition"
        );
        let _ = writeln!(out, "# TYPE pgbroker_consumer_lag gauge");
        for l in lags {
            let _ = writeln!(
                out,
                "pgbroker_consumer_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                escape(l.group.as_str()),
                escape(l.topic.as_str()),
                l.partition,
                l.lag
            );
        }
    }
    crate::metrics::render_queues(&broker, &mut out).await;
    out
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
