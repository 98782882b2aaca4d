//! A console on a fresh schema, called as a browser would: with a peer
//! address, a Host header, the session cookie and the CSRF token.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use pgbroker_console::{Console, ConsoleConfig};
use pgbroker_testkit::db::TestDb;
use serde_json::Value;
use tower::ServiceExt as _;

pub struct Answer {
    pub status: StatusCode,
    pub set_cookie: Option<String>,
    pub body: Value,
}

pub struct Client {
    pub app: Router,
    pub peer: SocketAddr,
    pub host: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

pub async fn console(db: &TestDb, config: ConsoleConfig) -> Router {
    Console::new(db.broker.clone(), config).router()
}

impl Client {
    pub fn loopback(app: &Router) -> Client {
        Client {
            app: app.clone(),
            peer: "127.0.0.1:50000".parse().expect("addr"),
            host: "127.0.0.1:8080".into(),
            cookie: None,
            csrf: None,
        }
    }

    pub fn remote(app: &Router) -> Client {
        Client {
            peer: "192.0.2.7:50000".parse().expect("addr"),
            host: "broker.example:8080".into(),
            ..Client::loopback(app)
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<&str>, csrf: bool) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, format!("pgbroker_console={c}"));
        }
        if let (true, Some(t)) = (csrf, &self.csrf) {
            req = req.header("x-csrf-token", t);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let mut req = req.body(Body::from(body.unwrap_or("").to_string())).expect("request");
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let res = self.app.clone().oneshot(req).await.expect("answer");
        let status = res.status();
        let set_cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().expect("ascii").to_string());
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            set_cookie,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, false).await
    }

    /// A change, with the CSRF token.
    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.send("POST", path, Some(body), true).await
    }

    /// Keeps the session of a login or session answer.
    pub fn keep(&mut self, a: &Answer) {
        let cookie = a.set_cookie.as_deref().expect("a session cookie");
        let token = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("pgbroker_console="))
            .expect("cookie value");
        self.cookie = Some(token.to_string());
        self.csrf = a.body["csrf"].as_str().map(str::to_string);
    }

    pub async fn login(&mut self, user: &str, password: &str) {
        let a = self
            .post(
                "/api/login",
                &serde_json::json!({ "user": user, "password": password }).to_string(),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        self.keep(&a);
    }
}
