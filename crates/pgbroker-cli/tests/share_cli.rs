//! `pgbroker consume --share-group`: a topic read as a work queue by a
//! share group, with released records delivered again, rejected ones
//! never, and accepted ones once; `pgbroker group config` sets where the
//! group starts. Bad input fails clearly and changes nothing.

use std::collections::BTreeSet;

use pgbroker_testkit::cli::{lines, values, Env};

/// A setting's value and whether it is the default, from `group config --format json`.
fn setting(config: &serde_json::Value, name: &str) -> (Option<String>, Option<bool>) {
    let entry = config
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["name"] == name)
        .expect("the setting");
    (
        entry["value"].as_str().map(str::to_string),
        entry["is_default"].as_bool(),
    )
}

fn set_of(records: &[serde_json::Value]) -> BTreeSet<String> {
    values(records).into_iter().map(str::to_string).collect()
}

#[test]
fn released_come_back_rejected_never_accepted_once() {
    let env = Env::new();
    env.ok(&["topic", "create", "work", "--partitions", "2"]);
    assert!(env
        .run(
            &["produce", "work", "--key-separator", ":"],
            &lines(0, 20, |i| format!("k{i}"))
        )
        .status
        .success());
    let config = env.json(&[
        "group",
        "config",
        "sg",
        "--set",
        "share.auto.offset.reset=earliest",
        "--format",
        "json",
    ]);
    assert_eq!(
        setting(&config, "share.auto.offset.reset"),
        (Some("earliest".to_string()), Some(false))
    );

    let released = env.consume(&["work", "--share-group", "sg", "--release", "--max-messages", "5"]);
    assert_eq!(released.len(), 5);
    let rejected = set_of(&env.consume(&["work", "--share-group", "sg", "--reject", "--max-messages", "3"]));
    assert_eq!(rejected.len(), 3);
    let accepted = env.consume(&["work", "--share-group", "sg"]);
    let accepted_set = set_of(&accepted);
    assert_eq!(accepted.len(), 17, "each record once: {:?}", values(&accepted));
    assert_eq!(accepted_set.len(), 17);
    assert!(accepted_set.is_disjoint(&rejected), "a rejected record came back");
    let all: BTreeSet<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert_eq!(accepted_set.union(&rejected).cloned().collect::<BTreeSet<_>>(), all);
    assert!(set_of(&released).is_subset(&all));
    assert!(env.consume(&["work", "--share-group", "sg"]).is_empty(), "all settled");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.ok(&["topic", "create", "work", "--partitions", "1"]);
    assert!(env
        .fail_with(
            2,
            &["consume", "work", "--share-group", "sg", "--release", "--reject"],
            ""
        )
        .contains("cannot be used with"));
    assert!(env
        .fail_with(2, &["consume", "work", "--share-group", "sg", "--group", "g"], "")
        .contains("cannot be used with"));
    assert!(env
        .fail_with(2, &["consume", "work", "--release"], "")
        .contains("--share-group"));
    let refused = env.fail(&["group", "config", "sg", "--set", "share.isolation.level=read_dirty"]);
    assert!(refused.contains("share.isolation.level"), "{refused}");
    let after = env.json(&["group", "config", "sg", "--format", "json"]);
    assert_eq!(
        setting(&after, "share.isolation.level"),
        (Some("read_uncommitted".to_string()), Some(true))
    );
    assert!(env
        .fail(&["group", "config", "sg", "--set", "share.unknown=1"])
        .contains("share.unknown"));
}
