//! The schema guard: dropped with the test when it passes, kept when it
//! fails, and dropped even past a connection that still holds a lock in it.

use pgbroker_testkit::{database_url, TestSchema};
use tokio_postgres::{Client, NoTls};

async fn connect() -> Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn create(client: &Client, schema: &str) {
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (x int)"))
        .await
        .expect("create schema");
}

async fn exists(client: &Client, schema: &str) -> bool {
    client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .expect("query")
        .get::<_, i64>(0)
        == 1
}

#[tokio::test]
async fn a_passing_test_drops_its_schema() {
    let client = connect().await;
    let guard = TestSchema::new("kit");
    let name = guard.name().to_string();
    create(&client, &name).await;
    assert!(exists(&client, &name).await);
    drop(guard);
    assert!(!exists(&client, &name).await, "{name} dropped");
}

#[tokio::test]
async fn a_failing_test_keeps_its_schema() {
    let client = connect().await;
    let guard = TestSchema::new("kit");
    let name = guard.name().to_string();
    create(&client, &name).await;
    let failed = std::thread::spawn(move || {
        let _guard = guard;
        panic!("the test fails");
    })
    .join();
    assert!(failed.is_err());
    assert!(exists(&client, &name).await, "{name} kept");
    client
        .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn a_lock_left_behind_does_not_stop_the_drop() {
    let client = connect().await;
    let guard = TestSchema::new("kit");
    let name = guard.name().to_string();
    create(&client, &name).await;
    let holder = connect().await;
    holder
        .batch_execute(&format!("BEGIN; LOCK TABLE {name}.t IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("lock");
    drop(guard);
    assert!(!exists(&client, &name).await, "{name} dropped");
    assert!(holder.is_closed() || holder.batch_execute("SELECT 1").await.is_err());
}
