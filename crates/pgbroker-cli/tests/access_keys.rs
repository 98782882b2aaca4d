//! `pgbroker user key ...` and queue grants in `pgbroker acl`: keys are made
//! for existing users, their secret is printed once, listings never show
//! it, deletion is by id, and bad input fails with a clear message and
//! changes nothing.

use pgbroker_testkit::cli::Env;
use serde_json::{json, Value};

fn key_ids(listing: &Value) -> Vec<&str> {
    listing
        .as_array()
        .expect("array")
        .iter()
        .map(|k| k["access_key_id"].as_str().expect("id"))
        .collect()
}

#[test]
fn create_list_delete() {
    let env = Env::new();
    env.ok(&["user", "add", "alice", "--password", "pw"]);

    let key = env.json(&["user", "key", "create", "alice", "--format", "json"]);
    let id = key["access_key_id"].as_str().expect("id").to_string();
    let secret = key["secret_access_key"].as_str().expect("secret").to_string();
    assert_eq!(key["user"], "alice");
    assert!(id.starts_with("PGBK") && id.len() == 20, "{id}");
    assert_eq!(secret.len(), 40);

    let table = env.ok(&["user", "key", "create", "alice"]);
    let second_id = table
        .lines()
        .find_map(|l| l.strip_prefix("access_key_id:"))
        .expect("id line")
        .trim()
        .to_string();
    assert!(table.contains("secret_access_key:"), "{table}");

    let listing = env.json(&["user", "key", "list", "alice", "--format", "json"]);
    let mut ids = key_ids(&listing);
    ids.sort_unstable();
    let mut want = vec![id.as_str(), second_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(!listing.to_string().contains(&secret), "listings never show a secret");
    assert!(listing
        .as_array()
        .expect("array")
        .iter()
        .all(|k| k["last_used_ms"].is_null()));
    let table = env.ok(&["user", "key", "list", "alice"]);
    assert!(
        table.contains(&id) && table.contains("never") && !table.contains(&secret),
        "{table}"
    );

    assert_eq!(
        env.ok(&["user", "key", "delete", &id]),
        format!("deleted access key {id}\n")
    );
    let err = env.fail(&["user", "key", "delete", &id]);
    assert!(err.contains("no access key"), "{err}");
    let listing = env.json(&["user", "key", "list", "alice", "--format", "json"]);
    assert_eq!(key_ids(&listing), vec![second_id.as_str()]);

    // Keys go with their user.
    env.ok(&["user", "remove", "alice"]);
    env.ok(&["user", "add", "alice", "--password", "pw"]);
    assert_eq!(
        env.json(&["user", "key", "list", "alice", "--format", "json"]),
        json!([])
    );
}

#[test]
fn bad_input_changes_nothing() {
    let env = Env::new();
    env.ok(&["user", "add", "alice", "--password", "pw"]);
    let err = env.fail(&["user", "key", "create", "carol"]);
    assert!(err.contains("unknown user \"carol\""), "{err}");
    let err = env.fail(&["user", "key", "list", "carol"]);
    assert!(err.contains("unknown user"), "{err}");
    let err = env.fail_with(2, &["user", "key", "delete", "x'; DROP TABLE access_keys; --"], "");
    assert!(err.contains("access key id"), "{err}");
    env.fail_with(2, &["user", "key", "create", "a,b"], "");
    assert_eq!(
        env.json(&["user", "key", "list", "alice", "--format", "json"]),
        json!([])
    );
}

#[test]
fn queue_grants() {
    let env = Env::new();
    env.ok(&["user", "add", "alice", "--password", "pw"]);
    assert_eq!(
        env.ok(&["acl", "add", "--user", "alice", "--allow", "produce", "--queue", "jobs"]),
        "granted: alice may produce on queue \"jobs\"\n"
    );
    env.ok(&[
        "acl",
        "add",
        "--user",
        "alice",
        "--allow",
        "consume",
        "--queue-prefix",
        "work-",
    ]);
    let err = env.fail(&["acl", "add", "--user", "alice", "--allow", "group", "--queue", "jobs"]);
    assert!(err.contains("group permission applies to groups"), "{err}");
    env.fail_with(
        2,
        &["acl", "add", "--user", "alice", "--allow", "admin", "--queue", "a/b"],
        "",
    );
    env.fail_with(
        2,
        &[
            "acl", "add", "--user", "alice", "--allow", "admin", "--queue", "q", "--topic", "t",
        ],
        "",
    );
    let listed = env.json(&["acl", "list", "--user", "alice", "--format", "json"]);
    assert_eq!(
        listed,
        json!([
            {"user": "alice", "permission": "produce", "resource_type": "queue", "pattern": "literal", "name": "jobs"},
            {"user": "alice", "permission": "consume", "resource_type": "queue", "pattern": "prefix", "name": "work-"},
        ])
    );
    env.ok(&[
        "acl", "remove", "--user", "alice", "--allow", "produce", "--queue", "jobs",
    ]);
    assert_eq!(
        env.json(&["acl", "list", "--user", "alice", "--format", "json"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
