//! Logging in and out, and what the page learns about its session.
//!
//! A password is checked against the user's stored SCRAM-SHA-256
//! credentials (the same as the Kafka listener's users), off the async
//! threads, at most two at a time; a failed login waits a moment before it
//! answers, and an unknown user costs as much as a wrong password.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pgbroker::auth::ScramCredentials;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::JsonBody;
use crate::access::{has_users, is_loopback_request, rights_of, Caller, Changer, Rights, LOOPBACK_ONLY};
use crate::error::{json_response, ApiError, ApiResult};
use crate::session::{clear_cookie, set_cookie, token_of};
use crate::State;

/// What the page knows of its session.
#[derive(Serialize)]
struct SessionInfo {
    /// The user, or null for a loopback client of a broker without users.
    user: Option<String>,
    /// The token to send in `X-CSRF-Token` with every change.
    csrf: String,
    /// True when the session may see and change everything.
    all: bool,
    /// True when the broker has no users (the console is open to loopback
    /// clients only).
    open: bool,
}

/// A login.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    user: String,
    password: String,
}

/// `GET /api/session`: the current session; for a loopback client of a
/// broker without users, one is started.
pub(crate) async fn current(AxState(state): AxState<Arc<State>>, request: Request) -> ApiResult<Response> {
    let (mut parts, _) = request.into_parts();
    if token_of(&parts.headers).is_some_and(|t| state.sessions.get(&t).is_some()) {
        let caller = Caller::from_request_parts(&mut parts, &state).await?;
        let open = caller.user.is_none();
        return Ok(info(&caller, open).into_response());
    }
    if has_users(&state).await? {
        return Err(ApiError::unauthenticated());
    }
    if !is_loopback_request(&parts) {
        return Err(ApiError::forbidden(LOOPBACK_ONLY));
    }
    let (token, csrf) = state.sessions.start(None);
    let caller = Caller {
        user: None,
        csrf,
        rights: Rights::All,
    };
    Ok(with_cookie(info(&caller, true), &set_cookie(&token, state.config.tls)))
}

fn info(caller: &Caller, open: bool) -> Response {
    json_response(
        StatusCode::OK,
        &SessionInfo {
            user: caller.user.clone(),
            csrf: caller.csrf.clone(),
            all: caller.is_all(),
            open,
        },
    )
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Password checks running at once.
fn checks() -> &'static Semaphore {
    static CHECKS: OnceLock<Semaphore> = OnceLock::new();
    CHECKS.get_or_init(|| Semaphore::new(2))
}

/// Credentials no password matches, checked for unknown users so that
/// they take as long as known ones.
fn decoy() -> &'static ScramCredentials {
    static DECOY: OnceLock<ScramCredentials> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = crate::session::random_token();
        ScramCredentials::derive(crate::session::random_token().as_bytes(), salt.as_bytes(), 4096)
    })
}

/// `POST /api/login`: checks the password and starts a session.
pub(crate) async fn login(
    AxState(state): AxState<Arc<State>>,
    JsonBody(login): JsonBody<Login>,
) -> ApiResult<Response> {
    let wrong = || ApiError::new(StatusCode::UNAUTHORIZED, "wrong user name or password");
    let stored = if pgbroker::auth::validate_user_name(&login.user).is_ok() && login.password.len() <= 1024 {
        state.broker.auth().scram_credentials(&login.user).await?
    } else {
        None
    };
    let known = stored.is_some();
    let credentials = stored.unwrap_or_else(|| decoy().clone());
    let permit = checks()
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let password = login.password.into_bytes();
    let matches = tokio::task::spawn_blocking(move || credentials.verify_password(&password))
        .await
        .unwrap_or(false);
    drop(permit);
    if !(known && matches) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        return Err(wrong());
    }
    let rights = rights_of(&state, &login.user).await?;
    let (token, csrf) = state.sessions.start(Some(login.user.clone()));
    let caller = Caller {
        user: Some(login.user),
        csrf,
        rights,
    };
    Ok(with_cookie(info(&caller, false), &set_cookie(&token, state.config.tls)))
}

/// `POST /api/logout`: ends the session.
pub(crate) async fn logout(
    AxState(state): AxState<Arc<State>>,
    _changer: Changer,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(token) = token_of(&headers) {
        state.sessions.end(&token);
    }
    Ok(with_cookie(
        json_response(StatusCode::OK, &serde_json::json!({})),
        &clear_cookie(state.config.tls),
    ))
}
