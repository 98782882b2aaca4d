//! ACL storage: grants need an existing user, are listed back as given,
//! revoked one by one, go with their user, and bad input changes nothing.

use pgbroker::auth::{Acl, AclResource, Permission};
use pgbroker::Error;
use pgbroker_testkit::db::TestDb;

fn acl(user: &str, permission: Permission, resource: AclResource) -> Acl {
    Acl::new(user, permission, resource).expect("valid acl")
}

#[tokio::test]
async fn grant_list_revoke() {
    let db = TestDb::new().await;
    let b = &db.broker;
    b.auth().add_user("alice", "pw-alice", 4096).await.expect("alice");
    b.auth().add_user("bob", "pw-bob", 4096).await.expect("bob");
    let produce = acl("alice", Permission::Produce, AclResource::topic("orders").expect("t"));
    let group = acl(
        "alice",
        Permission::Group,
        AclResource::group_prefix("app-").expect("g"),
    );
    let all = acl("bob", Permission::Admin, AclResource::topic_prefix("").expect("p"));
    assert!(b.auth().grant(&produce).await.expect("grant"));
    assert!(
        !b.auth().grant(&produce).await.expect("again"),
        "a second grant is not new"
    );
    assert!(b.auth().grant(&group).await.expect("grant"));
    assert!(b.auth().grant(&all).await.expect("grant"));

    assert_eq!(
        b.auth().list_acls(None).await.expect("list"),
        vec![group.clone(), produce.clone(), all.clone()]
    );
    assert_eq!(b.auth().list_acls(Some("bob")).await.expect("list"), vec![all.clone()]);

    let rights = b.auth().user_acls("alice").await.expect("rights");
    assert!(rights.allows_topic(Permission::Produce, "orders"));
    assert!(!rights.allows_topic(Permission::Consume, "orders"));
    assert!(rights.allows_group(Permission::Group, "app-7"));
    assert!(b.auth().user_acls("nobody").await.expect("none").is_empty());

    b.auth().revoke(&produce).await.expect("revoke");
    assert!(matches!(b.auth().revoke(&produce).await, Err(Error::UnknownAcl(_))));
    assert_eq!(b.auth().list_acls(Some("alice")).await.expect("list"), vec![group]);

    // A removed user's grants go with it.
    b.auth().remove_user("bob").await.expect("remove bob");
    assert!(matches!(
        b.auth().list_acls(Some("bob")).await,
        Err(Error::UnknownUser(_))
    ));
    assert_eq!(b.auth().list_acls(None).await.expect("list").len(), 1);
}

#[tokio::test]
async fn bad_grants_change_nothing() {
    let db = TestDb::new().await;
    let b = &db.broker;
    b.auth().add_user("alice", "pw-alice", 4096).await.expect("alice");
    let unknown = acl("carol", Permission::Consume, AclResource::topic("orders").expect("t"));
    assert!(matches!(b.auth().grant(&unknown).await, Err(Error::UnknownUser(u)) if u == "carol"));
    assert!(matches!(b.auth().revoke(&unknown).await, Err(Error::UnknownUser(_))));

    // Hand-built grants that skipped the constructors are checked too.
    let spliced = Acl {
        user: "alice".to_string(),
        permission: Permission::Produce,
        resource: AclResource::Topic("x'; DROP TABLE acls; --".to_string()),
    };
    assert!(matches!(b.auth().grant(&spliced).await, Err(Error::Invalid { .. })));
    let misfit = Acl {
        user: "alice".to_string(),
        permission: Permission::Consume,
        resource: AclResource::Group("g".to_string()),
    };
    assert!(matches!(b.auth().grant(&misfit).await, Err(Error::Invalid { .. })));
    assert!(b.auth().list_acls(None).await.expect("list").is_empty());
}

#[tokio::test]
async fn queue_grants_are_stored_and_checked() {
    let db = TestDb::new().await;
    let b = &db.broker;
    b.auth().add_user("alice", "pw-alice", 4096).await.expect("alice");
    let send = acl("alice", Permission::Produce, AclResource::queue("jobs").expect("q"));
    let receive = acl(
        "alice",
        Permission::Consume,
        AclResource::queue_prefix("work-").expect("p"),
    );
    let admin = acl("alice", Permission::Admin, AclResource::queue_prefix("").expect("p"));
    for a in [&send, &receive, &admin] {
        assert!(b.auth().grant(a).await.expect("grant"), "{a}");
    }
    let listed = b.auth().list_acls(Some("alice")).await.expect("list");
    assert_eq!(listed.len(), 3);
    for a in [&send, &receive, &admin] {
        assert!(listed.contains(a), "{a} listed back");
    }
    let rights = b.auth().user_acls("alice").await.expect("rights");
    assert!(rights.allows_queue(Permission::Produce, "jobs"));
    assert!(!rights.allows_queue(Permission::Consume, "jobs"));
    assert!(rights.allows_queue(Permission::Consume, "work-7"));
    assert!(rights.allows_queue(Permission::Admin, "anything"));
    assert!(!rights.allows_topic(Permission::Produce, "jobs"));

    // The table refuses a group permission on a queue even past the checks
    // in Rust.
    let raw = db.raw().await;
    let refused = raw
        .execute(
            "INSERT INTO acls (user_name, permission, resource_type, pattern, name)
             VALUES ('alice', 'group', 'queue', 'literal', 'jobs')",
            &[],
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(b.auth().list_acls(Some("alice")).await.expect("list").len(), 3);
}
