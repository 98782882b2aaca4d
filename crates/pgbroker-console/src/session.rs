//! Sessions: a random token in an `HttpOnly`, `SameSite=Strict` cookie
//! (and `Secure` over HTTPS), kept in memory with its user and its CSRF
//! token. Sessions end after [`IDLE_TIMEOUT`] without use, at logout, and
//! with the process; at most [`MAX_SESSIONS`] are kept, the least recently
//! used going first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use rand::RngCore as _;

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "pgbroker_console";

/// A session unused this long is gone.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);

/// Most sessions kept at once.
pub(crate) const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The pgbroker user; `None` for the session of a loopback client
    /// while the broker has no users.
    pub user: Option<String>,
    /// The token every change must carry in `X-CSRF-Token`.
    pub csrf: String,
    last_used: Instant,
}

/// The sessions of one console.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes from the operating system, base64url.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Starts a session for `user`; returns its token and CSRF token.
    pub fn start(&self, user: Option<String>) -> (String, String) {
        let token = random_token();
        let csrf = random_token();
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.last_used) < IDLE_TIMEOUT);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                user,
                csrf: csrf.clone(),
                last_used: now,
            },
        );
        (token, csrf)
    }

    /// The session of `token`, if alive; marks it used.
    pub fn get(&self, token: &str) -> Option<Session> {
        let mut map = self.lock();
        let now = Instant::now();
        let alive = match map.get_mut(token) {
            Some(s) if now.duration_since(s.last_used) < IDLE_TIMEOUT => {
                s.last_used = now;
                return Some(s.clone());
            }
            Some(_) => false,
            None => return None,
        };
        if !alive {
            map.remove(token);
        }
        None
    }

    /// Ends the session of `token`.
    pub fn end(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The session token of the request's cookie, if any.
pub(crate) fn token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value that installs `token`.
pub(crate) fn set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that removes the cookie.
pub(crate) fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_cookies_strict() {
        assert_ne!(random_token(), random_token());
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; pgbroker_console=tok; b=2".parse().expect("header"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("tok"));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    #[test]
    fn sessions_end() {
        let s = Sessions::default();
        let (token, csrf) = s.start(Some("alice".into()));
        let got = s.get(&token).expect("alive");
        assert_eq!(got.csrf, csrf);
        s.end(&token);
        assert!(s.get(&token).is_none());
    }
}
