//! A pgbroker Kafka server on a random port over a fresh schema, and a
//! minimal raw Kafka client to send it exactly the bytes a test wants.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use pgbroker::{Broker, BrokerConfig, TopicConfig, TopicName};
use pgbroker_kafka::{KafkaConfig, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{database_url, TestSchema};

pub mod auth;
pub mod battery;

/// An in-process Kafka server over a broker on a fresh schema. The schema
/// goes, as [`TestSchema`] says, with the last server on it.
pub struct TestServer {
    /// The broker the server serves.
    pub broker: Broker,
    /// The schema's name.
    pub schema: String,
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Stops the server.
    pub shutdown: Shutdown,
    /// The server's task.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    // Last: dropped after the broker.
    guard: Arc<TestSchema>,
}

/// A broker on `schema`, migrated, with a pool large enough for a server.
pub async fn broker_on(schema: &str) -> Broker {
    Broker::connect(BrokerConfig {
        database_url: database_url(),
        schema: schema.to_string(),
        pool_size: 16,
        migrate: true,
        ..BrokerConfig::default()
    })
    .await
    .expect("connect to test database")
}

impl TestServer {
    /// A server with the default configuration on a fresh schema.
    pub async fn start() -> TestServer {
        Self::start_with(KafkaConfig::default()).await
    }

    /// A server with `config` on a fresh schema.
    pub async fn start_with(config: KafkaConfig) -> TestServer {
        Self::start_on(Arc::new(TestSchema::new("k")), config).await
    }

    /// Another server, with `config`, on this one's schema, as another
    /// process would be.
    pub async fn another(&self, config: KafkaConfig) -> TestServer {
        Self::start_on(Arc::clone(&self.guard), config).await
    }

    async fn start_on(guard: Arc<TestSchema>, config: KafkaConfig) -> TestServer {
        let schema = guard.name();
        let broker = broker_on(schema).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::default();
        let config = KafkaConfig {
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: addr.port(),
            ..config
        };
        let task = tokio::spawn(pgbroker_kafka::serve_on(
            listener,
            broker.clone(),
            config,
            shutdown.clone(),
        ));
        TestServer {
            broker,
            schema: schema.to_string(),
            addr,
            shutdown,
            task,
            guard,
        }
    }

    /// Creates topic `name` with `config`.
    pub async fn topic(&self, name: &str, config: TopicConfig) -> TopicName {
        let topic = TopicName::new(name).expect("valid name");
        self.broker
            .topics()
            .create(&topic, &config)
            .await
            .expect("create topic");
        topic
    }

    /// A raw client connection to the server.
    pub async fn connect(&self) -> Conn {
        Conn {
            stream: TcpStream::connect(self.addr).await.expect("connect"),
            next_id: 1,
        }
    }

    /// Shuts the server down and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.task.abort();
    }
}

/// A raw Kafka client connection: requests are encoded with
/// `kafka-protocol`, or sent as whatever bytes a test wants.
pub struct Conn {
    /// The connection.
    pub stream: TcpStream,
    next_id: i32,
}

impl Conn {
    /// Sends a request and reads its response.
    pub async fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let id = self.send(version, req).await;
        let mut body = self.read_frame().await.expect("a response frame");
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).expect("header");
        assert_eq!(header.correlation_id, id, "answers come in order");
        R::Response::decode(&mut body, version).expect("response body")
    }

    /// Sends a request without reading the answer; returns its correlation id.
    pub async fn send<R: Request>(&mut self, version: i16, req: &R) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = id;
        header.client_id = Some(StrBytes::from_static_str("wire-test"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encode header");
        req.encode(&mut body, version).expect("encode request");
        self.send_raw_frame(&body).await;
        id
    }

    /// Sends `body` with its length prefix.
    pub async fn send_raw_frame(&mut self, body: &[u8]) {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(i32::try_from(body.len()).expect("small"));
        frame.put_slice(body);
        self.stream.write_all(&frame).await.expect("write");
    }

    /// Sends `bytes` as they are, ignoring a connection the server closed.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads one response frame; `None` when the server closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let n = usize::try_from(i32::from_be_bytes(len)).ok()?;
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }

    /// True when the server closed the connection within two seconds.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Reads `(correlation id, error code)` of a bare error answer.
pub fn bare_error(mut frame: Bytes) -> (i32, i16) {
    (frame.get_i32(), frame.get_i16())
}
