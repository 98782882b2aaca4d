//! SaslHandshake and SaslAuthenticate: SCRAM-SHA-256 (RFC 5802, RFC 7677)
//! and PLAIN (RFC 4616) against the users stored by the library.
//!
//! After SaslHandshake v1 the tokens travel inside SaslAuthenticate
//! requests; after v0 (old clients) as bare length-prefixed frames, see
//! [`raw_token`].
//! A failure is answered with `SASL_AUTHENTICATION_FAILED` after
//! [`AuthConfig::failure_delay`](crate::AuthConfig), and the connection is
//! closed. An unknown user fails exactly as a wrong password does: SCRAM
//! answers it with a made-up salt that stays the same for the same name,
//! and PLAIN derives a key all the same.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::{ScramCredentials, DEFAULT_SCRAM_ITERATIONS};
use rand::RngCore;

use super::sb;
use crate::auth::{Mechanism, ScramExchange, Session, State};
use crate::authz::Access;
use crate::dispatch::ReqInfo;
use crate::server::Ctx;

/// Random bytes of the server's part of the SCRAM nonce.
const SERVER_NONCE_BYTES: usize = 24;

pub(crate) async fn handshake(
    info: &ReqInfo<'_>,
    req: SaslHandshakeRequest,
    session: &mut Session,
) -> Option<SaslHandshakeResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let offered = &ctx.config.auth.mechanisms;
    let mut resp = SaslHandshakeResponse::default();
    resp.mechanisms = offered.iter().map(|m| sb(m.name())).collect();
    if offered.is_empty() || !matches!(session.state, State::Start) {
        tracing::warn!(peer = %info.peer, "SaslHandshake not expected now; closing");
        resp.error_code = ResponseError::IllegalSaslState.code();
        session.close_after_answer = true;
        return Some(resp);
    }
    match req.mechanism.as_str().parse::<Mechanism>() {
        Ok(m) if offered.contains(&m) => {
            session.state = State::Handshaken(m);
            // v0: the tokens follow as bare frames, not SaslAuthenticate.
            session.raw_tokens = v == 0;
        }
        _ => {
            tracing::warn!(peer = %info.peer, mechanism = %req.mechanism.as_str(), "unsupported SASL mechanism; closing");
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
            session.close_after_answer = true;
        }
    }
    Some(resp)
}

pub(crate) async fn authenticate(
    info: &ReqInfo<'_>,
    req: SaslAuthenticateRequest,
    session: &mut Session,
) -> Option<SaslAuthenticateResponse> {
    let ctx = info.ctx;
    let mut resp = SaslAuthenticateResponse::default();
    match step(ctx, info.peer, info.client_id(), &req.auth_bytes, session).await {
        Ok(token) => resp.auth_bytes = token,
        Err((error, message)) => {
            resp.error_code = error;
            resp.error_message = Some(sb(message));
        }
    }
    // session_lifetime_ms stays 0: sessions do not expire.
    Some(resp)
}

/// A token after SaslHandshake v0: the whole frame is the token and the
/// answer is the server's token alone. A failure closes the connection
/// without an answer, as Kafka does, since this framing has no room for
/// an error.
pub(crate) async fn raw_token(
    ctx: &Arc<Ctx>,
    frame: &[u8],
    peer: &SocketAddr,
    session: &mut Session,
) -> Result<Option<BytesMut>, String> {
    match step(ctx, peer, "", frame, session).await {
        Ok(token) => Ok(Some(BytesMut::from(&token[..]))),
        Err((_, message)) => Err(message),
    }
}

/// Runs one step of the exchange with the client's token; the server's
/// token, or the error code and message to answer before closing.
async fn step(
    ctx: &Ctx,
    peer: &SocketAddr,
    client_id: &str,
    token: &[u8],
    session: &mut Session,
) -> Result<Bytes, (i16, String)> {
    let state = std::mem::replace(&mut session.state, State::Start);
    let outcome = match state {
        State::Handshaken(Mechanism::ScramSha256) => scram_first(ctx, token).await,
        State::ScramSent(exchange) => scram_final(*exchange, token),
        State::Handshaken(Mechanism::Plain) => plain(ctx, token).await,
        State::Start | State::Authenticated(_) => {
            session.close_after_answer = true;
            return Err((
                ResponseError::IllegalSaslState.code(),
                "SaslAuthenticate is not expected now".to_string(),
            ));
        }
    };
    match outcome {
        Step::Continue(exchange, token) => {
            session.state = State::ScramSent(exchange);
            Ok(token)
        }
        Step::Done(user, mechanism, token) => match access_of(ctx, &user).await {
            Ok(access) => {
                tracing::info!(%peer, %user, %mechanism, client_id, "authenticated");
                session.access = access;
                session.state = State::Authenticated(user);
                Ok(token)
            }
            Err(e) => {
                tracing::warn!(%peer, %user, %mechanism, error = %e, "authentication failed: ACLs unreadable");
                fail(ctx, session, mechanism, Reason::Unavailable).await
            }
        },
        Step::Fail {
            mechanism,
            user,
            reason,
        } => {
            tracing::warn!(%peer, user = user.as_deref().unwrap_or(""), %mechanism, %reason, "authentication failed");
            fail(ctx, session, mechanism, reason).await
        }
    }
}

/// Answers a failed exchange after the failure delay, and closes the
/// connection after the answer.
async fn fail(ctx: &Ctx, session: &mut Session, mechanism: Mechanism, reason: Reason) -> Result<Bytes, (i16, String)> {
    tokio::time::sleep(ctx.config.auth.failure_delay).await;
    session.close_after_answer = true;
    let message = match reason {
        Reason::Credentials | Reason::Nonce | Reason::Unavailable => format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
        ),
        Reason::Malformed(what) => format!("Authentication failed: {what}"),
    };
    Err((ResponseError::SaslAuthenticationFailed.code(), message))
}

/// What `user` may do on this connection: everything for a super user,
/// else what its ACLs grant, read once here and kept for the connection's
/// life (changes apply to new connections).
async fn access_of(ctx: &Ctx, user: &str) -> pgbroker::Result<Access> {
    if ctx.config.auth.super_users.iter().any(|u| u == user) {
        return Ok(Access::All);
    }
    Ok(Access::Granted(Arc::new(ctx.broker.user_acls(user).await?)))
}

/// Why an exchange failed; only malformed messages are described to the
/// client.
#[derive(Debug)]
pub(crate) enum Reason {
    /// Wrong password, unknown user or wrong proof.
    Credentials,
    /// The client-final nonce is not the one sent in server-first.
    Nonce,
    /// The credentials could not be read.
    Unavailable,
    /// The message does not follow the mechanism's grammar.
    Malformed(&'static str),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Credentials => f.write_str("invalid credentials"),
            Reason::Nonce => f.write_str(
                "client-final nonce differs from the one sent (librdkafka before 2.6.1 sends its own nonce twice)",
            ),
            Reason::Unavailable => f.write_str("credentials could not be read"),
            Reason::Malformed(what) => f.write_str(what),
        }
    }
}

/// What one step of an exchange comes to.
pub(crate) enum Step {
    /// SCRAM's first round went well; send this token.
    Continue(Box<ScramExchange>, Bytes),
    /// Authenticated as this user; send this token.
    Done(String, Mechanism, Bytes),
    /// Refused.
    Fail {
        mechanism: Mechanism,
        user: Option<String>,
        reason: Reason,
    },
}

fn malformed(mechanism: Mechanism, what: &'static str) -> Step {
    Step::Fail {
        mechanism,
        user: None,
        reason: Reason::Malformed(what),
    }
}

/// The stored credentials of `user`, or made-up ones (`false`) when there
/// is no such user. `Err` when they could not be read.
async fn credentials(ctx: &Ctx, user: &str) -> Result<(ScramCredentials, bool), ()> {
    match ctx.broker.scram_credentials(user).await {
        Ok(Some(creds)) => Ok((creds, true)),
        Ok(None) => Ok((dummy_credentials(user), false)),
        Err(e) => {
            tracing::warn!(error = %e, "reading credentials failed");
            Err(())
        }
    }
}

/// Credentials for a user that does not exist: the salt is a keyed hash of
/// the name, so asking twice shows the same salt, as for a real user; the
/// keys are random, so no proof or password matches them.
pub(crate) fn dummy_credentials(user: &str) -> ScramCredentials {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut s);
        s
    });
    let mut salt = secret.to_vec();
    salt.extend_from_slice(user.as_bytes());
    let mut creds = ScramCredentials::derive(user.as_bytes(), &salt, 1);
    creds.salt = creds.stored_key.to_vec();
    creds.iterations = DEFAULT_SCRAM_ITERATIONS;
    rand::thread_rng().fill_bytes(&mut creds.stored_key);
    rand::thread_rng().fill_bytes(&mut creds.server_key);
    creds
}

/// A SCRAM `saslname`: `=2C` and `=3D` stand for `,` and `=`; any other
/// `=` is an error.
fn unescape_name(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3)?;
        out.push(match esc {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A nonce: printable ASCII but `,`.
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// client-first, as the server reads it.
pub(crate) struct ClientFirst<'a> {
    /// The GS2 header (`n,,` or `y,,`).
    gs2_header: &'static str,
    /// client-first-message-bare.
    bare: &'a str,
    /// The user name, unescaped.
    pub user: String,
    /// The client's part of the nonce.
    client_nonce: &'a str,
}

/// Parses client-first; the failure to answer when it is malformed.
pub(crate) fn parse_client_first(token: &[u8]) -> Result<ClientFirst<'_>, Step> {
    const M: Mechanism = Mechanism::ScramSha256;
    let Ok(msg) = std::str::from_utf8(token) else {
        return Err(malformed(M, "client-first message is not UTF-8"));
    };
    let (gs2_header, bare) = if let Some(bare) = msg.strip_prefix("n,,") {
        ("n,,", bare)
    } else if let Some(bare) = msg.strip_prefix("y,,") {
        ("y,,", bare)
    } else if msg.starts_with("p=") {
        return Err(malformed(M, "channel binding is not supported"));
    } else {
        return Err(malformed(
            M,
            "client-first message must start with the GS2 header \"n,,\"",
        ));
    };
    let mut attrs = bare.split(',');
    let Some(user) = attrs.next().and_then(|a| a.strip_prefix("n=")).and_then(unescape_name) else {
        return Err(malformed(M, "client-first message must name the user (n=...)"));
    };
    let Some(client_nonce) = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| valid_nonce(n))
    else {
        return Err(malformed(M, "client-first message must carry a nonce (r=...)"));
    };
    // Further attributes are extensions; none is supported, none is needed.
    Ok(ClientFirst {
        gs2_header,
        bare,
        user,
        client_nonce,
    })
}

/// Answers a parsed client-first with server-first, given the user's
/// credentials (`known`: the user exists) and the server's random part of
/// the nonce.
pub(crate) fn server_first(first: ClientFirst<'_>, creds: ScramCredentials, known: bool, server_nonce: &[u8]) -> Step {
    let nonce = format!("{}{}", first.client_nonce, B64.encode(server_nonce));
    let server_first = format!("r={nonce},s={},i={}", B64.encode(&creds.salt), creds.iterations);
    let token = Bytes::from(server_first.clone().into_bytes());
    let exchange = ScramExchange {
        user: first.user,
        known,
        creds,
        gs2_header: first.gs2_header,
        client_first_bare: first.bare.to_string(),
        server_first,
        nonce,
    };
    Step::Continue(Box::new(exchange), token)
}

/// Reads client-first and answers server-first.
async fn scram_first(ctx: &Ctx, token: &[u8]) -> Step {
    let first = match parse_client_first(token) {
        Ok(first) => first,
        Err(step) => return step,
    };
    let Ok((creds, known)) = credentials(ctx, &first.user).await else {
        return Step::Fail {
            mechanism: Mechanism::ScramSha256,
            user: Some(first.user),
            reason: Reason::Unavailable,
        };
    };
    let mut server_nonce = [0u8; SERVER_NONCE_BYTES];
    rand::thread_rng().fill_bytes(&mut server_nonce);
    server_first(first, creds, known, &server_nonce)
}

/// Checks client-final and answers server-final.
pub(crate) fn scram_final(x: ScramExchange, token: &[u8]) -> Step {
    const M: Mechanism = Mechanism::ScramSha256;
    let fail = |user: String, reason: Reason| Step::Fail {
        mechanism: M,
        user: Some(user),
        reason,
    };
    let Ok(msg) = std::str::from_utf8(token) else {
        return fail(x.user, Reason::Malformed("client-final message is not UTF-8"));
    };
    let Some(at) = msg.rfind(",p=") else {
        return fail(
            x.user,
            Reason::Malformed("client-final message carries no proof (p=...)"),
        );
    };
    let (without_proof, proof) = (&msg[..at], &msg[at + 3..]);
    let mut attrs = without_proof.split(',');
    let binding = attrs.next().and_then(|a| a.strip_prefix("c="));
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r="));
    if binding != Some(B64.encode(x.gs2_header).as_str()) {
        return fail(
            x.user,
            Reason::Malformed("channel binding (c=...) does not match the GS2 header"),
        );
    }
    // The nonce must be exactly the one this server sent: a client that
    // can change it could replay an old exchange.
    if nonce != Some(x.nonce.as_str()) {
        return fail(x.user, Reason::Nonce);
    }
    let Ok(proof) = B64.decode(proof) else {
        return fail(x.user, Reason::Malformed("client proof is not base64"));
    };
    let auth_message = format!("{},{},{without_proof}", x.client_first_bare, x.server_first);
    let valid = x.creds.verify_client_proof(auth_message.as_bytes(), &proof);
    if !(valid && x.known) {
        return fail(x.user, Reason::Credentials);
    }
    let signature = x.creds.server_signature(auth_message.as_bytes());
    let server_final = format!("v={}", B64.encode(signature));
    Step::Done(x.user, M, Bytes::from(server_final.into_bytes()))
}

/// Parses a PLAIN message, `[authzid] NUL authcid NUL password`: the
/// user and the password, or the failure to answer.
pub(crate) fn parse_plain(token: &[u8]) -> Result<(String, &[u8]), Step> {
    const M: Mechanism = Mechanism::Plain;
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(M, "PLAIN message must be authzid NUL user NUL password"));
    };
    let Ok(user) = std::str::from_utf8(user).map(str::to_string) else {
        return Err(malformed(M, "user name is not UTF-8"));
    };
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(Step::Fail {
            mechanism: M,
            user: Some(user),
            reason: Reason::Malformed("authorization id must be empty or the user name"),
        });
    }
    Ok((user, password))
}

/// The outcome of a PLAIN login: `valid` says whether the password matched
/// the credentials, `known` whether the user exists.
pub(crate) fn plain_outcome(user: String, valid: bool, known: bool) -> Step {
    if valid && known {
        Step::Done(user, Mechanism::Plain, Bytes::new())
    } else {
        Step::Fail {
            mechanism: Mechanism::Plain,
            user: Some(user),
            reason: Reason::Credentials,
        }
    }
}

/// Checks a PLAIN message: `[authzid] NUL authcid NUL password`.
async fn plain(ctx: &Ctx, token: &[u8]) -> Step {
    let (user, password) = match parse_plain(token) {
        Ok(parsed) => parsed,
        Err(step) => return step,
    };
    let Ok((creds, known)) = credentials(ctx, &user).await else {
        return Step::Fail {
            mechanism: Mechanism::Plain,
            user: Some(user),
            reason: Reason::Unavailable,
        };
    };
    // The derivation takes milliseconds of CPU: off the async threads.
    let password = password.to_vec();
    let valid = tokio::task::spawn_blocking(move || creds.verify_password(&password))
        .await
        .unwrap_or(false);
    plain_outcome(user, valid, known)
}

/// One step of an exchange as [`step`] runs it, without a database or the
/// failure delay: `lookup` stands for the stored credentials (`true`: the
/// user exists) and `server_nonce` for the random part of the nonce. Used
/// by the fuzz target.
pub(crate) fn step_offline(
    state: State,
    token: &[u8],
    lookup: &dyn Fn(&str) -> (ScramCredentials, bool),
    server_nonce: &[u8],
) -> Step {
    match state {
        State::Handshaken(Mechanism::ScramSha256) => match parse_client_first(token) {
            Ok(first) => {
                let (creds, known) = lookup(&first.user);
                server_first(first, creds, known, server_nonce)
            }
            Err(step) => step,
        },
        State::ScramSent(exchange) => scram_final(*exchange, token),
        State::Handshaken(Mechanism::Plain) => match parse_plain(token) {
            Ok((user, password)) => {
                let (creds, known) = lookup(&user);
                let valid = creds.verify_password(password);
                plain_outcome(user, valid, known)
            }
            Err(step) => step,
        },
        State::Start | State::Authenticated(_) => malformed(Mechanism::ScramSha256, "not expected now"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_nonces() {
        assert_eq!(unescape_name("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(unescape_name("plain").as_deref(), Some("plain"));
        assert_eq!(unescape_name("bad=2"), None);
        assert_eq!(unescape_name("bad=41"), None);
        assert!(valid_nonce("fyko+d2lbbFgONRv9qkxdawL"));
        assert!(!valid_nonce("") && !valid_nonce("a,b") && !valid_nonce("a b"));
    }

    #[test]
    fn unknown_users_get_a_stable_salt() {
        let a = dummy_credentials("nobody");
        let b = dummy_credentials("nobody");
        let c = dummy_credentials("somebody");
        assert_eq!(a.salt, b.salt);
        assert_ne!(a.salt, c.salt);
        assert_eq!(a.salt.len(), 32);
        assert_eq!(a.iterations, DEFAULT_SCRAM_ITERATIONS);
    }
}
