//! The broker processes serving the Kafka protocol on one schema. Each
//! registers itself, with the security protocol of its listener, and
//! refreshes its row; the live ones are those seen recently. Nothing else
//! about them is shared: any of them serves any partition and any group.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};

/// A registered broker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Its Kafka node id.
    pub node_id: i32,
    /// The host clients should connect to.
    pub host: String,
    /// The port clients should connect to.
    pub port: i32,
    /// Optional rack label.
    pub rack: Option<String>,
    /// The security protocol its clients must speak.
    pub listener: SecurityProtocol,
}

/// A Kafka listener's security protocol, as Kafka names it. A client
/// configured for one cannot talk to a broker of another, so a broker
/// tells its clients only of the nodes that share its protocol, as a
/// Kafka broker answers Metadata with the addresses of the listener the
/// request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    /// Plain TCP, no authentication.
    Plaintext,
    /// TLS, no SASL.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The protocol of a listener with or without TLS and SASL.
    pub fn of(tls: bool, sasl: bool) -> SecurityProtocol {
        match (tls, sasl) {
            (false, false) => SecurityProtocol::Plaintext,
            (true, false) => SecurityProtocol::Ssl,
            (false, true) => SecurityProtocol::SaslPlaintext,
            (true, true) => SecurityProtocol::SaslSsl,
        }
    }

    /// Kafka's name for it, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// The protocol Kafka names `name`, if any.
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node registry of a [`Broker`]; see [`Broker::cluster`].
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// The broker processes registered on this schema.
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster { broker: self }
    }
}

impl Cluster<'_> {
    /// Registers a broker process reachable at `host:port` with
    /// `listener`'s security and returns its node id: the one a broker at
    /// that address had before, else a new one.
    pub async fn register(self, host: &str, port: u16, rack: Option<&str>, listener: SecurityProtocol) -> Result<i32> {
        register_node(self.broker, host, port, rack, listener).await
    }

    /// Marks the node as alive now.
    pub async fn touch(self, node_id: i32) -> Result<()> {
        touch_node(self.broker, node_id).await
    }

    /// Takes the node out of the live ones (on clean shutdown); a broker
    /// registered later at the same address gets its node id again.
    pub async fn deregister(self, node_id: i32) -> Result<()> {
        deregister_node(self.broker, node_id).await
    }

    /// Nodes seen within `ttl`, by node id, whatever their security.
    pub async fn live_nodes(self, ttl: Duration) -> Result<Vec<Node>> {
        live_nodes(self.broker, ttl).await
    }
}

/// Rows of nodes not seen for this long are deleted by the next register.
const FORGET_AFTER_SECS: i64 = 3600;

/// Registers a broker process reachable at `host:port` and returns its
/// node id: the one that address had before, if any, else a new one.
///
/// A broker restarted at the same address keeps its node id, as a Kafka
/// broker keeps its `node.id`. Clients key their connections by node id:
/// given a new id for the same address after every restart, librdkafka
/// retires the old id's connection while requests are queued on it, and
/// a transactional producer can then wait forever in
/// `send_offsets_to_transaction` (seen in the fault scenarios).
pub(crate) async fn register_node(
    broker: &Broker,
    host: &str,
    port: u16,
    rack: Option<&str>,
    listener: SecurityProtocol,
) -> Result<i32> {
    if host.is_empty() || host.len() > 255 {
        return Err(Error::invalid(Invalid::AdvertisedHost, "must be 1 to 255 bytes"));
    }
    let client = broker.client().await?;
    let port = i32::from(port);
    let row = client
        .query_one(
            &broker.inner.sql.broker.register_node,
            &[&host, &port, &rack, &listener.as_str()],
        )
        .await?;
    let node_id: i32 = row.get(0);
    client
        .execute(&broker.inner.sql.broker.delete_same_address, &[&host, &port, &node_id])
        .await?;
    // After taking over this address's row, so that a row left by a clean
    // stop long ago is reused rather than forgotten first.
    client
        .execute(&broker.inner.sql.broker.delete_stale_nodes, &[&FORGET_AFTER_SECS])
        .await?;
    Ok(node_id)
}

/// Marks the node as alive now.
pub(crate) async fn touch_node(broker: &Broker, node_id: i32) -> Result<()> {
    let client = broker.client().await?;
    client.execute(&broker.inner.sql.broker.touch_node, &[&node_id]).await?;
    Ok(())
}

/// Takes the node out of the live ones (on clean shutdown); its row keeps
/// the node id for the next broker at its address.
pub(crate) async fn deregister_node(broker: &Broker, node_id: i32) -> Result<()> {
    let client = broker.client().await?;
    client
        .execute(&broker.inner.sql.broker.deregister_node, &[&node_id])
        .await?;
    Ok(())
}

/// Nodes seen within `ttl`, by node id.
pub(crate) async fn live_nodes(broker: &Broker, ttl: Duration) -> Result<Vec<Node>> {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.broker.live_nodes, &[&ms]).await?;
    // The column's CHECK admits only the names `parse` knows.
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Node {
                node_id: r.get(0),
                host: r.get(1),
                port: r.get(2),
                rack: r.get(3),
                listener: SecurityProtocol::parse(r.get(4))?,
            })
        })
        .collect())
}
