//! SASL settings of the listener and the authentication state of one
//! connection. The exchanges themselves are in `api::sasl`.
//!
//! While authentication is required and a connection has not completed
//! it, the connection may send only ApiVersions and SaslHandshake, then
//! SaslAuthenticate; anything else closes it, as Kafka does. Before
//! authentication, frames are capped at [`PRE_AUTH_MAX_FRAME_BYTES`] and a
//! connection may send at most [`PRE_AUTH_MAX_REQUESTS`] requests.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pgbroker::auth::ScramCredentials;

use crate::authz::Access;

/// Largest frame accepted from a connection that has not authenticated.
pub const PRE_AUTH_MAX_FRAME_BYTES: usize = 64 << 10;
/// Most requests a connection may send before it authenticates.
pub const PRE_AUTH_MAX_REQUESTS: u32 = 10;

/// Whether an API may be used on a connection that must authenticate but
/// has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreAuth {
    /// Only once authenticated.
    Never,
    /// Before the SASL handshake (ApiVersions, SaslHandshake).
    Opening,
    /// After the SASL handshake, to carry the exchange (SaslAuthenticate).
    Exchange,
}

/// A SASL mechanism the listener can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 5802, RFC 7677): the password never crosses the
    /// wire.
    ScramSha256,
    /// PLAIN (RFC 4616): the password crosses the wire in clear text, so it
    /// needs TLS, which this listener does not have yet.
    Plain,
}

impl Mechanism {
    /// The mechanism's SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::Plain => "PLAIN",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "SCRAM-SHA-256" => Ok(Mechanism::ScramSha256),
            "PLAIN" => Ok(Mechanism::Plain),
            other => Err(format!(
                "unsupported SASL mechanism {other:?}; expected SCRAM-SHA-256 or PLAIN"
            )),
        }
    }
}

/// How clients authenticate to the Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Refuse every request but ApiVersions, SaslHandshake and
    /// SaslAuthenticate until the connection has authenticated.
    pub required: bool,
    /// Mechanisms offered in SaslHandshake. Empty: SASL is not offered.
    pub mechanisms: Vec<Mechanism>,
    /// Allow PLAIN although the listener has no TLS, so that passwords
    /// cross the network in clear text.
    pub allow_plain_without_tls: bool,
    /// How long a failed authentication waits before it is answered (and
    /// the connection closed), to slow down password guessing.
    pub failure_delay: Duration,
    /// Users that may do everything whatever their ACLs say (Kafka's
    /// `super.users`). Everyone else may do only what their ACLs grant.
    pub super_users: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: false,
            mechanisms: Vec::new(),
            allow_plain_without_tls: false,
            failure_delay: Duration::from_secs(1),
            super_users: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Authentication required, with these mechanisms.
    pub fn sasl(mechanisms: Vec<Mechanism>) -> AuthConfig {
        AuthConfig {
            required: true,
            mechanisms,
            ..AuthConfig::default()
        }
    }

    /// Checks the settings before the listener starts; `tls` says whether
    /// the listener encrypts.
    pub fn validate(&self, tls: bool) -> Result<(), String> {
        if self.required && self.mechanisms.is_empty() {
            return Err("authentication is required but no SASL mechanism is enabled".to_string());
        }
        if self.mechanisms.contains(&Mechanism::Plain) && !tls && !self.allow_plain_without_tls {
            return Err(
                "SASL PLAIN sends passwords in clear text and this listener has no TLS; \
                 use SCRAM-SHA-256, or allow PLAIN explicitly (allow_plain_without_tls)"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// Where a connection is in its SASL exchange.
pub(crate) enum State {
    /// Nothing yet.
    Start,
    /// SaslHandshake chose a mechanism; its first token is due.
    Handshaken(Mechanism),
    /// SCRAM: the server-first message was sent; client-final is due.
    ScramSent(Box<ScramExchange>),
    /// Authenticated as this user.
    Authenticated(String),
}

/// What the server remembers between SCRAM's two rounds.
pub(crate) struct ScramExchange {
    /// The user name from client-first.
    pub user: String,
    /// Whether the user exists; when not, `creds` are made up.
    pub known: bool,
    /// The user's credentials.
    pub creds: ScramCredentials,
    /// The GS2 header the client sent (`n,,` or `y,,`).
    pub gs2_header: &'static str,
    /// client-first-message-bare, as received.
    pub client_first_bare: String,
    /// server-first-message, as sent.
    pub server_first: String,
    /// The combined nonce sent in server-first.
    pub nonce: String,
}

/// The authentication state of one connection.
pub(crate) struct Session {
    /// Where the exchange is.
    pub state: State,
    /// Close the connection once the answer in hand is sent.
    pub close_after_answer: bool,
    /// SaslHandshake v0 was used: tokens come as bare frames.
    pub raw_tokens: bool,
    /// What the connection may do: everything without authentication,
    /// else what the user's ACLs, loaded at login, grant.
    pub access: Access,
    /// The transactions this connection added partitions or groups to.
    pub txns: crate::api::txn::SeenTxns,
    required: bool,
    requests_before_auth: u32,
}

impl Session {
    pub fn new(config: &AuthConfig) -> Session {
        Session {
            state: State::Start,
            close_after_answer: false,
            raw_tokens: false,
            access: if config.required { Access::none() } else { Access::All },
            txns: crate::api::txn::SeenTxns::default(),
            required: config.required,
            requests_before_auth: 0,
        }
    }

    /// True when every API may be served: authentication is not required
    /// or has completed.
    pub fn is_open(&self) -> bool {
        !self.required || matches!(self.state, State::Authenticated(_))
    }

    /// True when the next frame is a bare SASL token (after SaslHandshake
    /// v0), not a Kafka request.
    pub fn expects_raw_token(&self) -> bool {
        self.raw_tokens && matches!(self.state, State::Handshaken(_) | State::ScramSent(_))
    }

    /// Counts a request read before authentication; false once there have
    /// been too many.
    pub fn count_request(&mut self) -> bool {
        if self.is_open() {
            return true;
        }
        self.requests_before_auth += 1;
        self.requests_before_auth <= PRE_AUTH_MAX_REQUESTS
    }

    /// Whether a request for an API that may come before authentication
    /// as `pre_auth` says (`None`: an API this server does not answer)
    /// may be served now; when not, the connection is closed.
    pub(crate) fn allows(&self, pre_auth: Option<PreAuth>) -> bool {
        if self.is_open() {
            return true;
        }
        match self.state {
            State::Start => pre_auth == Some(PreAuth::Opening),
            State::Handshaken(_) | State::ScramSent(_) => pre_auth == Some(PreAuth::Exchange),
            State::Authenticated(_) => true,
        }
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated(user) => Some(user),
            _ => None,
        }
    }
}
