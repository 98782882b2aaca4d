//! The node registry: a broker restarted at the same address keeps its
//! node id, whether it was killed or stopped cleanly.

use std::time::Duration;

use pgbroker::cluster::SecurityProtocol;
use pgbroker_testkit::db::TestDb;

const TTL: Duration = Duration::from_secs(10);
const PLAINTEXT: SecurityProtocol = SecurityProtocol::Plaintext;

fn ids(nodes: &[pgbroker::cluster::Node]) -> Vec<i32> {
    nodes.iter().map(|n| n.node_id).collect()
}

#[tokio::test]
async fn a_restarted_broker_keeps_its_node_id() {
    let db = TestDb::new().await;
    let cluster = db.broker.cluster();
    let first = cluster
        .register("127.0.0.1", 9092, None, PLAINTEXT)
        .await
        .expect("register");
    let other = cluster
        .register("127.0.0.1", 9093, None, PLAINTEXT)
        .await
        .expect("register");
    assert_ne!(first, other, "another address is another node");

    // Killed: nothing deregistered; the next start at the address takes the id over.
    let again = cluster
        .register("127.0.0.1", 9092, None, PLAINTEXT)
        .await
        .expect("register");
    assert_eq!(again, first);
    assert_eq!(ids(&cluster.live_nodes(TTL).await.expect("live")), vec![first, other]);

    // Stopped cleanly: no longer live, and the id comes back with the next start.
    cluster.deregister(first).await.expect("deregister");
    assert_eq!(ids(&cluster.live_nodes(TTL).await.expect("live")), vec![other]);
    let third = cluster
        .register("127.0.0.1", 9092, Some("r1"), PLAINTEXT)
        .await
        .expect("register");
    assert_eq!(third, first);
    let live = cluster.live_nodes(TTL).await.expect("live");
    assert_eq!(ids(&live), vec![first, other]);
    assert_eq!(live[0].rack.as_deref(), Some("r1"));
}

#[tokio::test]
async fn older_rows_of_the_same_address_are_merged_into_one() {
    let db = TestDb::new().await;
    let raw = db.raw().await;
    // Rows as earlier versions left them: a new id per restart.
    let table = format!("{}.kafka_nodes", db.schema);
    for _ in 0..3 {
        raw.execute(&format!("INSERT INTO {table} (host, port) VALUES ('h', 1)"), &[])
            .await
            .expect("insert");
    }
    let lowest: i32 = raw
        .query_one(&format!("SELECT min(node_id) FROM {table}"), &[])
        .await
        .expect("min")
        .get(0);
    let id = db
        .broker
        .cluster()
        .register("h", 1, None, PLAINTEXT)
        .await
        .expect("register");
    assert_eq!(id, lowest);
    let live = db.broker.cluster().live_nodes(TTL).await.expect("live");
    assert_eq!(ids(&live), vec![lowest]);
}

#[tokio::test]
async fn each_node_keeps_the_security_of_its_last_start() {
    let db = TestDb::new().await;
    let cluster = db.broker.cluster();
    let plain = cluster.register("h", 1, None, PLAINTEXT).await.expect("register");
    let sasl = cluster
        .register("h", 2, None, SecurityProtocol::SaslSsl)
        .await
        .expect("register");
    let live = cluster.live_nodes(TTL).await.expect("live");
    let of = |id| live.iter().find(|n| n.node_id == id).map(|n| n.listener);
    assert_eq!(of(plain), Some(PLAINTEXT));
    assert_eq!(of(sasl), Some(SecurityProtocol::SaslSsl));

    // Restarted at the same address with TLS: same node, new protocol.
    let again = cluster
        .register("h", 1, None, SecurityProtocol::Ssl)
        .await
        .expect("register");
    assert_eq!(again, plain);
    let live = cluster.live_nodes(TTL).await.expect("live");
    assert_eq!(live[0].listener, SecurityProtocol::Ssl);
    for name in ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] {
        assert_eq!(SecurityProtocol::parse(name).map(|p| p.as_str()), Some(name));
    }
    assert_eq!(SecurityProtocol::parse("plaintext"), None);
}
