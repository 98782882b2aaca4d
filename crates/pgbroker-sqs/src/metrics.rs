//! Per-action counters and latencies, rendered on the HTTP listener's
//! `/metrics` with the rest of the process's metrics.

/// Counts a request and records how long it took.
pub(crate) fn request(action: &'static str, ok: bool, seconds: f64) {
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
