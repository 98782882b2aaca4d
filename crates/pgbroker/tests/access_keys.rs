//! Access keys: made for an existing user, listed without secrets, looked
//! up by id, deleted one by one, and gone with their user; bad input
//! changes nothing.

use pgbroker::Error;
use pgbroker_testkit::db::TestDb;

#[tokio::test]
async fn create_list_lookup_delete() {
    let db = TestDb::new().await;
    let b = &db.broker;
    b.auth().add_user("alice", "pw-alice", 4096).await.expect("alice");
    b.auth().add_user("bob", "pw-bob", 4096).await.expect("bob");

    let k1 = b.auth().create_access_key("alice").await.expect("key 1");
    let k2 = b.auth().create_access_key("alice").await.expect("key 2");
    let kb = b.auth().create_access_key("bob").await.expect("bob's key");
    assert_eq!(k1.user, "alice");
    assert_ne!(k1.access_key_id, k2.access_key_id);
    assert_ne!(k1.secret_access_key, k2.secret_access_key);
    assert_eq!(k1.access_key_id.len(), 20);
    assert_eq!(k1.secret_access_key.len(), 40);

    let listed = b.auth().list_access_keys("alice").await.expect("list");
    let mut ids: Vec<_> = listed.iter().map(|k| k.access_key_id.clone()).collect();
    ids.sort();
    let mut want = vec![k1.access_key_id.clone(), k2.access_key_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(listed.iter().all(|k| k.user == "alice" && k.last_used_ms.is_none()));
    let json = serde_json::to_string(&listed).expect("json");
    assert!(!json.contains(&k1.secret_access_key), "a listing never shows a secret");

    let found = b
        .auth()
        .access_key_secret(&k1.access_key_id)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (found.user.as_str(), found.secret.as_str()),
        ("alice", k1.secret_access_key.as_str())
    );
    assert!(b
        .auth()
        .access_key_secret("PGBKNOSUCHKEY0000000")
        .await
        .expect("lookup")
        .is_none());
    assert!(b
        .auth()
        .access_key_secret("not a key id")
        .await
        .expect("lookup")
        .is_none());

    b.auth().touch_access_key(&k1.access_key_id).await.expect("touch");
    let listed = b.auth().list_access_keys("alice").await.expect("list");
    let used = listed.iter().find(|k| k.access_key_id == k1.access_key_id).expect("k1");
    assert!(used.last_used_ms.is_some());

    assert!(b.auth().delete_access_key(&k1.access_key_id).await.expect("delete"));
    assert!(
        !b.auth().delete_access_key(&k1.access_key_id).await.expect("again"),
        "already gone"
    );
    assert!(b
        .auth()
        .access_key_secret(&k1.access_key_id)
        .await
        .expect("lookup")
        .is_none());
    assert_eq!(b.auth().list_access_keys("alice").await.expect("list").len(), 1);

    // A removed user's keys go with it.
    b.auth().remove_user("bob").await.expect("remove bob");
    assert!(b
        .auth()
        .access_key_secret(&kb.access_key_id)
        .await
        .expect("lookup")
        .is_none());
    assert!(matches!(
        b.auth().list_access_keys("bob").await,
        Err(Error::UnknownUser(_))
    ));
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let db = TestDb::new().await;
    let b = &db.broker;
    b.auth().add_user("alice", "pw-alice", 4096).await.expect("alice");
    assert!(matches!(b.auth().create_access_key("carol").await, Err(Error::UnknownUser(u)) if u == "carol"));
    assert!(matches!(
        b.auth().create_access_key("a,b").await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        b.auth().delete_access_key("x'; DELETE FROM access_keys; --").await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        b.auth().list_access_keys("carol").await,
        Err(Error::UnknownUser(_))
    ));
    assert!(b.auth().list_access_keys("alice").await.expect("list").is_empty());
    let raw = db.raw().await;
    let n: i64 = raw
        .query_one("SELECT count(*) FROM access_keys", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}
