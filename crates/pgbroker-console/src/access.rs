//! Who is calling and what they may do.
//!
//! A request's [`Caller`] comes from its session cookie. A user's session
//! carries the rights of their grants (read again on every request, so a
//! revoked grant takes effect at once); super users may do everything.
//! While the broker has no users, a loopback client (its address and the
//! `Host` it asked for are both loopback, which also turns away DNS
//! rebinding) gets a session without a user that may do everything; any
//! other client is refused with a sentence saying why. Such a session
//! stops working as soon as a user is added.
//!
//! A [`Changer`] is a caller whose request also carries the session's CSRF
//! token in `X-CSRF-Token`: every handler that changes anything takes one.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use pgbroker::auth::{Permission, UserAcls};

use crate::error::{ApiError, ApiResult};
use crate::session::{same_secret, token_of};
use crate::State;

/// Header that carries the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// What the message for remote clients of a broker without users says.
pub(crate) const LOOPBACK_ONLY: &str = "this broker has no users, so the console is served only to \
     loopback clients (127.0.0.1, ::1); add one with `pgbroker user add NAME` and log in as it";

/// What a caller may do.
#[derive(Debug, Clone)]
pub(crate) enum Rights {
    /// Everything: a super user, or a loopback client of a broker
    /// without users.
    All,
    /// What the user's grants allow.
    Acls(UserAcls),
}

/// The caller of an API request with a valid session.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The user, or `None` for a loopback client of a broker without
    /// users.
    pub user: Option<String>,
    /// The session's CSRF token.
    pub csrf: String,
    /// What they may do.
    pub rights: Rights,
}

/// A [`Caller`] whose request carries the session's CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Changer(pub Caller);

/// True when the peer and the `Host` asked for are both loopback.
pub(crate) fn is_loopback_request(parts: &Parts) -> bool {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    peer && is_loopback_host(&parts.headers)
}

fn is_loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True when the broker has at least one user.
pub(crate) async fn has_users(state: &State) -> ApiResult<bool> {
    Ok(!state.broker.auth().list_users().await?.is_empty())
}

/// The rights of `user`.
pub(crate) async fn rights_of(state: &State, user: &str) -> ApiResult<Rights> {
    if state.config.super_users.iter().any(|u| u == user) {
        return Ok(Rights::All);
    }
    Ok(Rights::Acls(state.broker.auth().user_acls(user).await?))
}

impl FromRequestParts<Arc<State>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> ApiResult<Caller> {
        let session = token_of(&parts.headers)
            .and_then(|t| state.sessions.get(&t))
            .ok_or_else(ApiError::unauthenticated)?;
        state.history.touch();
        let rights = match &session.user {
            Some(user) => rights_of(state, user).await?,
            None => {
                if !is_loopback_request(parts) {
                    return Err(ApiError::forbidden(LOOPBACK_ONLY));
                }
                if has_users(state).await? {
                    return Err(ApiError::unauthenticated());
                }
                Rights::All
            }
        };
        Ok(Caller {
            user: session.user,
            csrf: session.csrf,
            rights,
        })
    }
}

impl FromRequestParts<Arc<State>> for Changer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> ApiResult<Changer> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        match sent {
            Some(token) if same_secret(token, &caller.csrf) => Ok(Changer(caller)),
            _ => Err(ApiError::forbidden(
                "this change needs the session's CSRF token in the X-CSRF-Token header",
            )),
        }
    }
}

impl Caller {
    /// True when the caller may do everything.
    pub fn is_all(&self) -> bool {
        matches!(self.rights, Rights::All)
    }

    /// May see topic `name`.
    pub fn sees_topic(&self, name: &str) -> bool {
        match &self.rights {
            Rights::All => true,
            Rights::Acls(a) => a.any_on_topic(name),
        }
    }

    /// May see group `name`.
    pub fn sees_group(&self, name: &str) -> bool {
        match &self.rights {
            Rights::All => true,
            Rights::Acls(a) => a.any_on_group(name),
        }
    }

    /// May see queue `name`.
    pub fn sees_queue(&self, name: &str) -> bool {
        match &self.rights {
            Rights::All => true,
            Rights::Acls(a) => a.any_on_queue(name),
        }
    }

    /// Refuses unless `permission` is granted on topic `name`.
    pub fn need_topic(&self, permission: Permission, name: &str) -> ApiResult<()> {
        let ok = match &self.rights {
            Rights::All => true,
            Rights::Acls(a) => a.allows_topic(permission, name),
        };
        self.allowed(ok, permission, "topic", name)
    }

    /// Refuses unless `permission` is granted on group `name`.
    pub fn need_group(&self, permission: Permission, name: &str) -> ApiResult<()> {
        let ok = match &self.rights {
            Rights::All => true,
            Rights::Acls(a) => a.allows_group(permission, name),
        };
        self.allowed(ok, permission, "group", name)
    }

    /// Refuses unless `permission` is granted on queue `name`.
    pub fn need_queue(&self, permission: Permission, name: &str) -> ApiResult<()> {
        let ok = match &self.rights {
            Rights::All => true,
            Rights::Acls(a) => a.allows_queue(permission, name),
        };
        self.allowed(ok, permission, "queue", name)
    }

    /// Refuses, as if it did not exist, a `kind` named `name` that the
    /// caller may not see.
    pub fn need_visible(&self, visible: bool, kind: &str, name: &str) -> ApiResult<()> {
        if visible {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "user {} has no grant on {kind} {name:?}",
            self.user.as_deref().unwrap_or("-")
        )))
    }

    fn allowed(&self, ok: bool, permission: Permission, kind: &str, name: &str) -> ApiResult<()> {
        if ok {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "user {} has no {permission} grant on {kind} {name:?}",
            self.user.as_deref().unwrap_or("-")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(axum::http::header::HOST, h.parse().expect("header"));
        m
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:8080", "127.0.0.1:80", "[::1]:8080", "127.1.2.3"] {
            assert!(is_loopback_host(&host(h)), "{h}");
        }
        for h in [
            "example.com",
            "evil.localhost.example:80",
            "10.0.0.1:8080",
            "[fe80::1]:80",
        ] {
            assert!(!is_loopback_host(&host(h)), "{h}");
        }
        assert!(!is_loopback_host(&HeaderMap::new()));
    }
}
