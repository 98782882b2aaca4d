//! The console as a browser uses it: the admin API requests each page
//! makes (as `crates/pgbroker-console/assets` sends them: a page's
//! requests together, its live part again every few seconds), over plain
//! HTTP/1.1 from loopback. The harness starts `pgbroker serve` without
//! users, where a loopback client gets a session without logging in (as
//! the page does, from `GET /api/session`); every request must
//! answer 200, so a console that refuses or fails cannot pass for a fast
//! one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// How often the overview page draws its live part again (`live()` in
/// `dom.js`: 5 s after the last drawing finished).
pub const OVERVIEW_REFRESH: Duration = Duration::from_secs(5);

/// The requests of the overview page's live part.
pub const OVERVIEW: &[&str] = &["/api/overview", "/api/history"];

/// A console session of a loopback client of a broker without users,
/// as the page's first request (`GET /api/session`) opens it.
#[derive(Debug, Clone)]
pub struct Session {
    addr: String,
    cookie: String,
}

impl Session {
    /// Opens a session on the HTTP listener at `addr` (`host:port`).
    pub async fn open(addr: &str) -> Result<Session> {
        let mut session = Session {
            addr: addr.to_string(),
            cookie: String::new(),
        };
        let (_, cookie) = session.request("/api/session").await?;
        session.cookie = cookie
            .and_then(|c| c.split(';').next().map(str::to_string))
            .context("GET /api/session set no cookie")?;
        Ok(session)
    }

    /// GETs `path` on a connection of its own, as the session; the size
    /// of the body. Anything but 200 is an error.
    pub async fn get(&self, path: &str) -> Result<usize> {
        Ok(self.request(path).await?.0)
    }

    async fn request(&self, path: &str) -> Result<(usize, Option<String>)> {
        let addr = &self.addr;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the HTTP listener at {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut request = Request::get(path)
            .header(hyper::header::HOST, addr)
            .header(hyper::header::ACCEPT, "application/json");
        if !self.cookie.is_empty() {
            request = request.header(hyper::header::COOKIE, &self.cookie);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new())?)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let cookie = response
            .headers()
            .get(hyper::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.into_body().collect().await?.to_bytes();
        if status != hyper::StatusCode::OK {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok((body.len(), cookie))
    }

    /// The requests of one page, sent together as the page does; the time
    /// until the last answered and the bytes received.
    pub async fn load(&self, paths: &[String]) -> Result<(Duration, usize)> {
        let started = Instant::now();
        let sizes = try_join_all(paths.iter().map(|p| self.get(p))).await?;
        Ok((started.elapsed(), sizes.iter().sum()))
    }
}

/// An overview page left open: its requests at once, then again
/// [`OVERVIEW_REFRESH`] after each drawing, until stopped.
pub struct OverviewPoller {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl OverviewPoller {
    /// Opens the overview of the console at `addr` in a new session.
    pub fn start(addr: String) -> OverviewPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), polls.clone());
        let paths: Vec<String> = OVERVIEW.iter().map(|p| (*p).to_string()).collect();
        let task = tokio::spawn(async move {
            let session = Session::open(&addr).await?;
            while !s.load(Ordering::Relaxed) {
                session.load(&paths).await.context("the overview page")?;
                p.fetch_add(1, Ordering::Relaxed);
                let until = Instant::now() + OVERVIEW_REFRESH;
                while !s.load(Ordering::Relaxed) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(())
        });
        OverviewPoller { stop, polls, task }
    }

    /// Closes the page; how many times it was drawn, or the error of a
    /// request that failed.
    pub async fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the overview poller")??;
        Ok(self.polls.load(Ordering::Relaxed))
    }
}
