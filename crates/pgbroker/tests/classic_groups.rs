//! Kafka's classic group protocol: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup with client-side assignment, offsets with Kafka's rules, and
//! coexistence with the library's own groups.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgbroker::groups::classic::{ClassicJoinRequest, ClassicJoinResponse};
use pgbroker::groups::{JoinOptions, OffsetCommit};
use pgbroker::{Broker, Error, GroupId, TopicName};
use pgbroker_testkit::db::{partitions, TestDb};

fn group(name: &str) -> GroupId {
    GroupId::new(name).expect("group")
}

fn request(g: &GroupId, member_id: &str, metadata: &str) -> ClassicJoinRequest {
    ClassicJoinRequest {
        group: g.clone(),
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(5),
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), metadata.as_bytes().to_vec())],
        require_known_member_id: false,
    }
}

/// Runs the joins concurrently, each on its broker. The first join of an
/// empty group waits 1 s for the others (the initial rebalance delay), so
/// that joins spread out by a busy machine still form one generation.
async fn join_all(joins: Vec<(Broker, ClassicJoinRequest)>) -> Vec<ClassicJoinResponse> {
    let tasks: Vec<_> = joins
        .into_iter()
        .map(|(b, r)| {
            b.classic_groups().set_initial_rebalance_delay(Duration::from_secs(1));
            tokio::spawn(async move { b.classic_groups().join(&r).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task").expect("join"));
    }
    out
}

fn assigned(member: &str) -> Vec<u8> {
    format!("assignment-of-{member}").into_bytes()
}

/// Followers sync first (and wait), then the leader assigns every member
/// `assigned(id)`. Returns what each member received.
async fn sync_all(brokers: &[Broker], g: &GroupId, joined: &[ClassicJoinResponse]) -> BTreeMap<String, Vec<u8>> {
    let mut tasks = Vec::new();
    let mut leader_task = None;
    for (i, r) in joined.iter().enumerate() {
        let b = brokers[i % brokers.len()].clone();
        let (g, r) = (g.clone(), r.clone());
        if r.member_id == r.leader {
            leader_task = Some((b, g, r));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let got = b
                .classic_groups()
                .sync(&g, &r.member_id, r.generation, None, Vec::new())
                .await;
            (r.member_id.clone(), got)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (b, g, r) = leader_task.expect("a leader");
    let plan: Vec<(String, Vec<u8>)> = r
        .members
        .iter()
        .map(|m| (m.member_id.clone(), assigned(&m.member_id)))
        .collect();
    let mut out = BTreeMap::new();
    out.insert(
        r.member_id.clone(),
        b.classic_groups()
            .sync(&g, &r.member_id, r.generation, None, plan)
            .await
            .expect("leader sync"),
    );
    for t in tasks {
        let (id, got) = t.await.expect("task");
        out.insert(id, got.expect("follower sync"));
    }
    out
}

/// Joins `n` new members concurrently and syncs them.
async fn form(broker: &Broker, g: &GroupId, n: usize) -> Vec<ClassicJoinResponse> {
    let joins = (0..n)
        .map(|i| (broker.clone(), request(g, "", &format!("meta-{i}"))))
        .collect();
    let joined = join_all(joins).await;
    sync_all(std::slice::from_ref(broker), g, &joined).await;
    joined
}

fn commit(topic: &TopicName, partition: i32, offset: i64, metadata: &str) -> OffsetCommit {
    OffsetCommit {
        topic: topic.clone(),
        partition,
        offset,
        metadata: Some(metadata.to_string()),
    }
}

/// Heartbeats until the rebalance shows (or panics after `within`).
async fn heartbeat_until_rebalance(b: &Broker, g: &GroupId, r: &ClassicJoinResponse, within: Duration) {
    let until = Instant::now() + within;
    loop {
        match b.classic_groups().heartbeat(g, &r.member_id, r.generation, None).await {
            Ok(()) => assert!(Instant::now() < until, "no rebalance within {within:?}"),
            Err(Error::RebalanceInProgress { .. }) => return,
            Err(e) => panic!("heartbeat: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_joins_form_one_generation_with_one_leader() {
    let db = TestDb::new().await;
    let g = group("three");
    let joins = (0..3)
        .map(|i| (db.broker.clone(), request(&g, "", &format!("meta-{i}"))))
        .collect();
    let joined = join_all(joins).await;
    let generation = joined[0].generation;
    assert!(generation >= 1);
    assert!(joined.iter().all(|r| r.generation == generation), "{joined:?}");
    assert!(joined
        .iter()
        .all(|r| r.leader == joined[0].leader && r.protocol_name == "range"));
    assert!(joined.iter().all(|r| r.protocol_type == "consumer"));
    let leaders: Vec<&ClassicJoinResponse> = joined.iter().filter(|r| r.member_id == r.leader).collect();
    assert_eq!(leaders.len(), 1);
    let mut metadata: Vec<String> = leaders[0]
        .members
        .iter()
        .map(|m| String::from_utf8(m.metadata.clone()).expect("utf8"))
        .collect();
    metadata.sort();
    assert_eq!(metadata, vec!["meta-0", "meta-1", "meta-2"]);
    assert!(joined
        .iter()
        .filter(|r| r.member_id != r.leader)
        .all(|r| r.members.is_empty()));

    let d = db.broker.classic_groups().describe(&g).await.expect("describe");
    assert_eq!(d.state, "CompletingRebalance");
    let got = sync_all(std::slice::from_ref(&db.broker), &g, &joined).await;
    assert_eq!(got.len(), 3);
    for (member, bytes) in &got {
        assert_eq!(bytes, &assigned(member));
    }
    for r in &joined {
        db.broker
            .classic_groups()
            .heartbeat(&g, &r.member_id, r.generation, None)
            .await
            .expect("heartbeat");
    }
    let d = db.broker.classic_groups().describe(&g).await.expect("describe");
    assert_eq!((d.state.as_str(), d.protocol_type.as_str()), ("Stable", "consumer"));
    assert_eq!(d.protocol_name, "range");
    assert_eq!(d.members.len(), 3);
    for m in &d.members {
        assert_eq!(m.assignment, assigned(&m.member_id));
        assert!(m.metadata.starts_with(b"meta-"));
        assert_eq!((m.client_id.as_str(), m.client_host.as_str()), ("client", "/127.0.0.1"));
    }
    // A follower repeating its join with the same protocols gets the current
    // generation back without a rebalance.
    let follower = joined.iter().find(|r| r.member_id != r.leader).expect("follower");
    let meta = String::from_utf8(
        d.members
            .iter()
            .find(|m| m.member_id == follower.member_id)
            .expect("m")
            .metadata
            .clone(),
    )
    .expect("utf8");
    let again = db
        .broker
        .classic_groups()
        .join(&request(&g, &follower.member_id, &meta))
        .await
        .expect("rejoin");
    assert_eq!(again.generation, generation);
    assert_eq!(
        db.broker.classic_groups().describe(&g).await.expect("d").state,
        "Stable"
    );
    let listed = db.broker.classic_groups().list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].protocol_type.as_str(), listed[0].state.as_str()),
        ("consumer", "Stable")
    );
}

#[tokio::test]
async fn member_id_required_then_join_with_it() {
    let db = TestDb::new().await;
    let g = group("known-ids");
    let mut r = request(&g, "", "m");
    r.require_known_member_id = true;
    let id = match db.broker.classic_groups().join(&r).await {
        Err(Error::MemberIdRequired { member_id }) => member_id,
        other => panic!("expected MemberIdRequired, got {other:?}"),
    };
    assert!(id.starts_with("client-"), "{id}");
    let d = db.broker.classic_groups().describe(&g).await.expect("describe");
    assert_eq!(
        (d.state.as_str(), d.members.len()),
        ("Empty", 0),
        "a pending member is not a member"
    );
    // The pending id is not a member yet.
    assert!(matches!(
        db.broker.classic_groups().heartbeat(&g, &id, 0, None).await,
        Err(Error::UnknownMember { .. })
    ));
    r.member_id = id.clone();
    let joined = db.broker.classic_groups().join(&r).await.expect("join with id");
    assert_eq!(
        (joined.member_id.as_str(), joined.leader.as_str()),
        (id.as_str(), id.as_str())
    );
    assert_eq!(joined.members.len(), 1);
    r.member_id = "client-nobody".into();
    assert!(matches!(
        db.broker.classic_groups().join(&r).await,
        Err(Error::UnknownMember { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn new_member_makes_the_others_rejoin() {
    let db = TestDb::new().await;
    let g = group("grow");
    let first = form(&db.broker, &g, 2).await;
    let generation = first[0].generation;
    let leader = first[0].leader.clone();

    let b = db.broker.clone();
    let third = tokio::spawn({
        let r = request(&g, "", "meta-new");
        async move { b.classic_groups().join(&r).await }
    });
    for r in &first {
        heartbeat_until_rebalance(&db.broker, &g, r, Duration::from_secs(10)).await;
    }
    let rejoins = first
        .iter()
        .enumerate()
        .map(|(i, r)| (db.broker.clone(), request(&g, &r.member_id, &format!("meta-{i}"))))
        .collect();
    let mut all = join_all(rejoins).await;
    all.push(third.await.expect("task").expect("third join"));
    assert!(all.iter().all(|r| r.generation == generation + 1), "{all:?}");
    assert!(
        all.iter().all(|r| r.leader == leader),
        "the leader rejoined and stays leader"
    );
    let lead = all.iter().find(|r| r.member_id == leader).expect("leader");
    assert_eq!(lead.members.len(), 3);
    let got = sync_all(std::slice::from_ref(&db.broker), &g, &all).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(m, bytes)| bytes == &assigned(m)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn silent_member_expires_and_the_rest_rebalance() {
    let db = TestDb::new().await;
    let g = group("expiry");
    // Only the silent member has a short session: the one that heartbeats
    // must not expire when the machine stalls.
    let joins = (0..2)
        .map(|i| {
            let mut r = request(&g, "", &format!("meta-{i}"));
            r.session_timeout = Duration::from_millis(if i == 1 { 1000 } else { 10_000 });
            r.rebalance_timeout = Duration::from_millis(2000);
            (db.broker.clone(), r)
        })
        .collect();
    let joined = join_all(joins).await;
    // The silent member's last word is its sync below: its session ends
    // 1 s after that at the earliest.
    let started = Instant::now();
    sync_all(std::slice::from_ref(&db.broker), &g, &joined).await;
    let (alive, silent) = (&joined[0], &joined[1]);
    heartbeat_until_rebalance(&db.broker, &g, alive, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let mut r = request(&g, &alive.member_id, "meta-0");
    r.session_timeout = Duration::from_millis(10_000);
    let again = db.broker.classic_groups().join(&r).await.expect("rejoin");
    assert_eq!(again.generation, alive.generation + 1);
    assert_eq!(again.leader, alive.member_id);
    assert_eq!(again.members.len(), 1);
    assert!(matches!(
        db.broker
            .classic_groups()
            .heartbeat(&g, &silent.member_id, silent.generation, None)
            .await,
        Err(Error::UnknownMember { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn member_that_does_not_rejoin_is_dropped_at_the_rebalance_deadline() {
    let db = TestDb::new().await;
    let g = group("deadline");
    let short = |member: &str, meta: &str| {
        let mut r = request(&g, member, meta);
        r.rebalance_timeout = Duration::from_millis(1000);
        r
    };
    let joined = join_all(vec![
        (db.broker.clone(), short("", "meta-0")),
        (db.broker.clone(), short("", "meta-1")),
    ])
    .await;
    sync_all(std::slice::from_ref(&db.broker), &g, &joined).await;
    let (stays, lingers) = (&joined[0], &joined[1]);
    let b = db.broker.clone();
    // The rebalance starts after this; its deadline is 1 s later.
    let started = Instant::now();
    let newcomer = tokio::spawn({
        let r = short("", "meta-2");
        async move { b.classic_groups().join(&r).await }
    });
    heartbeat_until_rebalance(&db.broker, &g, stays, Duration::from_secs(5)).await;
    // The lingering member's session is alive, but it does not rejoin.
    let again = db
        .broker
        .classic_groups()
        .join(&short(&stays.member_id, "meta-0"))
        .await
        .expect("rejoin");
    let waited = started.elapsed();
    let other = newcomer.await.expect("task").expect("newcomer");
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(
        (again.generation, other.generation),
        (stays.generation + 1, stays.generation + 1)
    );
    let lead = [&again, &other]
        .into_iter()
        .find(|r| r.member_id == r.leader)
        .expect("leader");
    assert_eq!(lead.members.len(), 2);
    assert!(lead.members.iter().all(|m| m.member_id != lingers.member_id));
    assert!(matches!(
        db.broker
            .classic_groups()
            .heartbeat(&g, &lingers.member_id, lingers.generation, None)
            .await,
        Err(Error::UnknownMember { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn leaving_rebalances_and_the_last_leave_empties_the_group() {
    let db = TestDb::new().await;
    let t = db.topic("orders", partitions(2)).await;
    let g = group("leavers");
    let joined = form(&db.broker, &g, 2).await;
    let leader = joined.iter().find(|r| r.member_id == r.leader).expect("leader");
    let follower = joined.iter().find(|r| r.member_id != r.leader).expect("follower");
    db.broker
        .classic_groups()
        .commit(&g, &follower.member_id, follower.generation, &[commit(&t, 0, 7, "x")])
        .await
        .expect("commit");

    // The leader leaves: the follower rejoins alone and leads.
    let left = db
        .broker
        .classic_groups()
        .leave(&g, &[(leader.member_id.clone(), None), ("client-nobody".into(), None)])
        .await
        .expect("leave");
    assert!(left[0].is_ok());
    assert!(matches!(left[1], Err(Error::UnknownMember { .. })));
    heartbeat_until_rebalance(&db.broker, &g, follower, Duration::from_secs(1)).await;
    let again = db
        .broker
        .classic_groups()
        .join(&request(&g, &follower.member_id, "meta"))
        .await
        .expect("rejoin");
    assert_eq!(again.leader, follower.member_id);
    assert_eq!(again.generation, follower.generation + 1);

    let left = db
        .broker
        .classic_groups()
        .leave(&g, &[(follower.member_id.clone(), None)])
        .await
        .expect("leave");
    assert!(left[0].is_ok());
    let d = db.broker.classic_groups().describe(&g).await.expect("describe");
    assert_eq!(
        (d.state.as_str(), d.generation, d.members.len()),
        ("Empty", again.generation, 0)
    );
    let offsets = db.broker.groups().offsets(&g, &t).await.expect("offsets");
    assert_eq!(offsets[0].offset, 7, "offsets survive");
    db.broker
        .groups()
        .delete(&g)
        .await
        .expect("an empty group can be deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn stale_generation_is_rejected_and_changes_nothing() {
    let db = TestDb::new().await;
    let t = db.topic("events", partitions(2)).await;
    let g = group("stale");
    let first = form(&db.broker, &g, 2).await;
    let old = first[0].generation;
    let (a, b) = (&first[0], &first[1]);
    db.broker
        .classic_groups()
        .commit(&g, &a.member_id, old, &[commit(&t, 0, 5, "gen-1")])
        .await
        .expect("commit");

    // B changes its metadata: a rebalance. While it prepares, A may still
    // commit with the current generation (as in Kafka).
    let b_broker = db.broker.clone();
    let b_join = tokio::spawn({
        let r = request(&g, &b.member_id, "changed");
        async move { b_broker.classic_groups().join(&r).await }
    });
    heartbeat_until_rebalance(&db.broker, &g, a, Duration::from_secs(2)).await;
    db.broker
        .classic_groups()
        .commit(&g, &a.member_id, old, &[commit(&t, 0, 6, "preparing")])
        .await
        .expect("commit while preparing");
    let a_again = db
        .broker
        .classic_groups()
        .join(&request(&g, &a.member_id, "meta-0"))
        .await
        .expect("rejoin a");
    let b_again = b_join.await.expect("task").expect("rejoin b");
    assert_eq!(a_again.generation, old + 1);
    assert_eq!(b_again.generation, old + 1);
    // Waiting for the leader's assignment: commits are refused.
    assert!(matches!(
        db.broker
            .classic_groups()
            .commit(&g, &a.member_id, old + 1, &[commit(&t, 0, 9, "early")])
            .await,
        Err(Error::RebalanceInProgress { .. })
    ));
    sync_all(
        std::slice::from_ref(&db.broker),
        &g,
        &[a_again.clone(), b_again.clone()],
    )
    .await;
    let before = db.broker.classic_groups().describe(&g).await.expect("describe");
    let offsets_before = db.broker.groups().all_offsets(&g).await.expect("offsets");

    fn illegal<T>(r: Result<T, Error>, old: i32) -> bool {
        matches!(r, Err(Error::IllegalGeneration { presented, current, .. }) if presented == old && current == old + 1)
    }
    assert!(illegal(
        db.broker.classic_groups().heartbeat(&g, &a.member_id, old, None).await,
        old
    ));
    assert!(illegal(
        db.broker
            .classic_groups()
            .sync(
                &g,
                &a.member_id,
                old,
                None,
                vec![(a.member_id.clone(), b"evil".to_vec())]
            )
            .await,
        old
    ));
    assert!(illegal(
        db.broker
            .classic_groups()
            .commit(&g, &a.member_id, old, &[commit(&t, 0, 1, "stale")])
            .await,
        old
    ));
    assert_eq!(db.broker.classic_groups().describe(&g).await.expect("describe"), before);
    assert_eq!(
        db.broker.groups().all_offsets(&g).await.expect("offsets"),
        offsets_before
    );
    assert_eq!(offsets_before.len(), 1);
    assert_eq!(offsets_before[0].1.offset, 6);
    // Unknown members are told so.
    assert!(matches!(
        db.broker
            .classic_groups()
            .sync(&g, "client-nobody", old + 1, None, Vec::new())
            .await,
        Err(Error::UnknownMember { .. })
    ));
}

#[tokio::test]
async fn offsets_keep_their_metadata() {
    let db = TestDb::new().await;
    let t = db.topic("orders", partitions(3)).await;
    let u = db.topic("users", partitions(1)).await;
    let g = group("offsets");
    let r = db
        .broker
        .classic_groups()
        .join(&request(&g, "", "m"))
        .await
        .expect("join");
    db.broker
        .classic_groups()
        .sync(
            &g,
            &r.member_id,
            r.generation,
            None,
            vec![(r.member_id.clone(), b"a".to_vec())],
        )
        .await
        .expect("sync");
    let commits = [
        commit(&t, 0, 10, "ten"),
        commit(&t, 2, 3, ""),
        commit(&u, 0, 1, "{\"k\":1}"),
    ];
    db.broker
        .classic_groups()
        .commit(&g, &r.member_id, r.generation, &commits)
        .await
        .expect("commit");
    let on_t = db.broker.groups().offsets(&g, &t).await.expect("fetch");
    assert_eq!(on_t.len(), 2);
    assert_eq!(
        (on_t[0].partition, on_t[0].offset, on_t[0].metadata.as_deref()),
        (0, 10, Some("ten"))
    );
    assert_eq!(on_t[1].metadata.as_deref(), Some(""));
    let all = db.broker.groups().all_offsets(&g).await.expect("fetch all");
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].0, u);
    assert_eq!(all[2].1.metadata.as_deref(), Some("{\"k\":1}"));
}

#[tokio::test]
async fn simple_commits_only_while_the_group_is_empty() {
    let db = TestDb::new().await;
    let t = db.topic("orders", partitions(1)).await;
    let g = group("simple");
    // A member commit to a group that does not exist is refused...
    assert!(matches!(
        db.broker
            .classic_groups()
            .commit(&g, "someone", 3, &[commit(&t, 0, 1, "")])
            .await,
        Err(Error::IllegalGeneration { .. })
    ));
    // ... a simple commit creates it.
    db.broker
        .classic_groups()
        .commit(&g, "", -1, &[commit(&t, 0, 2, "tool")])
        .await
        .expect("simple commit");
    let listed = db.broker.classic_groups().list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].protocol_type.as_str(), listed[0].state.as_str()),
        ("", "Empty")
    );

    let r = db
        .broker
        .classic_groups()
        .join(&request(&g, "", "m"))
        .await
        .expect("join");
    let refused = db
        .broker
        .classic_groups()
        .commit(&g, "", -1, &[commit(&t, 0, 3, "tool")])
        .await;
    assert!(matches!(refused, Err(Error::UnknownMember { .. })), "{refused:?}");
    assert_eq!(db.broker.groups().offsets(&g, &t).await.expect("o")[0].offset, 2);
    assert!(matches!(
        db.broker.groups().delete(&g).await,
        Err(Error::GroupNotEmpty(_))
    ));

    db.broker
        .classic_groups()
        .leave(&g, &[(r.member_id.clone(), None)])
        .await
        .expect("leave")
        .pop()
        .expect("one")
        .expect("left");
    db.broker
        .classic_groups()
        .commit(&g, "", -1, &[commit(&t, 0, 4, "tool")])
        .await
        .expect("simple commit on an empty group");
    assert_eq!(db.broker.groups().offsets(&g, &t).await.expect("o")[0].offset, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn two_brokers_serve_one_group() {
    let db = TestDb::new().await;
    let other = db.other_broker().await;
    let g = group("shared");
    let brokers = [db.broker.clone(), other.clone()];
    let joined = join_all(vec![
        (db.broker.clone(), request(&g, "", "meta-0")),
        (other.clone(), request(&g, "", "meta-1")),
    ])
    .await;
    assert_eq!(joined[0].generation, joined[1].generation);
    assert_eq!(joined[0].leader, joined[1].leader);
    let got = sync_all(&brokers, &g, &joined).await;
    assert!(got.iter().all(|(m, bytes)| bytes == &assigned(m)));
    // Heartbeats on either broker.
    for r in &joined {
        for b in &brokers {
            b.classic_groups()
                .heartbeat(&g, &r.member_id, r.generation, None)
                .await
                .expect("heartbeat");
        }
    }
    // A third member on the second broker: members on the first learn of it.
    let third = tokio::spawn({
        let (b, r) = (other.clone(), request(&g, "", "meta-2"));
        async move { b.classic_groups().join(&r).await }
    });
    heartbeat_until_rebalance(&db.broker, &g, &joined[0], Duration::from_secs(2)).await;
    heartbeat_until_rebalance(&other, &g, &joined[1], Duration::from_secs(2)).await;
    let mut all = join_all(vec![
        (db.broker.clone(), request(&g, &joined[0].member_id, "meta-0")),
        (other.clone(), request(&g, &joined[1].member_id, "meta-1")),
    ])
    .await;
    all.push(third.await.expect("task").expect("third"));
    assert!(all.iter().all(|r| r.generation == joined[0].generation + 1));
    let got = sync_all(&brokers, &g, &all).await;
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn inconsistent_protocols_are_rejected() {
    let db = TestDb::new().await;
    let t = db.topic("events", partitions(2)).await;
    let g = group("mixed");
    let b = &db.broker;
    let mut first = request(&g, "", "m");
    first.protocols = vec![
        ("range".into(), b"r-meta".to_vec()),
        ("roundrobin".into(), b"rr-meta".to_vec()),
    ];
    let a = b.classic_groups().join(&first).await.expect("join");
    assert_eq!(a.protocol_name, "range");
    b.classic_groups()
        .sync(&g, &a.member_id, a.generation, None, Vec::new())
        .await
        .expect("sync");

    let inconsistent = |r: Result<ClassicJoinResponse, Error>| matches!(r, Err(Error::InconsistentGroupProtocol(_)));
    let mut other_type = request(&g, "", "m");
    other_type.protocol_type = "connect".into();
    assert!(inconsistent(b.classic_groups().join(&other_type).await));
    let mut no_common = request(&g, "", "m");
    no_common.protocols = vec![("sticky".into(), b"s".to_vec())];
    assert!(inconsistent(b.classic_groups().join(&no_common).await));
    let mut none = request(&g, "", "m");
    none.protocols.clear();
    assert!(inconsistent(b.classic_groups().join(&none).await));

    // A second member supporting only roundrobin: the group switches to
    // the one protocol both support, and the leader sees its metadata.
    let mut second = request(&g, "", "m");
    second.protocols = vec![("roundrobin".into(), b"rr-2".to_vec())];
    let second = tokio::spawn({
        let b = b.clone();
        async move { b.classic_groups().join(&second).await }
    });
    heartbeat_until_rebalance(b, &g, &a, Duration::from_secs(2)).await;
    let joined = vec![
        b.classic_groups()
            .join(&request_with(&g, &a.member_id, &first.protocols))
            .await
            .expect("rejoin"),
        second.await.expect("task").expect("second join"),
    ];
    assert!(joined.iter().all(|r| r.protocol_name == "roundrobin"), "{joined:?}");
    let leader = joined.iter().find(|r| r.member_id == r.leader).expect("leader");
    let mut metadata: Vec<Vec<u8>> = leader.members.iter().map(|m| m.metadata.clone()).collect();
    metadata.sort();
    assert_eq!(metadata, vec![b"rr-2".to_vec(), b"rr-meta".to_vec()]);

    // The library's own coordinator stays out of a live Kafka group...
    let opts = JoinOptions::default();
    let lib = b.groups().join(&g, None, std::slice::from_ref(&t), &opts).await;
    assert!(matches!(lib, Err(Error::InconsistentGroupProtocol(_))), "{lib:?}");
    assert!(matches!(
        b.groups().heartbeat(&g, &a.member_id, joined[0].generation).await,
        Err(Error::InconsistentGroupProtocol(_))
    ));
    // ... and Kafka clients out of a live library group.
    let lib_group = group("library");
    let m = b
        .groups()
        .join(&lib_group, None, std::slice::from_ref(&t), &opts)
        .await
        .expect("library join");
    assert!(inconsistent(
        b.classic_groups().join(&request(&lib_group, "", "m")).await
    ));
    assert!(matches!(
        b.classic_groups()
            .commit(&lib_group, &m.member_id, m.generation, &[commit(&t, 0, 1, "")])
            .await,
        Err(Error::InconsistentGroupProtocol(_))
    ));
    let d = b.classic_groups().describe(&lib_group).await.expect("describe");
    assert_eq!((d.protocol_type.as_str(), d.state.as_str()), ("pgbroker", "Stable"));
    assert_eq!(
        b.groups().describe(&g).await.expect("describe").protocol_type,
        "consumer"
    );

    // Once the Kafka members are gone the library may take the group over.
    let ids: Vec<(String, Option<String>)> = joined.iter().map(|r| (r.member_id.clone(), None)).collect();
    assert!(b
        .classic_groups()
        .leave(&g, &ids)
        .await
        .expect("leave")
        .iter()
        .all(Result::is_ok));
    let taken = b
        .groups()
        .join(&g, None, std::slice::from_ref(&t), &opts)
        .await
        .expect("library join on an empty classic group");
    assert_eq!(taken.assignment.len(), 2);
    let listed = b.classic_groups().list().await.expect("list");
    assert!(
        listed
            .iter()
            .all(|l| l.protocol_type == "pgbroker" && l.state == "Stable"),
        "{listed:?}"
    );
}

fn request_with(g: &GroupId, member_id: &str, protocols: &[(String, Vec<u8>)]) -> ClassicJoinRequest {
    ClassicJoinRequest {
        protocols: protocols.to_vec(),
        ..request(g, member_id, "")
    }
}

#[tokio::test]
async fn static_member_replaced_by_a_new_instance_is_fenced() {
    let db = TestDb::new().await;
    let g = group("static");
    let b = &db.broker;
    let mut r = request(&g, "", "m");
    r.group_instance_id = Some("instance-1".into());
    r.require_known_member_id = true;
    let first = b
        .classic_groups()
        .join(&r)
        .await
        .expect("static members need no second round");
    assert!(first.member_id.starts_with("instance-1-"));
    assert_eq!(first.members[0].group_instance_id.as_deref(), Some("instance-1"));
    b.classic_groups()
        .sync(&g, &first.member_id, first.generation, Some("instance-1"), Vec::new())
        .await
        .expect("sync");
    let second = b.classic_groups().join(&r).await.expect("new instance");
    assert_ne!(second.member_id, first.member_id);
    assert!(matches!(
        b.classic_groups()
            .heartbeat(&g, &first.member_id, second.generation, Some("instance-1"))
            .await,
        Err(Error::FencedInstanceId { .. })
    ));
    // Leave by instance id alone.
    let left = b
        .classic_groups()
        .leave(&g, &[(String::new(), Some("instance-1".into()))])
        .await
        .expect("leave");
    assert!(left[0].is_ok(), "{left:?}");
    assert_eq!(b.classic_groups().describe(&g).await.expect("d").state, "Empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_members_on_two_brokers() {
    let db = TestDb::new().await;
    let other = db.other_broker().await;
    let brokers = [db.broker.clone(), other];
    let g = group("crowd");
    let joins = (0..10)
        .map(|i| (brokers[i % 2].clone(), request(&g, "", &format!("meta-{i}"))))
        .collect();
    let mut joined = join_all(joins).await;
    // Joins that arrive after the first generation formed (a slow machine
    // can spread ten of them over the initial delay) start another one;
    // members of the first learn of it and rejoin, as clients do when a
    // heartbeat says a rebalance is in progress. Once all ten are known,
    // one rejoin round puts them all in one generation.
    for _ in 0..3 {
        if joined.iter().all(|r| r.generation == joined[0].generation) {
            break;
        }
        let tasks: Vec<_> = joined
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (b, g, id) = (brokers[i % 2].clone(), g.clone(), r.member_id.clone());
                tokio::spawn(async move {
                    let meta = format!("meta-{i}");
                    match b.classic_groups().join(&request(&g, &id, &meta)).await {
                        // Removed for not rejoining in time: join afresh,
                        // as a client does on UNKNOWN_MEMBER_ID.
                        Err(Error::UnknownMember { .. }) => b.classic_groups().join(&request(&g, "", &meta)).await,
                        other => other,
                    }
                })
            })
            .collect();
        let mut next = Vec::new();
        for t in tasks {
            next.push(t.await.expect("task").expect("rejoin"));
        }
        joined = next;
    }
    assert!(
        joined.iter().all(|r| r.generation == joined[0].generation),
        "{joined:?}"
    );
    let leader = joined.iter().find(|r| r.member_id == r.leader).expect("leader");
    assert_eq!(leader.members.len(), 10);
    let got = sync_all(&brokers, &g, &joined).await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(m, bytes)| bytes == &assigned(m)));
    // Everyone rejoins at once (as after a subscription change).
    let rejoins = joined
        .iter()
        .enumerate()
        .map(|(i, r)| (brokers[(i + 1) % 2].clone(), request(&g, &r.member_id, "changed")))
        .collect();
    let again = join_all(rejoins).await;
    assert!(
        again.iter().all(|r| r.generation == joined[0].generation + 1),
        "{again:?}"
    );
    assert_eq!(sync_all(&brokers, &g, &again).await.len(), 10);
}
