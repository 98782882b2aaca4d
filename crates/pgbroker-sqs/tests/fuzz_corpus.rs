//! Replays the `sqs_request` fuzz corpus through the parser's fuzz entry
//! point, and checks what a few hand-written inputs must give.

use pgbroker_sqs::fuzzing::{parse_request, request};

#[test]
fn corpus_replays_without_panics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/sqs_request");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        request(&data);
        n += 1;
    }
    assert!(n >= 6, "only {n} corpus files");
}

#[test]
fn parser_verdicts() {
    let t = Some("AmazonSQS.SendMessageBatch");
    let shape = |target, body: &str| parse_request(target, body.as_bytes()).map_err(|e| e.shape);
    assert_eq!(
        shape(t, r#"{"Entries":[{"Id":"a","MessageBody":"x"}]}"#),
        Ok("SendMessageBatch")
    );
    assert_eq!(
        shape(t, r#"{"Entries":[{"Id":"a"},{"Id":"a"}]}"#),
        Err("BatchEntryIdsNotDistinct")
    );
    assert_eq!(
        shape(t, r#"{"Entries":[{"Id":"a","MessageBody":"\u0000"}]}"#),
        Err("InvalidMessageContents")
    );
    assert_eq!(shape(t, "{"), Err("SerializationException"));
    assert_eq!(shape(Some("AmazonSQS.Explode"), "{}"), Err("UnknownOperationException"));
    assert_eq!(shape(None, "{}"), Err("UnknownOperationException"));
    assert_eq!(
        shape(
            Some("AmazonSQS.CreateQueue"),
            r#"{"QueueName":"q","Attributes":{"RedrivePolicy":"{}"}}"#
        ),
        Err("InvalidParameterValue")
    );
}
