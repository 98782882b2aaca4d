//! A topic deleted and created again under the same name by another
//! process is found at once, not after the metadata cache expires.

use pgbroker::streams::OffsetSpec;
use pgbroker::{Broker, BrokerConfig, Record, TopicConfig, TopicName};
use pgbroker_testkit::db::TestDb;

#[tokio::test]
async fn a_recreated_topic_is_read_through_a_stale_cache() {
    let db = TestDb::new().await;
    let topic = db.topic("again", TopicConfig::default()).await;
    db.broker
        .streams()
        .produce(&topic, Some(0), &[Record::from_value("old")])
        .await
        .expect("produce");
    // This handle caches the first topic's partition ids.
    assert_eq!(
        db.broker
            .streams()
            .resolve_offset(&topic, 0, OffsetSpec::Latest)
            .await
            .expect("hw"),
        1
    );

    let other = Broker::connect(BrokerConfig {
        database_url: pgbroker_testkit::database_url(),
        schema: db.schema.clone(),
        ..BrokerConfig::default()
    })
    .await
    .expect("second handle");
    let name = TopicName::new("again").expect("name");
    other.topics().delete(&name).await.expect("delete");
    other
        .topics()
        .create(&name, &TopicConfig::default())
        .await
        .expect("create");
    other
        .streams()
        .produce(&name, Some(0), &[Record::from_value("a"), Record::from_value("b")])
        .await
        .expect("produce");

    assert_eq!(
        db.broker
            .streams()
            .resolve_offset(&topic, 0, OffsetSpec::Earliest)
            .await
            .expect("start"),
        0
    );
    assert_eq!(
        db.broker
            .streams()
            .resolve_offset(&topic, 0, OffsetSpec::Latest)
            .await
            .expect("hw"),
        2
    );
    let read = db
        .broker
        .streams()
        .fetch(&topic, 0, 0, Default::default())
        .await
        .expect("fetch");
    let values: Vec<_> = read
        .records
        .iter()
        .map(|r| r.value.as_deref().map(<[u8]>::to_vec))
        .collect();
    assert_eq!(values, vec![Some(b"a".to_vec()), Some(b"b".to_vec())]);
}
