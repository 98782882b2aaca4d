//! Share groups (KIP-932) against real Postgres: membership and epochs,
//! acquisition under locks, accept/release/reject, the delivery count
//! limit, lock expiry, members leaving, auto offset reset and group
//! settings.

use std::collections::BTreeSet;
use std::time::Duration;

use pgbroker::groups::share::{ack, AckBatch, ShareHeartbeat, ShareSettings, LEAVE_EPOCH};
use pgbroker::{Broker, Error, GroupId, Record, TopicName};
use pgbroker_testkit::db::{partitions, TestDb};

fn group(name: &str) -> GroupId {
    GroupId::new(name).expect("group")
}

fn join(g: &GroupId, member: &str, topics: &[&TopicName]) -> ShareHeartbeat {
    ShareHeartbeat {
        group: g.clone(),
        member_id: member.to_string(),
        member_epoch: 0,
        rack_id: None,
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        subscribed_topics: Some(topics.iter().map(|t| (*t).clone()).collect()),
    }
}

fn beat(g: &GroupId, member: &str, epoch: i32) -> ShareHeartbeat {
    ShareHeartbeat {
        member_epoch: epoch,
        subscribed_topics: None,
        ..join(g, member, &[])
    }
}

async fn produce(b: &Broker, t: &TopicName, partition: i32, n: usize) {
    let records: Vec<Record> = (0..n).map(|i| Record::from_value(format!("r{i}"))).collect();
    b.streams()
        .produce(t, Some(partition), &records)
        .await
        .expect("produce");
}

fn offsets(a: &pgbroker::groups::share::Acquisition) -> Vec<i64> {
    a.ranges.iter().flat_map(|r| r.first..=r.last).collect()
}

fn one(first: i64, last: i64, kind: i8) -> AckBatch {
    AckBatch {
        first,
        last,
        types: vec![kind],
    }
}

async fn earliest(b: &Broker, g: &GroupId) -> ShareSettings {
    b.share_groups()
        .alter_configs(g, &[("share.auto.offset.reset".into(), Some("earliest".into()))])
        .await
        .expect("set earliest");
    b.share_groups().settings(g).await.expect("settings")
}

#[tokio::test]
async fn every_member_gets_every_partition_and_epochs_are_checked() {
    let db = TestDb::new().await;
    let t = db.topic("work", partitions(2)).await;
    let g = group("sg");
    let sg = db.broker.share_groups();
    let a = sg.heartbeat(&join(&g, "a", &[&t])).await.expect("a joins");
    assert_eq!(a.member_epoch, 1);
    let parts = a.assignment.expect("assignment on join");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].partitions, vec![0, 1]);
    let b = sg.heartbeat(&join(&g, "b", &[&t])).await.expect("b joins");
    assert_eq!(b.member_epoch, 2);
    assert_eq!(b.assignment.expect("b's assignment")[0].partitions, vec![0, 1]);
    // a is behind the group epoch: it moves with the same partitions.
    let a2 = sg.heartbeat(&beat(&g, "a", 1)).await.expect("a beats");
    assert_eq!(a2.member_epoch, 2);
    let a3 = sg.heartbeat(&beat(&g, "a", 2)).await.expect("a steady");
    assert_eq!((a3.member_epoch, a3.assignment), (2, None));
    assert!(matches!(
        sg.heartbeat(&beat(&g, "a", 7)).await,
        Err(Error::FencedMemberEpoch { .. })
    ));
    assert!(matches!(
        sg.heartbeat(&beat(&g, "nobody", 2)).await,
        Err(Error::UnknownMember { .. })
    ));
    db.broker.topics().add_partitions(&t, 1).await.expect("grow");
    let a4 = sg.heartbeat(&beat(&g, "a", 2)).await.expect("a sees three");
    assert_eq!(a4.assignment.expect("new assignment")[0].partitions, vec![0, 1, 2]);
    let d = sg.describe(&g).await.expect("describe");
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members.len(), 2);
    let left = sg.heartbeat(&beat(&g, "b", LEAVE_EPOCH)).await.expect("b leaves");
    assert_eq!(left.member_epoch, LEAVE_EPOCH);
    assert_eq!(sg.describe(&g).await.expect("describe").members.len(), 1);
    assert!(sg.heartbeat(&join(&g, "c", &[])).await.is_err(), "a join needs topics");
}

#[tokio::test]
async fn records_are_acquired_once_and_settled_by_their_holder() {
    let db = TestDb::new().await;
    let t = db.topic("jobs", partitions(1)).await;
    let g = group("workers");
    let sg = db.broker.share_groups();
    let s = earliest(&db.broker, &g).await;
    sg.heartbeat(&join(&g, "a", &[&t])).await.expect("a");
    sg.heartbeat(&join(&g, "b", &[&t])).await.expect("b");
    produce(&db.broker, &t, 0, 10).await;
    let got_a = sg.acquire(&g, "a", &t, 0, 6, &s).await.expect("a acquires");
    assert_eq!(offsets(&got_a), (0..6).collect::<Vec<_>>());
    assert!(got_a.ranges.iter().all(|r| r.delivery_count == 1));
    let got_b = sg.acquire(&g, "b", &t, 0, 100, &s).await.expect("b acquires");
    assert_eq!(offsets(&got_b), (6..10).collect::<Vec<_>>());
    assert_eq!(got_b.caught_up_at, Some(10));
    // b may not settle a's records; nothing of a refused batch applies.
    let refused = sg.acknowledge(&g, "b", &t, 0, &[one(5, 7, ack::ACCEPT)], &s).await;
    assert!(
        matches!(refused, Err(Error::InvalidRecordState { offset: 5, .. })),
        "{refused:?}"
    );
    // A member that joins again (after a fenced heartbeat) keeps what it holds.
    sg.heartbeat(&join(&g, "a", &[&t])).await.expect("a rejoins");
    // a accepts 0-1, releases 2, rejects 3; 4-5 stay held.
    let batch = AckBatch {
        first: 0,
        last: 3,
        types: vec![ack::ACCEPT, ack::ACCEPT, ack::RELEASE, ack::REJECT],
    };
    sg.acknowledge(&g, "a", &t, 0, &[batch], &s).await.expect("a settles");
    let w = sg.in_flight(&g, &t, 0).await.expect("window").expect("exists");
    assert_eq!(w.start, 2, "0 and 1 are done");
    let state = |o: i64| w.records.iter().find(|r| r.offset == o).map(|r| r.state);
    assert_eq!(state(2), Some(0), "released: available");
    assert_eq!(state(3), Some(4), "rejected: archived");
    assert_eq!(state(7), Some(1), "b's record untouched by the refused batch");
    // Settling twice is refused.
    assert!(sg
        .acknowledge(&g, "a", &t, 0, &[one(0, 0, ack::ACCEPT)], &s)
        .await
        .is_err());
    // The released record comes back, delivered a second time.
    let again = sg.acquire(&g, "b", &t, 0, 100, &s).await.expect("b again");
    assert_eq!(offsets(&again), vec![2]);
    assert_eq!(again.ranges[0].delivery_count, 2);
    sg.acknowledge(&g, "b", &t, 0, &[one(2, 2, ack::ACCEPT), one(6, 9, ack::ACCEPT)], &s)
        .await
        .expect("b accepts");
    sg.acknowledge(&g, "a", &t, 0, &[one(4, 5, ack::ACCEPT)], &s)
        .await
        .expect("a accepts");
    let w = sg.in_flight(&g, &t, 0).await.expect("window").expect("exists");
    assert_eq!(
        (w.start, w.end, w.records.len()),
        (10, 10, 0),
        "everything done and forgotten"
    );
}

#[tokio::test]
async fn the_delivery_count_limit_archives_poison_records() {
    let db = TestDb::new().await;
    let t = db.topic("poison", partitions(1)).await;
    let g = group("careful");
    let sg = db.broker.share_groups();
    earliest(&db.broker, &g).await;
    sg.alter_configs(&g, &[("share.delivery.count.limit".into(), Some("3".into()))])
        .await
        .expect("limit 3");
    let s = sg.settings(&g).await.expect("settings");
    assert_eq!(s.delivery_count_limit, 3);
    sg.heartbeat(&join(&g, "a", &[&t])).await.expect("a");
    produce(&db.broker, &t, 0, 2).await;
    for round in 1..=3 {
        let got = sg.acquire(&g, "a", &t, 0, 1, &s).await.expect("acquire");
        assert_eq!(offsets(&got), vec![0], "round {round}");
        assert_eq!(got.ranges[0].delivery_count, round);
        sg.acknowledge(&g, "a", &t, 0, &[one(0, 0, ack::RELEASE)], &s)
            .await
            .expect("release");
    }
    let next = sg.acquire(&g, "a", &t, 0, 10, &s).await.expect("acquire");
    assert_eq!(offsets(&next), vec![1], "offset 0 is archived after 3 deliveries");
    let w = sg.in_flight(&g, &t, 0).await.expect("window").expect("exists");
    assert_eq!(w.start, 1);
}

#[tokio::test]
async fn expired_locks_and_departed_members_put_records_back() {
    let db = TestDb::new().await;
    let t = db.topic("leases", partitions(1)).await;
    let g = group("crashy");
    let sg = db.broker.share_groups();
    earliest(&db.broker, &g).await;
    sg.alter_configs(&g, &[("share.record.lock.duration.ms".into(), Some("1000".into()))])
        .await
        .expect("short locks");
    let s = sg.settings(&g).await.expect("settings");
    sg.heartbeat(&join(&g, "a", &[&t])).await.expect("a");
    let b = sg.heartbeat(&join(&g, "b", &[&t])).await.expect("b");
    produce(&db.broker, &t, 0, 4).await;
    assert_eq!(
        offsets(&sg.acquire(&g, "a", &t, 0, 2, &s).await.expect("a")),
        vec![0, 1]
    );
    assert_eq!(
        offsets(&sg.acquire(&g, "b", &t, 0, 2, &s).await.expect("b")),
        vec![2, 3]
    );
    assert!(sg
        .acquire(&g, "b", &t, 0, 10, &s)
        .await
        .expect("nothing")
        .ranges
        .is_empty());
    // b leaves: its records come back at once.
    sg.heartbeat(&beat(&g, "b", b.member_epoch)).await.ok();
    sg.heartbeat(&beat(&g, "b", LEAVE_EPOCH)).await.expect("b leaves");
    let c = sg.acquire(&g, "a", &t, 0, 10, &s).await.expect("a takes b's");
    assert_eq!(offsets(&c), vec![2, 3]);
    assert!(c.ranges.iter().all(|r| r.delivery_count == 2));
    // a stops settling; after the lock duration everything is available.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(
        sg.acknowledge(&g, "a", &t, 0, &[one(0, 0, ack::ACCEPT)], &s)
            .await
            .is_err(),
        "an expired lock cannot be settled"
    );
    sg.heartbeat(&join(&g, "d", &[&t])).await.expect("d");
    let d = sg.acquire(&g, "d", &t, 0, 10, &s).await.expect("d takes all");
    assert_eq!(offsets(&d), vec![0, 1, 2, 3]);
    let counts: BTreeSet<i16> = d.ranges.iter().map(|r| r.delivery_count).collect();
    assert_eq!(counts, BTreeSet::from([2, 3]));
}

#[tokio::test]
async fn latest_starts_at_the_high_watermark_and_bad_settings_change_nothing() {
    let db = TestDb::new().await;
    let t = db.topic("late", partitions(1)).await;
    let g = group("latecomer");
    let sg = db.broker.share_groups();
    produce(&db.broker, &t, 0, 5).await;
    let s = sg.settings(&g).await.expect("defaults");
    assert_eq!(s, ShareSettings::default());
    sg.heartbeat(&join(&g, "a", &[&t])).await.expect("a");
    assert!(sg
        .acquire(&g, "a", &t, 0, 10, &s)
        .await
        .expect("none")
        .ranges
        .is_empty());
    produce(&db.broker, &t, 0, 2).await;
    assert_eq!(
        offsets(&sg.acquire(&g, "a", &t, 0, 10, &s).await.expect("new")),
        vec![5, 6]
    );
    let bad = sg
        .alter_configs(
            &g,
            &[
                ("share.delivery.count.limit".into(), Some("4".into())),
                ("share.record.lock.duration.ms".into(), Some("soon".into())),
            ],
        )
        .await;
    assert!(matches!(bad, Err(Error::Invalid { .. })), "{bad:?}");
    assert!(
        sg.configs(&g).await.expect("configs").iter().all(|c| c.is_default),
        "nothing applied"
    );
    assert!(sg
        .alter_configs(&g, &[("share.secret".into(), Some("1".into()))])
        .await
        .is_err());
    assert!(sg
        .acquire(&g, "a", &TopicName::new("missing").expect("name"), 0, 1, &s)
        .await
        .is_err());
}

/// Appends `values` as one batch of an ongoing transaction of `id`.
async fn in_txn(b: &Broker, id: &str, t: &TopicName, values: &[&str]) -> (i64, i16) {
    let txn = b.transactions();
    let (pid, epoch) = txn.init_producer(id, 60_000, None).await.expect("init");
    txn.add_partitions(id, pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    let records: Vec<Record> = values.iter().map(|v| Record::from_value(*v)).collect();
    let batch = pgbroker::streams::ProducerBatch {
        producer_id: pid,
        epoch,
        base_sequence: 0,
    };
    txn.produce(id, t, 0, &records, batch).await.expect("produce");
    (pid, epoch)
}

#[tokio::test]
async fn read_committed_stops_at_the_stable_offset_and_never_delivers_aborted_records() {
    let db = TestDb::new().await;
    let t = db.topic("work", partitions(1)).await;
    let (committed, uncommitted) = (group("rc"), group("ru"));
    let sg = db.broker.share_groups();
    let ru = earliest(&db.broker, &uncommitted).await;
    sg.alter_configs(
        &committed,
        &[("share.isolation.level".into(), Some("read_committed".into()))],
    )
    .await
    .expect("read_committed");
    let rc = earliest(&db.broker, &committed).await;
    for g in [&committed, &uncommitted] {
        sg.heartbeat(&join(g, "m", &[&t])).await.expect("join");
    }
    assert_eq!(rc.isolation, pgbroker::groups::share::ShareIsolation::ReadCommitted);
    let txn = db.broker.transactions();
    // 0: plain; 1-2: aborted; 3: its marker; 4: plain; 5-6: open; 7: plain.
    produce(&db.broker, &t, 0, 1).await;
    let (pid, epoch) = in_txn(&db.broker, "gone", &t, &["a1", "a2"]).await;
    txn.end("gone", pid, epoch, false, None).await.expect("abort");
    produce(&db.broker, &t, 0, 1).await;
    let (open_pid, open_epoch) = in_txn(&db.broker, "open", &t, &["o1", "o2"]).await;
    produce(&db.broker, &t, 0, 1).await;

    // Up to the open transaction: the plain records and the abort marker
    // (acknowledged by the client as a gap), not the aborted records.
    let a = sg.acquire(&committed, "m", &t, 0, 100, &rc).await.expect("acquire");
    assert_eq!(offsets(&a), vec![0, 3, 4]);
    assert_eq!(a.caught_up_at, Some(8), "waits for a write past the high watermark");
    let flight = sg
        .in_flight(&committed, &t, 0)
        .await
        .expect("in flight")
        .expect("window");
    let archived: Vec<i64> = flight
        .records
        .iter()
        .filter(|r| r.state == 4)
        .map(|r| r.offset)
        .collect();
    assert_eq!(archived, vec![1, 2], "the aborted records are archived");
    // read_uncommitted takes everything up to the high watermark.
    let u = sg.acquire(&uncommitted, "m", &t, 0, 100, &ru).await.expect("acquire");
    assert_eq!(offsets(&u), (0..8).collect::<Vec<_>>());

    // The commit moves the stable offset past the open records and the
    // plain one behind them; its marker comes with them.
    txn.end("open", open_pid, open_epoch, true, None).await.expect("commit");
    let b = sg.acquire(&committed, "m", &t, 0, 100, &rc).await.expect("acquire");
    assert_eq!(offsets(&b), vec![5, 6, 7, 8]);
    assert_eq!(b.caught_up_at, Some(9));
    // Nothing of the aborted transaction comes back when all is settled.
    sg.acknowledge(
        &committed,
        "m",
        &t,
        0,
        &[one(0, 0, ack::ACCEPT), one(3, 8, ack::ACCEPT)],
        &rc,
    )
    .await
    .expect("ack");
    let c = sg.acquire(&committed, "m", &t, 0, 100, &rc).await.expect("acquire");
    assert!(c.ranges.is_empty(), "{c:?}");
}
