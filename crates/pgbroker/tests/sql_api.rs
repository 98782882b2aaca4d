//! The SQL functions: sends, claims, settlements and produce through plain
//! SQL, each bad argument refused with its SQLSTATE and nothing changed,
//! and the same scenarios through the library and the functions giving the
//! same outcome. Each test runs in a fresh schema of a real PostgreSQL.

mod common;

use common::TestDb;
use pgbroker::sql_api::sqlstate;
use pgbroker::QueueConfig;

/// The SQLSTATE of a failed call.
fn state(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test]
async fn send_receive_ack_through_sql() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = &db.schema;
    let id: i64 = c
        .query_one(&format!("SELECT {s}.send('jobs', 'resize 1.png')"), &[])
        .await
        .expect("send")
        .get(0);
    let rows = c
        .query(
            &format!("SELECT id, receipt, body FROM {s}.receive('jobs', max => 10, visibility_timeout => interval '30 s')"),
            &[],
        )
        .await
        .expect("receive");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), id);
    assert_eq!(rows[0].get::<_, Vec<u8>>(2), b"resize 1.png");
    let receipt: String = rows[0].get(1);
    c.execute(&format!("SELECT {s}.ack('jobs', $1::text)"), &[&receipt])
        .await
        .expect("ack");
    let e = c
        .execute(&format!("SELECT {s}.ack('jobs', $1::text)"), &[&receipt])
        .await
        .expect_err("stale");
    assert_eq!(state(&e), sqlstate::STALE_RECEIPT);
}
