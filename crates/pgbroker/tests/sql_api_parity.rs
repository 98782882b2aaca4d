//! One scenario run twice, once through the library and once through the
//! SQL functions, on twin queues of one schema: every answer, refusal and
//! final state must be the same. This is what keeps the settlement the
//! functions write in PL/pgSQL (groups, keys, dead letters, expired
//! leases) from drifting from the library's. Runs in a fresh schema of a
//! real PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use pgbroker::queues::{NackOptions, ReceiveOptions};
use pgbroker::{Broker, Error, Message, QueueConfig, QueueName, Receipt};
use pgbroker_testkit::db::TestDb;
use tokio_postgres::Client;

/// How the scenario reaches the queues.
enum Via<'a> {
    Library(&'a Broker),
    Sql(&'a Client, &'a str),
}

/// A received message, as both paths report it.
#[derive(Debug)]
struct Got {
    id: i64,
    receipt: String,
    body: String,
    attempt: i32,
    group: Option<String>,
    last_error: Option<String>,
    source: Option<String>,
    dead_attempts: Option<i32>,
}

fn qn(name: &str) -> QueueName {
    QueueName::new(name).expect("queue name")
}

/// A refusal's kind, the same words for both paths.
fn lib_kind(e: &Error) -> String {
    match e {
        Error::StaleReceipt { .. } => "stale".into(),
        other => format!("other: {other}"),
    }
}

fn sql_kind(e: &tokio_postgres::Error) -> String {
    match e.code().map(|c| c.code()) {
        Some(pgbroker::sql_api::sqlstate::STALE_RECEIPT) => "stale".into(),
        _ => format!("other: {e}"),
    }
}

impl Via<'_> {
    async fn send(&self, q: &str, body: &str, priority: u8, group: Option<&str>, dedup: Option<&str>) -> (i64, bool) {
        match self {
            Via::Library(b) => {
                let mut m = Message::new(body).with_priority(priority);
                m.group = group.map(str::to_string);
                m.dedup_key = dedup.map(str::to_string);
                let sent = b.queues().send(&qn(q), &m).await.expect("send");
                (sent.id, sent.duplicate)
            }
            // A plain message takes the single form, as a worker's
            // producer calls it; the others a batch of one.
            Via::Sql(c, s) if group.is_none() && dedup.is_none() => {
                let row = c
                    .query_one(
                        &format!("SELECT {s}.send($1, $2::text, priority => $3)"),
                        &[&q, &body, &i32::from(priority)],
                    )
                    .await
                    .expect("send");
                (row.get(0), false)
            }
            Via::Sql(c, s) => {
                let row = c
                    .query_one(
                        &format!(
                            "SELECT id, duplicate FROM {s}.send_batch($1, ARRAY[$2::text], priority => $3,
                                                                   group_keys => ARRAY[$4::text], dedup_keys => ARRAY[$5::text])"
                        ),
                        &[&q, &body, &i32::from(priority), &group, &dedup],
                    )
                    .await
                    .expect("send");
                (row.get(0), row.get(1))
            }
        }
    }

    async fn receive(&self, q: &str, max: usize, lease: Option<Duration>) -> Vec<Got> {
        match self {
            Via::Library(b) => {
                let opts = ReceiveOptions {
                    max_messages: max,
                    visibility_timeout: lease,
                    ..ReceiveOptions::default()
                };
                let got = b.queues().receive(&qn(q), &opts).await.expect("receive");
                got.into_iter()
                    .map(|m| Got {
                        id: m.id,
                        receipt: m.receipt.to_string(),
                        body: String::from_utf8_lossy(&m.body).into_owned(),
                        attempt: m.attempt,
                        group: m.group,
                        last_error: m.last_error,
                        source: m.dead_letter_source.map(|q| q.to_string()),
                        dead_attempts: m.dead_letter_attempts,
                    })
                    .collect()
            }
            Via::Sql(c, s) => {
                let lease = lease.map(|d| format!("{} milliseconds", d.as_millis()));
                let rows = c
                    .query(
                        &format!(
                            "SELECT id, receipt, convert_from(body, 'UTF8'), attempt, group_key, last_error,
                                    dead_letter_source, dead_letter_attempts
                             FROM {s}.receive($1, max => $2, visibility_timeout => $3::text::interval)"
                        ),
                        &[&q, &i32::try_from(max).expect("small"), &lease],
                    )
                    .await
                    .expect("receive");
                rows.iter()
                    .map(|r| Got {
                        id: r.get(0),
                        receipt: r.get(1),
                        body: r.get(2),
                        attempt: r.get(3),
                        group: r.get(4),
                        last_error: r.get(5),
                        source: r.get(6),
                        dead_attempts: r.get(7),
                    })
                    .collect()
            }
        }
    }

    async fn ack(&self, q: &str, receipts: &[&str]) -> Result<(), String> {
        match self {
            Via::Library(b) => {
                let rs: Vec<Receipt> = receipts.iter().map(|r| r.parse().expect("receipt")).collect();
                b.queues().ack(&qn(q), &rs).await.map_err(|e| lib_kind(&e))
            }
            Via::Sql(c, s) => match receipts {
                [one] => c.execute(&format!("SELECT {s}.ack($1, $2::text)"), &[&q, one]).await,
                _ => {
                    c.execute(&format!("SELECT {s}.ack($1, $2::text[])"), &[&q, &receipts])
                        .await
                }
            }
            .map(drop)
            .map_err(|e| sql_kind(&e)),
        }
    }

    async fn nack(
        &self,
        q: &str,
        receipts: &[&str],
        delay: Option<Duration>,
        error: Option<&str>,
    ) -> Result<(), String> {
        match self {
            Via::Library(b) => {
                let rs: Vec<Receipt> = receipts.iter().map(|r| r.parse().expect("receipt")).collect();
                let o = NackOptions {
                    delay,
                    error: error.map(str::to_string),
                };
                b.queues().nack(&qn(q), &rs, &o).await.map_err(|e| lib_kind(&e))
            }
            Via::Sql(c, s) => {
                let delay = delay.map(|d| format!("{} milliseconds", d.as_millis()));
                c.execute(
                    &format!("SELECT {s}.nack($1, $2::text[], delay => $3::text::interval, error => $4)"),
                    &[&q, &receipts, &delay, &error],
                )
                .await
                .map(drop)
                .map_err(|e| sql_kind(&e))
            }
        }
    }

    async fn stats(&self, q: &str) -> (i64, i64, i64, i64) {
        match self {
            Via::Library(b) => {
                let s = b.queues().stats(&qn(q)).await.expect("stats");
                (s.ready, s.in_flight, s.delayed, s.dead_lettered)
            }
            Via::Sql(c, s) => {
                let r = c
                    .query_one(
                        &format!("SELECT ready, in_flight, delayed, dead_lettered FROM {s}.stats($1)"),
                        &[&q],
                    )
                    .await
                    .expect("stats");
                (r.get(0), r.get(1), r.get(2), r.get(3))
            }
        }
    }
}

/// The scenario, on queues named `{p}work`, `{p}dlq` and `{p}exp`. Returns
/// its transcript, with ids replaced by bodies and the prefix removed.
async fn scenario(v: &Via<'_>, p: &str) -> Vec<String> {
    let (work, dlq, exp) = (format!("{p}work"), format!("{p}dlq"), format!("{p}exp"));
    let mut log = Vec::new();
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut receipts: HashMap<String, String> = HashMap::new();
    let sends: [(&str, u8, Option<&str>, Option<&str>); 9] = [
        ("a1", 0, Some("A"), None),
        ("a2", 0, Some("A"), None),
        ("a3", 0, Some("A"), None),
        ("b1", 5, Some("B"), None),
        ("p9", 9, None, None),
        ("p0", 0, None, None),
        ("d1", 0, None, Some("k")),
        ("d2", 0, None, Some("k")),
        ("c1", 0, Some("C"), Some("kc")),
    ];
    for (body, prio, group, key) in sends {
        let (id, dup) = v.send(&work, body, prio, group, key).await;
        names.entry(id).or_insert_with(|| body.to_string());
        log.push(format!("send {body}: {} duplicate={dup}", names[&id]));
    }
    log.push(format!("stats {:?}", v.stats(&work).await));
    show(&names, p, &mut log, &mut receipts, v.receive(&work, 3, None).await);
    show(&names, p, &mut log, &mut receipts, v.receive(&work, 10, None).await);
    log.push(format!("stats {:?}", v.stats(&work).await));
    log.push(format!("ack a1 {:?}", v.ack(&work, &[&receipts["a1"].clone()]).await));
    log.push(format!(
        "ack a1 again {:?}",
        v.ack(&work, &[&receipts["a1"].clone()]).await
    ));
    log.push(format!(
        "ack p0 and a1 {:?}",
        v.ack(&work, &[&receipts["p0"].clone(), &receipts["a1"].clone()]).await
    ));
    log.push(format!(
        "nack b1 {:?}",
        v.nack(&work, &[&receipts["b1"].clone()], Some(Duration::ZERO), Some("e1"))
            .await
    ));
    show(&names, p, &mut log, &mut receipts, v.receive(&work, 10, None).await);
    log.push(format!(
        "nack b1 last {:?}",
        v.nack(&work, &[&receipts["b1"].clone()], None, Some("e2")).await
    ));
    log.push(format!("stats {:?} {:?}", v.stats(&work).await, v.stats(&dlq).await));
    show(&names, p, &mut log, &mut receipts, v.receive(&dlq, 10, None).await);
    log.push(format!(
        "ack b1 in dlq {:?}",
        v.ack(&dlq, &[&receipts["b1"].clone()]).await
    ));
    log.push(format!(
        "nack c1 {:?}",
        v.nack(&work, &[&receipts["c1"].clone()], None, None).await
    ));
    log.push(format!(
        "ack d1 p0 p9 {:?}",
        v.ack(
            &work,
            &[
                &receipts["d1"].clone(),
                &receipts["p0"].clone(),
                &receipts["p9"].clone()
            ]
        )
        .await
    ));
    show(&names, p, &mut log, &mut receipts, v.receive(&work, 10, None).await);
    log.push(format!("stats {:?}", v.stats(&work).await));
    // A lease that expires with no attempt left: dead in place.
    let (id, _) = v.send(&exp, "e", 0, Some("E"), Some("ke")).await;
    names.insert(id, "e".into());
    show(
        &names,
        p,
        &mut log,
        &mut receipts,
        v.receive(&exp, 1, Some(Duration::from_millis(1))).await,
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    show(&names, p, &mut log, &mut receipts, v.receive(&exp, 1, None).await);
    log.push(format!("stats {:?}", v.stats(&exp).await));
    log
}

/// Logs received messages and keeps their receipts by body.
fn show(
    names: &HashMap<i64, String>,
    p: &str,
    log: &mut Vec<String>,
    receipts: &mut HashMap<String, String>,
    got: Vec<Got>,
) {
    for g in got {
        let source = g.source.map(|s| s.trim_start_matches(p).to_string());
        log.push(format!(
            "got {} ({}) attempt {} group {:?} error {:?} from {source:?} after {:?}",
            g.body,
            names.get(&g.id).map_or("?", String::as_str),
            g.attempt,
            g.group,
            g.last_error,
            g.dead_attempts
        ));
        receipts.insert(g.body, g.receipt);
    }
}

/// What the scenario left in the tables, for queues named with prefix `p`.
async fn contents(c: &Client, s: &str, p: &str) -> Vec<String> {
    let rows = c
        .query(
            &format!(
                "SELECT concat_ws(' ', substr(queue, $2), convert_from(body, 'UTF8'), state, priority, group_key,
                                  dedup_key, attempts, last_error, substr(dead_letter_source, $2), dead_attempts)
                 FROM {s}.queue_contents WHERE queue LIKE $1
                 UNION ALL
                 SELECT concat_ws(' ', 'group', substr(q.name, $2), g.group_key, g.size)
                 FROM {s}.queue_groups g JOIN {s}.queues q ON q.id = g.queue_id WHERE q.name LIKE $1
                 UNION ALL
                 SELECT concat_ws(' ', 'key', substr(q.name, $2), d.dedup_key, convert_from(m.body, 'UTF8'))
                 FROM {s}.queue_dedup d JOIN {s}.queues q ON q.id = d.queue_id
                 JOIN {s}.queue_messages m ON m.id = d.message_id WHERE q.name LIKE $1
                 ORDER BY 1"
            ),
            &[&format!("{p}%"), &(i32::try_from(p.len()).expect("short") + 1)],
        )
        .await
        .expect("contents");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn the_library_and_the_sql_functions_give_the_same_outcomes() {
    let db = TestDb::new().await;
    for p in ["lib_", "sql_"] {
        db.queue(&format!("{p}dlq"), QueueConfig::default()).await;
        db.queue(
            &format!("{p}work"),
            QueueConfig {
                max_attempts: 2,
                dead_letter: Some(qn(&format!("{p}dlq"))),
                // Long enough that a backoff is still running when the
                // other path's twin is compared with it.
                backoff_base: Duration::from_secs(3600),
                backoff_max: Duration::from_secs(7200),
                ..QueueConfig::default()
            },
        )
        .await;
        db.queue(
            &format!("{p}exp"),
            QueueConfig {
                max_attempts: 1,
                ..QueueConfig::default()
            },
        )
        .await;
    }
    let c = db.raw().await;
    let lib = scenario(&Via::Library(&db.broker), "lib_").await;
    let sql = scenario(&Via::Sql(&c, &db.schema), "sql_").await;
    for (i, (a, b)) in lib.iter().zip(&sql).enumerate() {
        assert_eq!(a, b, "step {i} differs");
    }
    assert_eq!(lib.len(), sql.len());
    // The scenario did what it is meant to exercise.
    assert!(
        lib.iter().any(|l| l.starts_with("ack a1 again Err(\"stale\")")),
        "{lib:#?}"
    );
    assert!(
        lib.iter()
            .any(|l| l.contains("got b1 (b1) attempt 1 group Some(\"B\") error Some(\"e2\") from Some(\"work\")")),
        "{lib:#?}"
    );
    assert_eq!(
        contents(&c, &db.schema, "lib_").await,
        contents(&c, &db.schema, "sql_").await
    );
    assert!(!contents(&c, &db.schema, "lib_").await.is_empty());
}
