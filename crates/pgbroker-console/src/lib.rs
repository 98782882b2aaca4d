//! The web console of pgbroker: pages built into the binary and the JSON
//! admin API they use, as one axum [`Router`] that `pgbroker serve` mounts
//! on its HTTP listener beside `/healthz` and `/metrics`.
//!
//! - `/console/` serves the pages (HTML, CSS and JavaScript modules
//!   compiled in with `include_str!`; nothing is fetched at run time).
//! - `/api/...` is the admin API, described by the OpenAPI document at
//!   `/api/openapi.json`. Every call but the session, login and document
//!   ones needs a session cookie; every change also needs the session's
//!   CSRF token in the `X-CSRF-Token` header (module `session`).
//! - Who may see and change what follows the user's ACLs (`pgbroker acl`),
//!   as on the Kafka listener; super users and, without any user, loopback
//!   clients may do everything (module `access`).
//! - Rates and lag over time come from a short history kept in memory and
//!   sampled by a background task of the broker process (module `history`).
//!
//! ```no_run
//! # async fn run(broker: pgbroker::Broker) {
//! use pgbroker_console::{Console, ConsoleConfig};
//! let console = Console::new(broker, ConsoleConfig::default());
//! let app: axum::Router = console.router();
//! # let _ = app;
//! # }
//! ```

mod access;
mod api;
mod assets;
mod error;
mod history;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use pgbroker::Broker;

pub use history::HISTORY_SAMPLES;

/// How the console is served.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The listener serves HTTPS: session cookies get the `Secure`
    /// attribute.
    pub tls: bool,
    /// Users that may see and change everything whatever their ACLs say
    /// (`pgbroker serve --super-users`).
    pub super_users: Vec<String>,
    /// How often the history of rates and lag is sampled.
    pub sample_every: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> ConsoleConfig {
        ConsoleConfig {
            tls: false,
            super_users: Vec::new(),
            sample_every: Duration::from_secs(5),
        }
    }
}

/// The console of one broker process: its sessions, its history and the
/// task sampling it. Dropping it stops the sampling.
#[derive(Clone)]
pub struct Console {
    state: Arc<State>,
}

/// What every handler shares.
pub(crate) struct State {
    pub broker: Broker,
    pub config: ConsoleConfig,
    pub sessions: session::Sessions,
    pub history: Arc<history::History>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Drop for State {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

impl Console {
    /// A console for `broker`; starts sampling its history on the current
    /// tokio runtime.
    pub fn new(broker: Broker, config: ConsoleConfig) -> Console {
        let history = Arc::new(history::History::default());
        let sampler = tokio::spawn(history::sample(broker.clone(), history.clone(), config.sample_every));
        Console {
            state: Arc::new(State {
                broker,
                config,
                sessions: session::Sessions::default(),
                history,
                sampler,
            }),
        }
    }

    /// The routes of the pages and of the API. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`: without the
    /// peer's address every client counts as remote.
    pub fn router(&self) -> Router {
        api::routes().merge(assets::routes()).with_state(self.state.clone())
    }
}
