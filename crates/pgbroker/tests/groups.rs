//! Consumer groups: membership, generations, assignment, rebalance on join,
//! leave and session timeout, and fencing of stale members.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use pgbroker::groups::{JoinOptions, OffsetCommit, ResetTo, Strategy};
use pgbroker::streams::OffsetReset;
use pgbroker::{Broker, BrokerConfig, Consumer, ConsumerConfig, Error, GroupId, Record, TopicName};
use pgbroker_testkit::db::{partitions, TestDb};

fn consumer_config(topic: &TopicName, group: &GroupId, session: Duration) -> ConsumerConfig {
    ConsumerConfig {
        join: JoinOptions {
            client_id: "test".into(),
            session_timeout: session,
            strategy: Strategy::Sticky,
        },
        reset: OffsetReset::Earliest,
        max_records: 5,
        ..ConsumerConfig::new(vec![topic.clone()], Some(group.clone()))
    }
}

async fn produce_round(broker: &Broker, topic: &TopicName, round: usize) {
    for p in 0..6 {
        let records: Vec<Record> = (0..10)
            .map(|i| Record::from_value(format!("r{round}-p{p}-{i}")))
            .collect();
        broker
            .streams()
            .produce(topic, Some(p), &records)
            .await
            .expect("produce");
    }
}

fn values(records: &[pgbroker::streams::ConsumedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.record.value.clone().expect("value").to_vec()).expect("utf8"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn dead_member_partitions_move_and_it_is_fenced() {
    let db = TestDb::new().await;
    let topic = db.topic("orders", partitions(6)).await;
    let group = GroupId::new("billing").expect("group");
    // A second broker with its own pool stands for a second pgbroker process.
    let other = Broker::connect(BrokerConfig {
        database_url: pgbroker_testkit::database_url(),
        schema: db.schema.clone(),
        ..BrokerConfig::default()
    })
    .await
    .expect("second broker");
    produce_round(&db.broker, &topic, 0).await;

    // Long enough that A and B, busy in this one task, never miss theirs
    // on a stalled machine; C's runs out after it goes silent.
    let session = Duration::from_secs(4);
    let mut a = Consumer::new(db.broker.clone(), consumer_config(&topic, &group, session))
        .await
        .expect("a");
    let mut b = Consumer::new(other.clone(), consumer_config(&topic, &group, session))
        .await
        .expect("b");
    let mut c = Consumer::new(db.broker.clone(), consumer_config(&topic, &group, session))
        .await
        .expect("c");
    // Let A and B learn of the last join at their next heartbeat.
    tokio::time::sleep(session / 3 + Duration::from_millis(100)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for consumer in [&mut a, &mut b, &mut c] {
        let got = consumer.poll(Duration::from_secs(2)).await.expect("poll");
        assert!(!got.is_empty());
        consumer.commit().await.expect("commit");
        for v in values(&got) {
            *seen.entry(v).or_default() += 1;
        }
    }
    let owned: Vec<BTreeSet<i32>> = [&a, &b, &c]
        .iter()
        .map(|x| x.assignment().iter().map(|tp| tp.partition).collect())
        .collect();
    assert!(
        owned.iter().all(|o| o.len() == 2),
        "6 partitions over 3 members: {owned:?}"
    );
    let all: BTreeSet<i32> = owned.iter().flatten().copied().collect();
    assert_eq!(all.len(), 6);

    // C reads one more batch, never commits it, and goes silent.
    let c_member = c.membership().cloned().expect("member");
    let c_partitions = owned[2].clone();
    let uncommitted: BTreeSet<String> = values(&c.poll(Duration::from_secs(2)).await.expect("poll"))
        .into_iter()
        .collect();
    assert!(!uncommitted.is_empty());
    for v in &uncommitted {
        *seen.entry(v.clone()).or_default() += 1;
    }
    drop(c);
    produce_round(&db.broker, &topic, 1).await;

    // A and B keep consuming and committing until every record was seen.
    let total = 120;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(Instant::now() < deadline, "only {} of {total} records seen", seen.len());
        for consumer in [&mut a, &mut b] {
            let got = consumer.poll(Duration::from_millis(100)).await.expect("poll");
            consumer.commit().await.expect("commit");
            for v in values(&got) {
                *seen.entry(v).or_default() += 1;
            }
        }
    }
    // Nothing lost, and the only duplicates are what C read after its last
    // commit: the new owners started from C's committed offsets.
    let duplicates: BTreeSet<String> = seen.iter().filter(|(_, n)| **n > 1).map(|(v, _)| v.clone()).collect();
    assert_eq!(duplicates, uncommitted);
    assert!(seen.values().all(|n| *n <= 2));
    let survivors: BTreeSet<i32> = a
        .assignment()
        .iter()
        .chain(b.assignment().iter())
        .map(|tp| tp.partition)
        .collect();
    assert!(c_partitions.is_subset(&survivors), "C's partitions moved to A and B");

    // C's late commit, from its old generation, is rejected and changes nothing.
    let before = db.broker.groups().offsets(&group, &topic).await.expect("offsets");
    let stale = OffsetCommit {
        topic: topic.clone(),
        partition: *c_partitions.iter().next().expect("partition"),
        offset: 0,
        metadata: None,
    };
    let late = db
        .broker
        .groups()
        .commit(&group, Some((&c_member.member_id, c_member.generation)), &[stale])
        .await;
    assert!(matches!(late, Err(Error::UnknownMember { .. })), "{late:?}");
    assert_eq!(
        db.broker.groups().offsets(&group, &topic).await.expect("offsets"),
        before
    );

    a.close().await.expect("close a");
    b.close().await.expect("close b");
    let d = db.broker.groups().describe(&group).await.expect("describe");
    assert_eq!(d.state, "Empty");
    assert!(d.partitions.iter().all(|p| p.lag == 0), "{:?}", d.partitions);
}

#[tokio::test]
async fn membership_generations_and_fencing() {
    let db = TestDb::new().await;
    let t = db.topic("events", partitions(4)).await;
    let g = GroupId::new("g").expect("group");
    let b = &db.broker;
    let opts = JoinOptions {
        strategy: Strategy::Range,
        ..JoinOptions::default()
    };
    let m1 = b
        .groups()
        .join(&g, None, std::slice::from_ref(&t), &opts)
        .await
        .expect("join 1");
    assert_eq!(m1.assignment.len(), 4);
    let m2 = b
        .groups()
        .join(&g, None, std::slice::from_ref(&t), &opts)
        .await
        .expect("join 2");
    assert!(m2.generation > m1.generation);
    // m1 learns of the rebalance at its heartbeat and rejoins.
    assert!(matches!(
        b.groups().heartbeat(&g, &m1.member_id, m1.generation).await,
        Err(Error::RebalanceInProgress { .. })
    ));
    let m1b = b
        .groups()
        .join(&g, Some(&m1.member_id), std::slice::from_ref(&t), &opts)
        .await
        .expect("rejoin");
    assert_eq!(
        m1b.generation, m2.generation,
        "a rejoin without change does not rebalance"
    );
    let mut ids = [m1.member_id.clone(), m2.member_id.clone()];
    ids.sort();
    let first = if ids[0] == m1.member_id { &m1b } else { &m2 };
    assert_eq!(
        first.assignment.iter().map(|p| p.partition).collect::<Vec<_>>(),
        vec![0, 1],
        "range"
    );
    b.groups()
        .heartbeat(&g, &m1.member_id, m1b.generation)
        .await
        .expect("heartbeat");
    assert!(matches!(
        b.groups().heartbeat(&g, "nobody", m1b.generation).await,
        Err(Error::UnknownMember { .. })
    ));

    // Fencing of commits.
    let commit = |p: i32| OffsetCommit {
        topic: t.clone(),
        partition: p,
        offset: 1,
        metadata: Some("m".into()),
    };
    let mine = m1b.assignment[0].partition;
    let theirs = m2.assignment[0].partition;
    b.groups()
        .commit(&g, Some((&m1.member_id, m1b.generation)), &[commit(mine)])
        .await
        .expect("own partition");
    assert!(matches!(
        b.groups()
            .commit(&g, Some((&m1.member_id, m1b.generation)), &[commit(theirs)])
            .await,
        Err(Error::NotAssigned { .. })
    ));
    assert!(matches!(
        b.groups()
            .commit(&g, Some((&m1.member_id, m1.generation)), &[commit(mine)])
            .await,
        Err(Error::RebalanceInProgress { .. })
    ));
    assert!(matches!(
        b.groups().commit(&g, None, &[commit(mine)]).await,
        Err(Error::GroupNotEmpty(_))
    ));
    assert!(matches!(
        b.groups().reset_offsets(&g, &t, ResetTo::Earliest).await,
        Err(Error::GroupNotEmpty(_))
    ));
    assert!(matches!(b.groups().delete(&g).await, Err(Error::GroupNotEmpty(_))));
    let committed = b.groups().offsets(&g, &t).await.expect("offsets");
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].metadata.as_deref(), Some("m"));

    // Leaving hands the partitions over at once.
    b.groups().leave(&g, &m2.member_id).await.expect("leave");
    let after = b
        .groups()
        .join(&g, Some(&m1.member_id), std::slice::from_ref(&t), &opts)
        .await
        .expect("rejoin");
    assert_eq!(after.assignment.len(), 4);
    assert!(after.generation > m2.generation);
    b.groups().leave(&g, &m1.member_id).await.expect("leave");

    // With no members, tools may move offsets.
    b.streams()
        .produce(&t, Some(0), &[Record::from_value("a"), Record::from_value("b")])
        .await
        .expect("produce");
    let reset = b.groups().reset_offsets(&g, &t, ResetTo::Latest).await.expect("reset");
    assert_eq!(reset.iter().map(|c| c.offset).collect::<Vec<_>>(), vec![2, 0, 0, 0]);
    let reset = b
        .groups()
        .reset_offsets(&g, &t, ResetTo::Offset(1))
        .await
        .expect("reset");
    assert_eq!(reset[0].offset, 1);
    let desc = b.groups().describe(&g).await.expect("describe");
    assert_eq!(
        desc.partitions.iter().map(|p| p.lag).collect::<Vec<_>>(),
        vec![1, 0, 0, 0]
    );
    b.groups().delete(&g).await.expect("delete");
    assert!(matches!(b.groups().describe(&g).await, Err(Error::UnknownGroup(_))));
}

#[tokio::test]
async fn adding_partitions_rebalances() {
    let db = TestDb::new().await;
    let t = db.topic("grow", partitions(2)).await;
    let g = GroupId::new("grow-group").expect("group");
    let opts = JoinOptions::default();
    let m = db
        .broker
        .groups()
        .join(&g, None, std::slice::from_ref(&t), &opts)
        .await
        .expect("join");
    assert_eq!(m.assignment.len(), 2);
    db.broker.topics().add_partitions(&t, 2).await.expect("add");
    let again = db
        .broker
        .groups()
        .join(&g, Some(&m.member_id), std::slice::from_ref(&t), &opts)
        .await
        .expect("rejoin");
    assert_eq!(again.assignment.len(), 4);
    assert!(again.generation > m.generation);
    let by_member: BTreeMap<_, _> = [(again.member_id.clone(), again.assignment.len())]
        .into_iter()
        .collect();
    assert_eq!(by_member.len(), 1);
}

#[tokio::test]
async fn lag_of_all_groups_in_one_statement_matches_describe() {
    let db = TestDb::new().await;
    let b = &db.broker;
    let a = db.topic("lag-a", partitions(2)).await;
    let t = db.topic("lag-b", partitions(3)).await;
    let produce = |topic: &TopicName, p: i32, n: usize| {
        let records: Vec<Record> = (0..n).map(|i| Record::from_value(format!("v{i}"))).collect();
        let topic = topic.clone();
        async move { b.streams().produce(&topic, Some(p), &records).await.expect("produce") }
    };
    produce(&a, 0, 5).await;
    produce(&a, 1, 3).await;
    produce(&t, 2, 7).await;
    let commit = |topic: &TopicName, partition: i32, offset: i64| OffsetCommit {
        topic: topic.clone(),
        partition,
        offset,
        metadata: None,
    };
    let (g1, g2, g3) = (
        GroupId::new("lag-g1").expect("group"),
        GroupId::new("lag-g2").expect("group"),
        GroupId::new("lag-g3").expect("group"),
    );
    // g1: offsets only; g2: a member only; g3: offsets on one topic, a
    // member subscribed to the other.
    b.groups().commit(&g1, None, &[commit(&a, 0, 2)]).await.expect("commit");
    b.groups().commit(&g3, None, &[commit(&a, 1, 3)]).await.expect("commit");
    let opts = JoinOptions::default();
    b.groups()
        .join(&g2, None, std::slice::from_ref(&t), &opts)
        .await
        .expect("join");
    b.groups()
        .join(&g3, None, std::slice::from_ref(&t), &opts)
        .await
        .expect("join");

    let all = b.groups().lag_all().await.expect("lag_all");
    let got: Vec<(&str, &str, i32, i64)> = all
        .iter()
        .map(|l| (l.group.as_str(), l.topic.as_str(), l.partition, l.lag))
        .collect();
    assert_eq!(
        got,
        vec![
            ("lag-g1", "lag-a", 0, 3),
            ("lag-g1", "lag-a", 1, 3),
            ("lag-g2", "lag-b", 0, 0),
            ("lag-g2", "lag-b", 1, 0),
            ("lag-g2", "lag-b", 2, 7),
            ("lag-g3", "lag-a", 0, 5),
            ("lag-g3", "lag-a", 1, 0),
            ("lag-g3", "lag-b", 0, 0),
            ("lag-g3", "lag-b", 1, 0),
            ("lag-g3", "lag-b", 2, 7),
        ]
    );
    // The same figures as describing each group in turn.
    for g in b.groups().list().await.expect("list") {
        let described: Vec<(String, i32, i64)> = b
            .groups()
            .describe(&g)
            .await
            .expect("describe")
            .partitions
            .iter()
            .map(|p| (p.topic.to_string(), p.partition, p.lag))
            .collect();
        let listed: Vec<(String, i32, i64)> = all
            .iter()
            .filter(|l| l.group == g)
            .map(|l| (l.topic.to_string(), l.partition, l.lag))
            .collect();
        assert_eq!(listed, described, "{g}");
    }
}
