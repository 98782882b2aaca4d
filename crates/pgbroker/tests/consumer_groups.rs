//! Kafka's consumer group protocol (KIP-848) against real Postgres: group
//! and member epochs, revoke-before-assign, the fencing errors, sessions
//! enforced by the broker, assignors, regular expressions, and groups of
//! the classic protocol alongside.

use std::collections::BTreeSet;
use std::time::Duration;

use pgbroker::auth::{Acl, AclResource, Permission};
use pgbroker::groups::classic::ClassicJoinRequest;
use pgbroker::groups::consumer::{ConsumerHeartbeat, HeartbeatAnswer, LEAVE_EPOCH, STATIC_LEAVE_EPOCH};
use pgbroker::groups::OffsetCommit;
use pgbroker::{Broker, Error, GroupId, TopicName, TopicPartition};
use pgbroker_testkit::db::{partitions, TestDb};

fn group(name: &str) -> GroupId {
    GroupId::new(name).expect("group")
}

fn join(g: &GroupId, member: &str, topics: &[&TopicName]) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        group: g.clone(),
        member_id: member.to_string(),
        member_epoch: 0,
        instance_id: None,
        rack_id: None,
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        rebalance_timeout: Some(Duration::from_secs(30)),
        subscribed_topics: Some(topics.iter().map(|t| (*t).clone()).collect()),
        subscribed_regex: None,
        server_assignor: None,
        owned: None,
        principal: None,
    }
}

/// A heartbeat at `epoch`, reporting `owned` when given.
fn beat(g: &GroupId, member: &str, epoch: i32, owned: Option<&BTreeSet<TopicPartition>>) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        member_epoch: epoch,
        rebalance_timeout: None,
        subscribed_topics: None,
        owned: owned.map(|o| o.iter().cloned().collect()),
        ..join(g, member, &[])
    }
}

async fn hb(b: &Broker, req: &ConsumerHeartbeat) -> Result<HeartbeatAnswer, Error> {
    b.consumer_groups().heartbeat(req).await
}

fn set(a: &HeartbeatAnswer) -> BTreeSet<TopicPartition> {
    a.assignment
        .as_ref()
        .expect("an assignment")
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| TopicPartition {
                topic: t.topic.clone(),
                partition: *p,
            })
        })
        .collect()
}

fn commit(t: &TopicName, p: i32, offset: i64) -> OffsetCommit {
    OffsetCommit {
        topic: t.clone(),
        partition: p,
        offset,
        metadata: None,
    }
}

/// The member's partitions: those of the answer when it has some, else
/// what it had.
fn owned_after(a: &HeartbeatAnswer, before: &BTreeSet<TopicPartition>) -> BTreeSet<TopicPartition> {
    if a.assignment.is_some() {
        set(a)
    } else {
        before.clone()
    }
}

#[tokio::test]
async fn a_second_member_gets_partitions_only_after_the_first_gave_them_up() {
    let db = TestDb::new().await;
    let t = db.topic("orders", partitions(4)).await;
    let g = group("revoke-first");
    let a = hb(&db.broker, &join(&g, "a", &[&t])).await.expect("a joins");
    assert_eq!((a.member_id.as_str(), a.member_epoch), ("a", 1));
    let a_owned = set(&a);
    assert_eq!(a_owned.len(), 4, "a alone gets every partition");
    let topic_id = db.broker.topics().info(&t).await.expect("info").topic_id;
    assert_ne!(topic_id, [0u8; 16]);
    assert!(a
        .assignment
        .as_ref()
        .expect("assignment")
        .iter()
        .all(|x| x.topic_id == topic_id));

    // b joins: the group moves to epoch 2, but a still holds everything.
    let b = hb(&db.broker, &join(&g, "b", &[&t])).await.expect("b joins");
    assert_eq!(b.member_epoch, 2);
    assert!(set(&b).is_empty(), "nothing is free yet: {b:?}");

    // a is asked to revoke two partitions and keeps its epoch meanwhile.
    let a2 = hb(&db.broker, &beat(&g, "a", 1, Some(&a_owned)))
        .await
        .expect("a beats");
    assert_eq!(a2.member_epoch, 1, "epoch stays until the revocation is done");
    let kept = set(&a2);
    assert_eq!(kept.len(), 2);
    assert!(kept.is_subset(&a_owned));

    // b still waits: a has not confirmed.
    let b2 = hb(&db.broker, &beat(&g, "b", 2, Some(&BTreeSet::new())))
        .await
        .expect("b beats");
    assert!(set(&b2).is_empty(), "{b2:?}");
    let d = db.broker.consumer_groups().describe(&g).await.expect("describe");
    assert_eq!(
        (d.state.as_str(), d.group_epoch, d.members.len()),
        ("Reconciling", 2, 2)
    );

    // a reports the revoked partitions gone: it moves to epoch 2.
    let a3 = hb(&db.broker, &beat(&g, "a", 1, Some(&kept)))
        .await
        .expect("a confirms");
    assert_eq!(a3.member_epoch, 2);
    assert_eq!(owned_after(&a3, &kept), kept);

    // Now b gets the rest, and the two never overlapped.
    let b3 = hb(&db.broker, &beat(&g, "b", 2, Some(&BTreeSet::new())))
        .await
        .expect("b again");
    let b_owned = set(&b3);
    assert_eq!(b_owned.len(), 2);
    assert!(b_owned.is_disjoint(&kept));
    assert_eq!(b_owned.union(&kept).count(), 4);
    let d = db.broker.consumer_groups().describe(&g).await.expect("describe");
    assert_eq!(d.state, "Stable");
    assert!(d.members.iter().all(|m| m.member_epoch == 2));
    assert_eq!(d.assignor, "uniform");

    // The library's describe shows the owners too.
    let lib = db.broker.groups().describe(&g).await.expect("library describe");
    assert_eq!(
        (lib.state.as_str(), lib.protocol_type.as_str()),
        ("Stable", "consumer-protocol")
    );
    let owners: BTreeSet<Option<String>> = lib.partitions.iter().map(|p| p.member.clone()).collect();
    assert_eq!(owners, BTreeSet::from([Some("a".to_string()), Some("b".to_string())]));

    // A heartbeat with nothing new carries no assignment.
    let quiet = hb(&db.broker, &beat(&g, "b", 2, None)).await.expect("quiet");
    assert_eq!((quiet.member_epoch, quiet.assignment), (2, None));
}

#[tokio::test]
async fn wrong_epochs_and_unknown_members_are_fenced() {
    let db = TestDb::new().await;
    let t = db.topic("events", partitions(2)).await;
    let g = group("fencing");
    let a = hb(&db.broker, &join(&g, "a", &[&t])).await.expect("join");
    assert_eq!(a.member_epoch, 1);
    let owned = set(&a);

    let ahead = hb(&db.broker, &beat(&g, "a", 7, None)).await;
    assert!(
        matches!(
            ahead,
            Err(Error::FencedMemberEpoch {
                presented: 7,
                current: 1,
                ..
            })
        ),
        "{ahead:?}"
    );
    let stranger = hb(&db.broker, &beat(&g, "nobody", 1, None)).await;
    assert!(matches!(stranger, Err(Error::UnknownMember { .. })), "{stranger:?}");

    // Move a to epoch 2 (b joins, a revokes and confirms).
    hb(&db.broker, &join(&g, "b", &[&t])).await.expect("b joins");
    let a2 = hb(&db.broker, &beat(&g, "a", 1, Some(&owned))).await.expect("revoke");
    let kept = set(&a2);
    let a3 = hb(&db.broker, &beat(&g, "a", 1, Some(&kept))).await.expect("confirm");
    assert_eq!(a3.member_epoch, 2);
    // The previous epoch is still accepted while a owns no more than its
    // assignment (its last answer may have been lost) ...
    hb(&db.broker, &beat(&g, "a", 1, Some(&kept)))
        .await
        .expect("previous epoch");
    // ... but not while it claims partitions it no longer has.
    let claims = hb(&db.broker, &beat(&g, "a", 1, Some(&owned))).await;
    assert!(matches!(claims, Err(Error::FencedMemberEpoch { .. })), "{claims:?}");

    // Offset commits carry the member epoch.
    let tp = kept.iter().next().expect("a partition").partition;
    let classic = db.broker.classic_groups();
    let newer = classic.commit(&g, "a", 3, &[commit(&t, tp, 1)]).await;
    assert!(matches!(newer, Err(Error::FencedMemberEpoch { .. })), "{newer:?}");
    let older = classic.commit(&g, "a", 1, &[commit(&t, tp, 1)]).await;
    assert!(matches!(older, Err(Error::StaleMemberEpoch { .. })), "{older:?}");
    let unknown = classic.commit(&g, "zed", 2, &[commit(&t, tp, 1)]).await;
    assert!(matches!(unknown, Err(Error::UnknownMember { .. })), "{unknown:?}");
    let admin = classic.commit(&g, "", -1, &[commit(&t, tp, 1)]).await;
    assert!(
        matches!(admin, Err(Error::UnknownMember { .. })),
        "members are live: {admin:?}"
    );
    classic.commit(&g, "a", 2, &[commit(&t, tp, 5)]).await.expect("commit");
    let offsets = db.broker.groups().offsets(&g, &t).await.expect("offsets");
    assert_eq!(
        offsets.iter().map(|o| (o.partition, o.offset)).collect::<Vec<_>>(),
        vec![(tp, 5)]
    );
}

#[tokio::test]
async fn a_silent_member_expires_and_its_partitions_move() {
    let db = TestDb::new().await;
    db.broker
        .consumer_groups()
        .set_session_timeout(Duration::from_millis(400));
    let t = db.topic("silence", partitions(4)).await;
    let g = group("sessions");
    let a = hb(&db.broker, &join(&g, "a", &[&t])).await.expect("a");
    let mut a_owned = set(&a);
    hb(&db.broker, &join(&g, "b", &[&t])).await.expect("b");
    // Reconcile both: a revokes half, b takes it.
    let a2 = hb(&db.broker, &beat(&g, "a", 1, Some(&a_owned)))
        .await
        .expect("a revokes");
    a_owned = set(&a2);
    let a3 = hb(&db.broker, &beat(&g, "a", 1, Some(&a_owned)))
        .await
        .expect("a confirms");
    assert_eq!(a3.member_epoch, 2);
    let b = hb(&db.broker, &beat(&g, "b", 2, Some(&BTreeSet::new())))
        .await
        .expect("b takes");
    assert_eq!(set(&b).len(), 2);

    // b goes silent; a keeps heartbeating past b's session.
    let mut epoch = a3.member_epoch;
    let mut all = BTreeSet::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = hb(&db.broker, &beat(&g, "a", epoch, Some(&a_owned)))
            .await
            .expect("a beats");
        epoch = r.member_epoch;
        a_owned = owned_after(&r, &a_owned);
        all = a_owned.clone();
    }
    assert_eq!(epoch, 3, "b's expiry moved the group on");
    assert_eq!(all.len(), 4, "a took b's partitions: {all:?}");
    let gone = hb(&db.broker, &beat(&g, "b", 2, None)).await;
    assert!(matches!(gone, Err(Error::UnknownMember { .. })), "{gone:?}");
    let d = db.broker.consumer_groups().describe(&g).await.expect("describe");
    assert_eq!(
        d.members.iter().map(|m| m.member_id.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
}

#[tokio::test]
async fn leaving_frees_partitions_at_once_and_the_range_assignor_splits_by_topic() {
    let db = TestDb::new().await;
    let t = db.topic("ranged", partitions(5)).await;
    let g = group("ranges");
    let mut ja = join(&g, "a", &[&t]);
    ja.server_assignor = Some("range".to_string());
    let a = hb(&db.broker, &ja).await.expect("a");
    let mut jb = join(&g, "b", &[&t]);
    jb.server_assignor = Some("range".to_string());
    hb(&db.broker, &jb).await.expect("b");
    let a2 = hb(&db.broker, &beat(&g, "a", a.member_epoch, Some(&set(&a))))
        .await
        .expect("revoke");
    let kept: Vec<i32> = set(&a2).iter().map(|tp| tp.partition).collect();
    assert_eq!(kept, vec![0, 1, 2], "range gives the first member the first three");
    assert_eq!(
        db.broker
            .consumer_groups()
            .describe(&g)
            .await
            .expect("describe")
            .assignor,
        "range"
    );

    let mut bogus = join(&g, "c", &[&t]);
    bogus.server_assignor = Some("cooperative-sticky".to_string());
    let refused = hb(&db.broker, &bogus).await;
    assert!(matches!(refused, Err(Error::Invalid { .. })), "{refused:?}");

    // a leaves: b gets all five at its next heartbeat.
    let left = hb(&db.broker, &beat(&g, "a", LEAVE_EPOCH, None)).await.expect("leave");
    assert_eq!(left.member_epoch, LEAVE_EPOCH);
    let b = hb(&db.broker, &beat(&g, "b", 2, Some(&BTreeSet::new()))).await;
    let b = match b {
        Ok(b) => b,
        Err(e) => panic!("b heartbeat: {e}"),
    };
    assert_eq!(b.member_epoch, 3);
    assert_eq!(set(&b).len(), 5);
}

#[tokio::test]
async fn new_partitions_and_topics_matching_a_regex_move_the_epoch() {
    let db = TestDb::new().await;
    let t = db.topic("metrics-a", partitions(1)).await;
    let g = group("regex");
    let mut j = join(&g, "a", &[]);
    j.subscribed_topics = Some(Vec::new());
    j.subscribed_regex = Some("metrics-.*".to_string());
    let a = hb(&db.broker, &j).await.expect("join by regex");
    assert_eq!(set(&a).len(), 1);
    db.topic("other", partitions(2)).await;
    db.topic("metrics-b", partitions(2)).await;
    let a2 = hb(&db.broker, &beat(&g, "a", 1, Some(&set(&a)))).await.expect("beat");
    assert_eq!(a2.member_epoch, 2);
    let topics: BTreeSet<String> = set(&a2).iter().map(|tp| tp.topic.to_string()).collect();
    assert_eq!(
        topics,
        BTreeSet::from(["metrics-a".to_string(), "metrics-b".to_string()])
    );
    db.broker.topics().add_partitions(&t, 2).await.expect("grow to three");
    let a3 = hb(&db.broker, &beat(&g, "a", 2, Some(&set(&a2)))).await.expect("beat");
    assert_eq!((a3.member_epoch, set(&a3).len()), (3, 5));
}

#[tokio::test]
async fn a_regex_matches_only_topics_its_members_user_was_granted() {
    let db = TestDb::new().await;
    for name in ["logs-app", "logs-billing", "logs-audit"] {
        db.topic(name, partitions(1)).await;
    }
    let auth = db.broker.auth();
    auth.add_user("alice", "pw", 4096).await.expect("user");
    let grant = |resource| Acl::new("alice", Permission::Consume, resource).expect("acl");
    auth.grant(&grant(AclResource::topic("logs-app").expect("topic")))
        .await
        .expect("grant");
    // Another right on a topic makes it visible too, as Kafka's DESCRIBE.
    auth.grant(
        &Acl::new(
            "alice",
            Permission::Produce,
            AclResource::topic("logs-billing").expect("topic"),
        )
        .expect("acl"),
    )
    .await
    .expect("grant");
    let topics = |a: &HeartbeatAnswer| -> BTreeSet<String> { set(a).iter().map(|tp| tp.topic.to_string()).collect() };
    let by_regex = |g: &GroupId, member: &str, principal: Option<&str>| {
        let mut j = join(g, member, &[]);
        j.subscribed_topics = Some(Vec::new());
        j.subscribed_regex = Some("logs-.*".to_string());
        j.principal = principal.map(str::to_string);
        j
    };

    let held = group("held");
    let a = hb(&db.broker, &by_regex(&held, "a", Some("alice")))
        .await
        .expect("alice joins");
    assert_eq!(
        topics(&a),
        BTreeSet::from(["logs-app".to_string(), "logs-billing".to_string()]),
        "only what alice may see"
    );
    // A user without any grant matches nothing.
    let b = hb(&db.broker, &by_regex(&group("nothing"), "b", Some("mallory")))
        .await
        .expect("join");
    assert!(set(&b).is_empty(), "{b:?}");
    // A member without a user to hold it to (authentication off, a super
    // user) matches every topic.
    let c = hb(&db.broker, &by_regex(&group("open"), "c", None))
        .await
        .expect("join");
    assert_eq!(topics(&c).len(), 3);
    // A new grant counts from the group's next target: a new topic moves it.
    auth.grant(&grant(AclResource::topic_prefix("logs-").expect("prefix")))
        .await
        .expect("grant");
    db.topic("logs-new", partitions(1)).await;
    let a2 = hb(&db.broker, &beat(&held, "a", a.member_epoch, Some(&set(&a))))
        .await
        .expect("beat");
    assert_eq!(a2.member_epoch, a.member_epoch + 1);
    assert_eq!(topics(&a2).len(), 4, "{a2:?}");
}

#[tokio::test]
async fn classic_and_consumer_groups_keep_to_their_own_protocol() {
    let db = TestDb::new().await;
    let t = db.topic("shared", partitions(2)).await;
    let modern = group("modern");
    hb(&db.broker, &join(&modern, "a", &[&t]))
        .await
        .expect("consumer member");
    let classic_join = |g: &GroupId| ClassicJoinRequest {
        group: g.clone(),
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(5),
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), Vec::new())],
        require_known_member_id: false,
    };
    db.broker.classic_groups().set_initial_rebalance_delay(Duration::ZERO);
    let refused = db.broker.classic_groups().join(&classic_join(&modern)).await;
    assert!(
        matches!(refused, Err(Error::InconsistentGroupProtocol(_))),
        "{refused:?}"
    );

    let old = group("old-school");
    db.broker
        .classic_groups()
        .join(&classic_join(&old))
        .await
        .expect("classic member");
    let refused = hb(&db.broker, &join(&old, "x", &[&t])).await;
    assert!(
        matches!(refused, Err(Error::InconsistentGroupProtocol(_))),
        "{refused:?}"
    );
    let described = db.broker.consumer_groups().describe(&old).await;
    assert!(matches!(described, Err(Error::UnknownGroup(_))), "{described:?}");

    let listed = db.broker.classic_groups().list().await.expect("list");
    let types: Vec<(String, String, String)> = listed
        .into_iter()
        .map(|l| (l.group.to_string(), l.group_type, l.protocol_type))
        .collect();
    assert_eq!(
        types,
        vec![
            ("modern".to_string(), "consumer".to_string(), "consumer".to_string()),
            ("old-school".to_string(), "classic".to_string(), "consumer".to_string()),
        ]
    );

    // Once its last member left, a consumer group may become classic.
    hb(&db.broker, &beat(&modern, "a", LEAVE_EPOCH, None))
        .await
        .expect("leave");
    db.broker
        .classic_groups()
        .join(&classic_join(&modern))
        .await
        .expect("the empty group converts");
}

#[tokio::test]
async fn a_recreated_topic_gets_a_new_id() {
    let db = TestDb::new().await;
    let t = db.topic("again", partitions(1)).await;
    let first = db.broker.topics().info(&t).await.expect("info").topic_id;
    assert_eq!(db.broker.topics().info(&t).await.expect("info").topic_id, first);
    let names = db
        .broker
        .consumer_groups()
        .topic_names(&[first, [7u8; 16]])
        .await
        .expect("names");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), vec![(first, t.clone())]);
    db.broker.topics().delete(&t).await.expect("delete");
    let t = db.topic("again", partitions(1)).await;
    assert_ne!(db.broker.topics().info(&t).await.expect("info").topic_id, first);
}

#[tokio::test]
async fn a_static_member_keeps_its_partitions_while_away_and_its_instance_id_is_its_own() {
    let db = TestDb::new().await;
    let t = db.topic("static", partitions(2)).await;
    let g = group("statics");
    let static_join = |member: &str| ConsumerHeartbeat {
        instance_id: Some("instance-1".to_string()),
        ..join(&g, member, &[&t])
    };
    let a = hb(&db.broker, &static_join("a-1")).await.expect("static join");
    assert_eq!((a.member_epoch, set(&a).len()), (1, 2));
    // Another member id with the same instance id while a-1 is active.
    let clash = hb(&db.broker, &static_join("a-2")).await;
    assert!(matches!(clash, Err(Error::UnreleasedInstanceId { .. })), "{clash:?}");

    // a-1 leaves for a while: a new member waits, the partitions stay a's.
    let away = hb(&db.broker, &beat(&g, "a-1", STATIC_LEAVE_EPOCH, None))
        .await
        .expect("away");
    assert_eq!(away.member_epoch, STATIC_LEAVE_EPOCH);
    let b = hb(&db.broker, &join(&g, "b", &[&t])).await.expect("b joins");
    assert!(set(&b).is_empty(), "b gets none of what a holds while away: {b:?}");

    // It comes back under a new member id with its epoch and partitions.
    let back = hb(&db.broker, &static_join("a-2")).await.expect("back");
    assert_eq!(back.member_id, "a-2");
    assert_eq!(back.member_epoch, 1, "its epoch from before it left");
    let d = db.broker.consumer_groups().describe(&g).await.expect("describe");
    let ids: Vec<&str> = d.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids, vec!["a-2", "b"]);
    let gone = hb(&db.broker, &beat(&g, "a-1", 1, None)).await;
    assert!(matches!(gone, Err(Error::UnknownMember { .. })), "{gone:?}");
}

#[tokio::test]
async fn regexes_are_re2_matched_in_full_and_bad_ones_refused_without_a_trace() {
    let db = TestDb::new().await;
    for name in ["orders-12", "orders-12x", "xorders-3", "Orders-4"] {
        db.topic(name, partitions(1)).await;
    }
    let g = group("re2");
    let by_regex = |re: &str| {
        let mut j = join(&g, "a", &[]);
        j.subscribed_topics = Some(Vec::new());
        j.subscribed_regex = Some(re.to_string());
        j
    };
    // RE2 syntax (\d, inline flags), matched against the whole name.
    let a = hb(&db.broker, &by_regex(r"(?i)orders-\d+"))
        .await
        .expect("join by regex");
    let topics: BTreeSet<String> = set(&a).iter().map(|tp| tp.topic.to_string()).collect();
    assert_eq!(
        topics,
        BTreeSet::from(["Orders-4".to_string(), "orders-12".to_string()])
    );

    // Not RE2 (a backreference, lookahead) or not a pattern at all.
    let other = group("re2-bad");
    for bad in ["orders-(", r"(a)\1", "orders-(?=1)", &"a".repeat(2000)] {
        let mut j = by_regex(bad);
        j.group = other.clone();
        let refused = hb(&db.broker, &j).await;
        assert!(
            matches!(
                &refused,
                Err(Error::Invalid {
                    what: pgbroker::Invalid::SubscriptionRegex,
                    ..
                })
            ),
            "{bad}: {refused:?}"
        );
    }
    let left = db.broker.consumer_groups().describe(&other).await;
    assert!(left.is_err(), "a refused join leaves no group behind: {left:?}");
}

#[tokio::test]
async fn a_group_s_own_session_settings_override_the_broker_s() {
    let db = TestDb::new().await;
    let t = db.topic("own", partitions(2)).await;
    let (short, plain) = (group("short"), group("plain"));
    db.broker
        .share_groups()
        .alter_configs(
            &short,
            &[
                ("consumer.session.timeout.ms".into(), Some("1000".into())),
                ("consumer.heartbeat.interval.ms".into(), Some("700".into())),
            ],
        )
        .await
        .expect("group settings");
    let mut epochs = Vec::new();
    for g in [&short, &plain] {
        let a = hb(&db.broker, &join(g, "a", &[&t])).await.expect("a joins");
        hb(&db.broker, &join(g, "b", &[&t])).await.expect("b joins");
        epochs.push(a.member_epoch);
    }
    let a = hb(&db.broker, &beat(&short, "a", epochs[0], None)).await.expect("a");
    assert_eq!(a.heartbeat_interval, Duration::from_millis(700));
    let p = hb(&db.broker, &beat(&plain, "a", epochs[1], None)).await.expect("a");
    assert_eq!(p.heartbeat_interval, Duration::from_secs(5), "the broker's default");
    // b is silent in both groups for longer than the group's session of
    // 1 s and far less than the broker's 45 s; a keeps beating.
    let mut epochs = [a.member_epoch, p.member_epoch];
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (g, epoch) in [&short, &plain].into_iter().zip(epochs.iter_mut()) {
            *epoch = hb(&db.broker, &beat(g, "a", *epoch, None))
                .await
                .expect("a")
                .member_epoch;
        }
    }
    let members = |d: pgbroker::groups::consumer::ConsumerGroupDescription| {
        d.members.into_iter().map(|m| m.member_id).collect::<Vec<_>>()
    };
    let cg = db.broker.consumer_groups();
    assert_eq!(members(cg.describe(&short).await.expect("describe")), vec!["a"]);
    assert_eq!(members(cg.describe(&plain).await.expect("describe")), vec!["a", "b"]);
}
