//! The queue SQL functions: sends of every body type and option, claims,
//! settlements, long polls, stats, grants, and every bad argument refused
//! with its SQLSTATE while nothing changes. Each test runs in a fresh
//! schema of a real PostgreSQL.

use std::time::Duration;

use pgbroker::sql_api::sqlstate;
use pgbroker::{Message, QueueConfig, QueueName};
use pgbroker_testkit::db::{assert_refused, bodies, sql_state_digest as snapshot, take, TestDb};
use tokio_postgres::Client;

/// Runs `sql`, which must fail with `code` and change nothing.
async fn refused(c: &Client, s: &str, sql: &str, code: &str) {
    assert_refused(c, s, sql, code).await;
}

async fn one_receipt(c: &Client, s: &str, queue: &str) -> (i64, String, Vec<u8>) {
    let row = c
        .query_one(&format!("SELECT id, receipt, body FROM {s}.receive($1)"), &[&queue])
        .await
        .expect("receive one");
    (row.get(0), row.get(1), row.get(2))
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
            &format!(
                "SELECT id, receipt, body, attempt FROM {s}.receive('jobs', max => 10,
                                                                    visibility_timeout => interval '30 s')"
            ),
            &[],
        )
        .await
        .expect("receive");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), id);
    assert_eq!(rows[0].get::<_, Vec<u8>>(2), b"resize 1.png");
    assert_eq!(rows[0].get::<_, i32>(3), 1);
    let receipt: String = rows[0].get(1);
    // The receipt is the library's own: it parses, and the library can use it.
    assert!(receipt.parse::<pgbroker::Receipt>().is_ok(), "{receipt}");
    c.execute(&format!("SELECT {s}.ack('jobs', $1::text)"), &[&receipt])
        .await
        .expect("ack");
    let stats = db
        .broker
        .queues()
        .stats(&QueueName::new("jobs").expect("name"))
        .await
        .expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
    refused(
        &c,
        s,
        &format!("SELECT {s}.ack('jobs', '{receipt}')"),
        sqlstate::STALE_RECEIPT,
    )
    .await;
}

#[tokio::test]
async fn bodies_headers_and_options_match_the_library() {
    let db = TestDb::new().await;
    let q = db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!(
        "SELECT {s}.send('jobs', 'text body', priority => 1, headers => '{{\"trace\": \"abc\", \"n\": null}}');
         SELECT {s}.send('jobs', '\\x00ff'::bytea, priority => 2);
         SELECT {s}.send('jobs', '{{\"a\": [1, 2]}}'::jsonb, priority => 3);
         SELECT {s}.send('jobs', 'later', delay => interval '1 hour');
         SELECT {s}.send('jobs', 'at', deliver_at => now() + interval '1 hour');
         SELECT {s}.send('jobs', 'g1', group_key => 'g');
         SELECT {s}.send('jobs', 'g2', group_key => 'g');"
    ))
    .await
    .expect("sends");
    let first: i64 = c
        .query_one(&format!("SELECT {s}.send('jobs', 'k1', dedup_key => 'k')"), &[])
        .await
        .expect("dedup send")
        .get(0);
    let again: i64 = c
        .query_one(&format!("SELECT {s}.send('jobs', 'k2', dedup_key => 'k')"), &[])
        .await
        .expect("duplicate send")
        .get(0);
    assert_eq!(first, again, "a duplicate returns the id holding the key");
    let batch = c
        .query(
            &format!(
                "SELECT id, duplicate FROM {s}.send_batch('jobs', ARRAY['b1', 'b2'], dedup_keys => ARRAY['k', 'x'])"
            ),
            &[],
        )
        .await
        .expect("batch");
    assert_eq!((batch[0].get::<_, i64>(0), batch[0].get::<_, bool>(1)), (first, true));
    assert!(!batch[1].get::<_, bool>(1));
    // The library receives what SQL sent: priorities first, delays held,
    // one per group, the duplicate dropped, headers decoded.
    let got = db.broker.queues().receive(&q, &take(20)).await.expect("receive");
    assert_eq!(
        bodies(&got),
        ["{\"a\": [1, 2]}", "\u{0}\u{fffd}", "text body", "g1", "k1", "b2"]
    );
    assert_eq!(got[1].body, [0u8, 255]);
    let h: Vec<(String, Option<Vec<u8>>)> = got[2]
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert_eq!(
        h,
        [("n".to_string(), None), ("trace".to_string(), Some(b"abc".to_vec()))]
    );
    assert_eq!(got[3].group.as_deref(), Some("g"));
    let stats = c
        .query_one(&format!("SELECT ready, in_flight, delayed FROM {s}.stats('jobs')"), &[])
        .await
        .expect("stats");
    assert_eq!(
        (stats.get::<_, i64>(0), stats.get::<_, i64>(1), stats.get::<_, i64>(2)),
        (1, 6, 2),
        "g2 waits behind g1; two delayed"
    );
    // SQL receives what the library sent, headers in the stored form.
    db.broker
        .queues()
        .send(&q, &Message::new("from lib").with_header("h", "v").with_priority(9))
        .await
        .expect("lib send");
    let row = c
        .query_one(&format!("SELECT body, headers, priority FROM {s}.receive('jobs')"), &[])
        .await
        .expect("sql receive");
    assert_eq!(row.get::<_, Vec<u8>>(0), b"from lib");
    assert_eq!(
        row.get::<_, serde_json::Value>(1),
        serde_json::json!([{"key": "h", "value": "dg=="}])
    );
    assert_eq!(row.get::<_, i32>(2), 9);
}

#[tokio::test]
async fn nack_extend_and_dead_letters_through_sql() {
    let db = TestDb::new().await;
    db.queue("dlq", QueueConfig::default()).await;
    db.queue(
        "work",
        QueueConfig {
            max_attempts: 2,
            dead_letter: Some(QueueName::new("dlq").expect("name")),
            ..QueueConfig::default()
        },
    )
    .await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!(
        "SELECT {s}.send('work', 'w', group_key => 'g', dedup_key => 'd')"
    ))
    .await
    .expect("send");
    let (id, r1, _) = one_receipt(&c, s, "work").await;
    let end: std::time::SystemTime = c
        .query_one(
            &format!("SELECT {s}.extend('work', $1::text, interval '1 hour')"),
            &[&r1],
        )
        .await
        .expect("extend")
        .get(0);
    assert!(end > std::time::SystemTime::now() + Duration::from_secs(1800));
    c.batch_execute(&format!(
        "SELECT {s}.nack('work', '{r1}', delay => interval '0 s', error => 'boom')"
    ))
    .await
    .expect("nack");
    refused(
        &c,
        s,
        &format!("SELECT {s}.extend('work', '{r1}', interval '1 s')"),
        sqlstate::STALE_RECEIPT,
    )
    .await;
    let row = c
        .query_one(
            &format!("SELECT id, receipt, attempt, last_error FROM {s}.receive('work')"),
            &[],
        )
        .await
        .expect("again");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(2)), (id, 2));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("boom"));
    let r2: String = row.get(1);
    // Out of attempts: the nack dead-letters it, group and key with it.
    c.batch_execute(&format!("SELECT {s}.nack('work', ARRAY['{r2}'], error => 'again')"))
        .await
        .expect("last nack");
    let row = c
        .query_one(
            &format!("SELECT id, dead_letter_source, dead_letter_attempts, last_error, group_key, dedup_key FROM {s}.receive('dlq')"),
            &[],
        )
        .await
        .expect("dead letter");
    assert_eq!(row.get::<_, i64>(0), id);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("work"));
    assert_eq!(row.get::<_, Option<i32>>(2), Some(2));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("again"));
    let stats = c
        .query_one(
            &format!("SELECT ready, in_flight, dead_lettered FROM {s}.stats('work')"),
            &[],
        )
        .await
        .expect("stats");
    assert_eq!(
        (stats.get::<_, i64>(0), stats.get::<_, i64>(1), stats.get::<_, i64>(2)),
        (0, 0, 1)
    );
    let groups: i64 = c
        .query_one(&format!("SELECT count(*) FROM {s}.queue_groups g JOIN {s}.queues q ON q.id = g.queue_id WHERE q.name = 'dlq' AND g.size = 1"), &[])
        .await
        .expect("groups")
        .get(0);
    assert_eq!(groups, 1, "the group moved with its message");
    // An expired lease out of attempts is dead-lettered by the next receive.
    c.batch_execute(&format!("SELECT {s}.send('work', 'x')"))
        .await
        .expect("send x");
    for _ in 0..2 {
        let n = c
            .query(
                &format!(
                    "SELECT 1 FROM {s}.receive('work', visibility_timeout => interval '1 ms', wait => interval '5 s')"
                ),
                &[],
            )
            .await
            .expect("short lease")
            .len();
        assert_eq!(n, 1);
        // Past the 1 ms lease before the next claim.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let empty = c
        .query(&format!("SELECT 1 FROM {s}.receive('work')"), &[])
        .await
        .expect("reaping receive");
    assert!(empty.is_empty());
    let row = c
        .query_one(&format!("SELECT body, last_error FROM {s}.receive('dlq')"), &[])
        .await
        .expect("reaped");
    assert_eq!(row.get::<_, Vec<u8>>(0), b"x");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("visibility timeout expired")
    );
}

#[tokio::test]
async fn receive_waits_for_a_send_and_for_a_delay() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = db.schema.clone();
    let sender = db.raw().await;
    let s2 = s.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender
            .batch_execute(&format!("SELECT {s2}.send('jobs', 'late')"))
            .await
            .expect("send");
    });
    let row = c
        .query_one(
            &format!("SELECT body FROM {s}.receive('jobs', wait => interval '60 s')"),
            &[],
        )
        .await
        .expect("wait for send");
    assert_eq!(row.get::<_, Vec<u8>>(0), b"late");
    send.await.expect("sender");
    // Inside one transaction the wait still sees time pass: a delayed
    // message comes due during the call.
    c.batch_execute(&format!(
        "SELECT {s}.send('jobs', 'delayed', delay => interval '300 ms')"
    ))
    .await
    .expect("send delayed");
    c.batch_execute("BEGIN").await.expect("begin");
    let rows = c
        .query(
            &format!("SELECT body FROM {s}.receive('jobs', wait => interval '60 s')"),
            &[],
        )
        .await
        .expect("wait for delay");
    c.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(bodies_of(&rows), ["delayed"]);
}

fn bodies_of(rows: &[tokio_postgres::Row]) -> Vec<String> {
    rows.iter()
        .map(|r| String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)).into_owned())
        .collect()
}

#[tokio::test]
async fn a_settlement_in_a_rolled_back_transaction_changes_nothing() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!(
        "SELECT {s}.send('jobs', 'a', group_key => 'g'); SELECT {s}.send('jobs', 'b', group_key => 'g')"
    ))
    .await
    .expect("send");
    let (_, r, _) = one_receipt(&c, s, "jobs").await;
    let before = snapshot(&c, s).await;
    c.batch_execute(&format!("BEGIN; SELECT {s}.ack('jobs', '{r}'); ROLLBACK"))
        .await
        .expect("ack rolled back");
    assert_eq!(snapshot(&c, s).await, before);
    c.batch_execute(&format!("SELECT {s}.ack('jobs', '{r}')"))
        .await
        .expect("ack");
    let (_, _, body) = one_receipt(&c, s, "jobs").await;
    assert_eq!(body, b"b", "the group's next message became its head");
}

#[tokio::test]
async fn stats_show_when_maintenance_is_overdue() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = &db.schema;
    db.broker.maintenance().maintain_queues().await.expect("maintain");
    assert_eq!(overdue(&c, s).await, (false, false), "a pass just ran");
    // The row lock taken by the update keeps background passes of the
    // test's broker from marking a new pass until the check is done.
    for (set, want) in [("NULL", (true, true)), ("now() - interval '1 hour'", (false, true))] {
        c.batch_execute(&format!("BEGIN; UPDATE {s}.queue_rotation SET maintained_at = {set}"))
            .await
            .expect("set");
        assert_eq!(overdue(&c, s).await, want, "maintained_at = {set}");
        c.batch_execute("ROLLBACK").await.expect("rollback");
    }
}

async fn overdue(c: &Client, s: &str) -> (bool, bool) {
    let sql = format!("SELECT maintained_at IS NULL, maintenance_overdue FROM {s}.stats('jobs')");
    let row = c.query_one(&sql, &[]).await.expect("stats");
    (row.get::<_, bool>(0), row.get::<_, bool>(1))
}

#[tokio::test]
async fn migrate_replaces_outdated_functions_but_not_newer_ones() {
    let db = TestDb::new().await;
    let c = db.raw().await;
    let s = &db.schema;
    let has_stats = format!("SELECT to_regprocedure('{s}.stats(text)') IS NOT NULL");
    // Another text of this version (an upgrade within it): replaced.
    c.batch_execute(&format!(
        "DROP FUNCTION {s}.stats(text); UPDATE {s}.sql_functions SET digest = 'older'"
    ))
    .await
    .expect("outdate");
    db.broker.migrate().await.expect("migrate");
    assert!(c.query_one(&has_stats, &[]).await.expect("check").get::<_, bool>(0));
    // Unchanged: left alone.
    c.batch_execute(&format!("DROP FUNCTION {s}.stats(text)"))
        .await
        .expect("drop");
    db.broker.migrate().await.expect("migrate");
    assert!(!c.query_one(&has_stats, &[]).await.expect("check").get::<_, bool>(0));
    // Installed by a newer build: an older build does not undo it.
    c.batch_execute(&format!(
        "UPDATE {s}.sql_functions SET version = version + 1, digest = 'newer'"
    ))
    .await
    .expect("newer");
    db.broker.migrate().await.expect("migrate");
    assert!(!c.query_one(&has_stats, &[]).await.expect("check").get::<_, bool>(0));
}

#[tokio::test]
async fn every_definer_function_pins_its_path_and_generic_plans_and_jit_is_off_where_limits_are_parameters() {
    let db = TestDb::new().await;
    let c = db.raw().await;
    let rows = c
        .query(
            "SELECT p.proname, coalesce(p.proconfig, '{}') FROM pg_proc p
             WHERE p.pronamespace = $1::text::regnamespace AND p.prosecdef ORDER BY 1",
            &[&db.schema],
        )
        .await
        .expect("functions");
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for api in ["send", "receive", "take", "ack", "produce"] {
        assert!(names.iter().any(|n| n == api), "{api} runs as its owner: {names:?}");
    }
    // The per-message functions whose statements have no `LIMIT $n` (so
    // a small generic estimate) skip the JIT setting; every other one has it.
    let lean = ["send", "take"];
    let mut lean_seen = 0;
    for r in &rows {
        let (name, config): (String, Vec<String>) = (r.get(0), r.get(1));
        assert!(
            config.iter().any(|c| c == "plan_cache_mode=force_generic_plan"),
            "{name}: {config:?}"
        );
        let jit_off = config.iter().any(|c| c == "jit=off");
        if lean.contains(&name.as_str()) && !jit_off {
            lean_seen += 1;
        } else {
            assert!(jit_off, "{name}: {config:?}");
        }
        assert!(
            config.iter().any(|c| c.starts_with("search_path=")),
            "{name}: {config:?}"
        );
    }
    // send(bytea) and take; the text and jsonb sends are plain SQL wrappers.
    assert_eq!(lean_seen, 2, "{names:?}");
}
