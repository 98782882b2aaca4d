//! `pgbroker txn ...`: a hanging transaction is listed with its partitions,
//! described, and aborted (its epoch bumped, its records skipped by
//! read_committed readers); bad input fails with a clear message.

use pgbroker::streams::ProducerBatch;
use pgbroker::{Broker, BrokerConfig, Record, TopicName};
use pgbroker_testkit::cli::Env;

#[test]
fn list_describe_abort() {
    let env = Env::new();
    env.ok(&["topic", "create", "out", "--partitions", "2"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (pid, epoch) = rt.block_on(async {
        let broker = Broker::connect(BrokerConfig {
            database_url: env.url.clone(),
            schema: env.schema.clone(),
            pool_size: 4,
            ..BrokerConfig::default()
        })
        .await
        .expect("connect");
        let t = TopicName::new("out").expect("name");
        let txn = broker.transactions();
        let (pid, epoch) = txn.init_producer("stuck", 60_000, None).await.expect("init");
        txn.add_partitions("stuck", pid, epoch, &[(t.clone(), 1)])
            .await
            .expect("add");
        let rec = Record {
            key: None,
            value: Some(b"v".to_vec().into()),
            headers: vec![],
            timestamp: None,
        };
        let batch = ProducerBatch {
            producer_id: pid,
            epoch,
            base_sequence: 0,
        };
        txn.produce("stuck", &t, 1, &[rec], batch).await.expect("produce");
        assert_eq!(txn.last_stable_offset(&t, 1).await.expect("lso"), 0);
        (pid, epoch)
    });

    let listing = env.json(&["txn", "list", "--format", "json"]);
    let one = &listing.as_array().expect("array")[0];
    assert_eq!(one["transactional_id"], "stuck");
    assert_eq!(one["producer_id"], pid);
    assert_eq!(one["state"], "Ongoing");
    assert_eq!(one["partitions"][0]["topic"], "out");
    assert_eq!(one["partitions"][0]["partition"], 1);
    let table = env.ok(&["txn", "describe", "stuck"]);
    assert!(table.contains("Ongoing") && table.contains("out[1]"), "{table}");

    assert!(env.ok(&["txn", "abort", "stuck"]).contains("aborted"));
    let d = env.json(&["txn", "describe", "stuck", "--format", "json"]);
    assert_eq!(d["state"], "CompleteAbort");
    assert_eq!(d["epoch"], i64::from(epoch) + 1);
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(0));
    assert!(env.ok(&["txn", "abort", "stuck"]).contains("no open transaction"));

    assert!(env
        .fail(&["txn", "describe", "nobody"])
        .contains("unknown transactional id"));
    assert!(env.fail(&["txn", "abort", ""]).contains("transactional id"));
}
