//! Who may use the console: loopback only without users, logins checked
//! against the stored SCRAM credentials, cookies, CSRF on every change,
//! and ACLs deciding what each user sees and changes. Against the real
//! PostgreSQL of the test kit.

mod common;

use axum::http::StatusCode;
use common::{console, Client};
use pgbroker::auth::{Acl, AclResource, Permission};
use pgbroker_console::ConsoleConfig;
use pgbroker_testkit::db::{partitions, TestDb};

#[tokio::test]
async fn without_users_only_loopback_clients_are_served() {
    let db = TestDb::new().await;
    let app = console(&db, ConsoleConfig::default()).await;

    let remote = Client::remote(&app).get("/api/session").await;
    assert_eq!(remote.status, StatusCode::FORBIDDEN);
    assert!(remote.body["error"].as_str().expect("error").contains("loopback"));
    assert!(remote.set_cookie.is_none());

    // A loopback peer asking for a name that is not loopback (DNS
    // rebinding) is refused too.
    let mut rebound = Client::loopback(&app);
    rebound.host = "attacker.example".into();
    assert_eq!(rebound.get("/api/session").await.status, StatusCode::FORBIDDEN);

    let mut local = Client::loopback(&app);
    let s = local.get("/api/session").await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["open"], true);
    let cookie = s.set_cookie.clone().expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    local.keep(&s);
    assert_eq!(local.get("/api/topics").await.status, StatusCode::OK);

    // Once a user exists, the open session is over.
    db.broker
        .auth()
        .add_user("alice", "secret-pw", 4096)
        .await
        .expect("user");
    assert_eq!(local.get("/api/topics").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        Client::loopback(&app).get("/api/session").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_checks_the_password_and_sets_a_strict_cookie() {
    let db = TestDb::new().await;
    db.broker
        .auth()
        .add_user("alice", "secret-pw", 4096)
        .await
        .expect("user");
    let app = console(
        &db,
        ConsoleConfig {
            tls: true,
            ..ConsoleConfig::default()
        },
    )
    .await;
    let c = Client::remote(&app);
    assert_eq!(c.get("/api/topics").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.get("/api/session").await.status, StatusCode::UNAUTHORIZED);
    for (user, password) in [
        ("alice", "wrong"),
        ("nobody", "secret-pw"),
        ("<script>", "x"),
        ("alice", ""),
    ] {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        let a = c.post("/api/login", &body).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{user}/{password}");
        assert!(a.set_cookie.is_none());
    }
    let bad = c.post("/api/login", "{\"user\": 1}").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let plain = c.send("POST", "/api/login", None, false).await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let mut c = Client::remote(&app);
    let a = c
        .post("/api/login", r#"{"user": "alice", "password": "secret-pw"}"#)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let cookie = a.set_cookie.clone().expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Secure"),
        "{cookie}"
    );
    c.keep(&a);
    let s = c.get("/api/session").await;
    assert_eq!(s.body["user"], "alice");
    assert_eq!(s.body["open"], false);

    let out = c.post("/api/logout", "{}").await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(c.get("/api/topics").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_change_needs_the_csrf_token() {
    let db = TestDb::new().await;
    db.broker
        .auth()
        .add_user("alice", "secret-pw", 4096)
        .await
        .expect("user");
    let app = console(
        &db,
        ConsoleConfig {
            super_users: vec!["alice".into()],
            ..ConsoleConfig::default()
        },
    )
    .await;
    let mut c = Client::remote(&app);
    c.login("alice", "secret-pw").await;
    let t = db.topic("kept", partitions(1)).await;
    let q = db.queue("jobs", pgbroker::QueueConfig::default()).await;
    db.broker
        .queues()
        .send(&q, &pgbroker::Message::new("m"))
        .await
        .expect("send");

    let changes = [
        ("/api/topics", r#"{"name": "made"}"#.to_string()),
        ("/api/topics/kept/delete", r#"{"confirm": "kept"}"#.to_string()),
        ("/api/topics/kept/partitions", r#"{"additional": 1}"#.to_string()),
        ("/api/topics/kept/messages", r#"{"value": "x"}"#.to_string()),
        ("/api/queues/jobs/purge", r#"{"confirm": "jobs"}"#.to_string()),
        ("/api/queues/jobs/redrive", "{}".to_string()),
        (
            "/api/groups/g/reset",
            r#"{"topic": "kept", "to": "earliest"}"#.to_string(),
        ),
        ("/api/logout", "{}".to_string()),
    ];
    let real = c.csrf.clone();
    for token in [None, Some("wrong".to_string()), Some(String::new())] {
        c.csrf = token;
        for (path, body) in &changes {
            let a = c.send("POST", path, Some(body), c.csrf.is_some()).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{path} with {:?}", c.csrf);
            assert!(a.body["error"].as_str().expect("error").contains("CSRF"));
        }
    }
    // Nothing changed.
    let d = db.broker.topics().describe(&t).await.expect("topic");
    assert_eq!(d.partition_states.len(), 1);
    assert_eq!(d.partition_states[0].high_watermark, 0);
    assert!(db
        .broker
        .topics()
        .list()
        .await
        .expect("list")
        .iter()
        .all(|x| x.name.as_str() != "made"));
    assert_eq!(db.broker.queues().stats(&q).await.expect("stats").ready, 1);

    c.csrf = real;
    assert_eq!(
        c.post("/api/topics", r#"{"name": "made"}"#).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn acls_decide_what_a_user_sees_and_changes() {
    let db = TestDb::new().await;
    let auth = db.broker.auth();
    auth.add_user("bob", "bob-password", 4096).await.expect("user");
    let grant = |p, r| Acl::new("bob", p, r).expect("acl");
    auth.grant(&grant(Permission::Consume, AclResource::topic("mine").expect("r")))
        .await
        .expect("grant");
    auth.grant(&grant(Permission::Consume, AclResource::queue("work").expect("r")))
        .await
        .expect("grant");
    db.topic("mine", partitions(1)).await;
    db.topic("theirs", partitions(1)).await;
    db.queue("work", pgbroker::QueueConfig::default()).await;
    db.queue("other", pgbroker::QueueConfig::default()).await;
    let app = console(&db, ConsoleConfig::default()).await;
    let mut c = Client::remote(&app);
    c.login("bob", "bob-password").await;

    let topics = c.get("/api/topics").await.body;
    let names: Vec<_> = topics["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["mine"]);
    assert_eq!(c.get("/api/topics/mine/messages").await.status, StatusCode::OK);
    assert_eq!(c.get("/api/topics/theirs").await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/api/topics/theirs/messages").await.status, StatusCode::FORBIDDEN);
    // Consume is not produce, and not admin.
    assert_eq!(
        c.post("/api/topics/mine/messages", r#"{"value": "x"}"#).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.post("/api/topics", r#"{"name": "new-one"}"#).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.post("/api/topics/mine/delete", r#"{"confirm": "mine"}"#).await.status,
        StatusCode::FORBIDDEN
    );
    let queues = c.get("/api/queues").await.body;
    assert_eq!(queues["queues"].as_array().expect("queues").len(), 1);
    assert_eq!(
        c.get("/api/queues/work/messages?state=ready").await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.get("/api/queues/other/messages?state=ready").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.post("/api/queues/work/purge", r#"{"confirm": "work"}"#).await.status,
        StatusCode::FORBIDDEN
    );
    // Users see only themselves.
    let users = c.get("/api/users").await.body;
    assert_eq!(users["users"].as_array().expect("users").len(), 1);
    assert_eq!(users["acls"].as_array().expect("acls").len(), 2);
    assert!(db.broker.topics().list().await.expect("list").len() == 2);
}
