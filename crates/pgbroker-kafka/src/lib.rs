//! The Kafka wire-protocol front end of pgbroker.
//!
//! [`serve`] accepts Kafka clients on a TCP port and translates each request
//! into calls on a [`pgbroker::Broker`]: produce and fetch go to the record
//! log, group requests to the coordinator, offsets to the offsets table.
//! Nothing is kept here that is not also in Postgres, so any number of these
//! servers can run against one database, each serving every partition and
//! every group.
//!
//! Requests are framed, bounded and decoded before any work: a frame over
//! [`KafkaConfig::max_frame_bytes`] closes the connection, record batches are
//! decoded by this crate's own bounded reader ([`decode_batches`]), and an
//! unsupported API or version is answered with `UNSUPPORTED_VERSION`.
//!
//! With [`KafkaConfig::auth`] set, clients authenticate with SASL
//! (SCRAM-SHA-256, or PLAIN when explicitly allowed) against the users the
//! library stores ([`pgbroker::auth::Auth::add_user`]) before anything else is
//! served, and each user may do only what its ACLs grant
//! ([`pgbroker::auth::Auth::grant`]), unless it is one of
//! [`AuthConfig::super_users`].

mod alloc;
mod api;
mod auth;
mod authz;
mod codec;
mod conn;
mod dispatch;
mod errors;
pub mod fuzzing;
mod http;
mod http_tls;
mod metrics;
mod pipeline;
pub mod sequence_gaps;
mod server;
mod share_sessions;
mod tls;

pub use alloc::GuardedAlloc;
pub use auth::{AuthConfig, Mechanism, PRE_AUTH_MAX_FRAME_BYTES, PRE_AUTH_MAX_REQUESTS};
pub use codec::{decode_batches, encode_batch, BatchError, BatchLimits, DecodedBatch};
pub use dispatch::{Api, APIS};
pub use http::{serve_http, serve_http_on, serve_http_with};
pub use http_tls::TlsListener;
pub use server::{serve, serve_on, KafkaConfig, Shutdown, DEFAULT_MAX_CONNECTIONS, MAX_OTHER_FRAME_BYTES};
pub use tls::server_config as tls_server_config;
