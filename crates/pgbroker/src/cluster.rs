//! The broker processes serving the Kafka protocol on one schema. Each
//! registers itself and refreshes its row; the live ones are those seen
//! recently. Nothing else about them is shared: any of them serves any
//! partition and any group.

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
}

/// Rows of nodes not seen for this long are deleted by the next register.
const FORGET_AFTER_SECS: i64 = 3600;

impl Broker {
    /// Registers a broker process reachable at `host:port` and returns its
    /// new node id.
    pub async fn register_node(&self, host: &str, port: u16, rack: Option<&str>) -> Result<i32> {
        if host.is_empty() || host.len() > 255 {
            return Err(Error::invalid(Invalid::AdvertisedHost, "must be 1 to 255 bytes"));
        }
        let client = self.client().await?;
        client
            .execute(&self.inner.sql.broker.delete_stale_nodes, &[&FORGET_AFTER_SECS])
            .await?;
        let row = client
            .query_one(&self.inner.sql.broker.insert_node, &[&host, &i32::from(port), &rack])
            .await?;
        Ok(row.get(0))
    }

    /// Marks the node as alive now.
    pub async fn touch_node(&self, node_id: i32) -> Result<()> {
        let client = self.client().await?;
        client.execute(&self.inner.sql.broker.touch_node, &[&node_id]).await?;
        Ok(())
    }

    /// Removes the node (on clean shutdown).
    pub async fn deregister_node(&self, node_id: i32) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(&self.inner.sql.broker.deregister_node, &[&node_id])
            .await?;
        Ok(())
    }

    /// Nodes seen within `ttl`, by node id.
    pub async fn live_nodes(&self, ttl: Duration) -> Result<Vec<Node>> {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client.query(&self.inner.sql.broker.live_nodes, &[&ms]).await?;
        Ok(rows
            .iter()
            .map(|r| Node {
                node_id: r.get(0),
                host: r.get(1),
                port: r.get(2),
                rack: r.get(3),
            })
            .collect())
    }
}
