//! An SQS listener on a random port over a fresh schema of the real
//! Postgres, and a plain HTTP/1.1 client that sends it exactly the bytes a
//! test wants.

#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use pgbroker::{Broker, BrokerConfig};
use pgbroker_sqs::{SqsConfig, SqsServer};
use pgbroker_testkit::{database_url, TestSchema};
use serde_json::Value;

pub struct TestServer {
    pub broker: Broker,
    pub addr: SocketAddr,
    /// The test's schema, for statements a test runs itself.
    pub schema: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    // Last: the schema goes after the broker and the server.
    _guard: TestSchema,
}

/// An answer: status, the `x-amzn-query-error` header, the JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub query_error: Option<String>,
    pub body: Value,
}

impl Answer {
    /// The error shape named by `__type`, without its namespace.
    pub fn error_type(&self) -> Option<&str> {
        self.body["__type"].as_str().and_then(|t| t.rsplit('#').next())
    }

    /// Asserts an error answer of this status, shape and query code.
    pub fn assert_error(&self, status: u16, shape: &str, query_code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.error_type(), Some(shape), "{self:?}");
        assert_eq!(
            self.query_error.as_deref(),
            Some(&*format!("{query_code};Sender")),
            "{self:?}"
        );
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(SqsConfig {
            allow_anonymous: true,
            ..SqsConfig::default()
        })
        .await
    }

    /// A server with `config` as given, anonymous access included.
    pub async fn start_with_auth(config: SqsConfig) -> TestServer {
        Self::start_exactly(config).await
    }

    pub async fn start_with(config: SqsConfig) -> TestServer {
        Self::start_exactly(SqsConfig {
            allow_anonymous: true,
            ..config
        })
        .await
    }

    async fn start_exactly(config: SqsConfig) -> TestServer {
        let guard = TestSchema::new("sqs");
        let broker = Broker::connect(BrokerConfig {
            database_url: database_url(),
            schema: guard.name().to_string(),
            pool_size: 8,
            migrate: true,
            ..BrokerConfig::default()
        })
        .await
        .expect("connect to test database");
        let config = SqsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..config
        };
        let server = SqsServer::bind(broker.clone(), config).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            broker,
            addr,
            schema: guard.name().to_string(),
            stop: Some(stop),
            _guard: guard,
        }
    }

    /// Sends `body` with these headers (besides Host and Content-Length).
    pub async fn raw(&self, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        raw_to(self.addr, headers, body).await
    }

    /// Calls an action with a JSON body, as the SDKs do.
    pub async fn call(&self, action: &str, body: Value) -> Answer {
        let target = format!("AmazonSQS.{action}");
        self.raw(
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", &target),
            ],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Calls an action that must succeed; returns its body.
    pub async fn ok(&self, action: &str, body: Value) -> Value {
        let a = self.call(action, body).await;
        assert_eq!(a.status, 200, "{action}: {a:?}");
        a.body
    }

    /// Runs one statement in the test's schema (to age messages, or to
    /// look at rows); returns how many rows it touched.
    pub async fn sql(&self, statement: &str) -> u64 {
        let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .await
            .expect("search_path");
        client.execute(statement, &[]).await.expect(statement)
    }

    /// Creates a queue; returns its URL.
    pub async fn queue(&self, name: &str, attributes: Value) -> String {
        let b = self
            .ok(
                "CreateQueue",
                serde_json::json!({"QueueName": name, "Attributes": attributes}),
            )
            .await;
        b["QueueUrl"].as_str().expect("url").to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends `body` to the server at `addr` with these headers (besides Host
/// and Content-Length).
pub async fn raw_to(addr: SocketAddr, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::post("/").header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let res = sender.send_request(req).await.expect("response");
    let status = res.status().as_u16();
    let query_error = res
        .headers()
        .get("x-amzn-query-error")
        .map(|v| v.to_str().expect("ascii").to_string());
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        query_error,
        body,
    }
}
