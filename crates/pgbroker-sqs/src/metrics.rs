//! Per-action counters and latencies, rendered on the HTTP listener's
//! `/metrics` with the rest of the process's metrics.

/// The `# HELP` texts, given to the recorder with the first request
/// (`pgbroker serve` installs it before any request can arrive).
fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!("pgbroker_sqs_requests_total", "SQS requests served, by action");
    describe_counter!(
        "pgbroker_sqs_request_errors_total",
        "SQS requests answered with an error, by action"
    );
    describe_histogram!(
        "pgbroker_sqs_request_seconds",
        "Time to answer an SQS request, by action"
    );
    describe_counter!(
        "pgbroker_sqs_errors_total",
        "SQS error answers, by action and error code"
    );
    describe_counter!("pgbroker_sqs_messages_sent_total", "Messages sent through the SQS API");
    describe_counter!(
        "pgbroker_sqs_messages_received_total",
        "Messages received through the SQS API"
    );
}

/// Counts a request and records how long it took.
pub(crate) fn request(action: &'static str, ok: bool, seconds: f64) {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(describe);
    metrics::counter!("pgbroker_sqs_requests_total", "action" => action).increment(1);
    if !ok {
        metrics::counter!("pgbroker_sqs_request_errors_total", "action" => action).increment(1);
    }
    metrics::histogram!("pgbroker_sqs_request_seconds", "action" => action).record(seconds);
}

/// Counts an error answer by its code.
pub(crate) fn error(action: &'static str, code: &'static str) {
    metrics::counter!("pgbroker_sqs_errors_total", "action" => action, "code" => code).increment(1);
}

/// Counts messages sent.
pub(crate) fn sent(n: usize) {
    metrics::counter!("pgbroker_sqs_messages_sent_total").increment(u64::try_from(n).unwrap_or(0));
}

/// Counts messages received.
pub(crate) fn received(n: usize) {
    metrics::counter!("pgbroker_sqs_messages_received_total").increment(u64::try_from(n).unwrap_or(0));
}
