//! Counters and histograms of the Kafka front end, exported in Prometheus
//! text format by the HTTP listener.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its
/// handle (`None` when another recorder was installed first).
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// One request served.
pub(crate) fn request(api: &'static str, ok: bool, seconds: f64) {
    metrics::counter!("pgbroker_kafka_requests_total", "api" => api).increment(1);
    if !ok {
        metrics::counter!("pgbroker_kafka_request_errors_total", "api" => api).increment(1);
    }
    metrics::histogram!("pgbroker_kafka_request_seconds", "api" => api).record(seconds);
}

/// Per-partition errors in an otherwise answered request.
pub(crate) fn api_error(api: &'static str, code: i16) {
    metrics::counter!("pgbroker_kafka_api_errors_total", "api" => api, "code" => code.to_string()).increment(1);
}

/// Records produced to a topic.
pub(crate) fn produced(topic: &str, records: usize, bytes: usize) {
    let t = topic.to_string();
    metrics::counter!("pgbroker_kafka_produced_records_total", "topic" => t.clone()).increment(records as u64);
    metrics::counter!("pgbroker_kafka_produced_bytes_total", "topic" => t).increment(bytes as u64);
}

/// Records fetched from a topic.
pub(crate) fn fetched(topic: &str, records: usize, bytes: usize) {
    let t = topic.to_string();
    metrics::counter!("pgbroker_kafka_fetched_records_total", "topic" => t.clone()).increment(records as u64);
    metrics::counter!("pgbroker_kafka_fetched_bytes_total", "topic" => t).increment(bytes as u64);
}

/// A connection closed on arrival because the limit was reached.
pub(crate) fn connection_refused() {
    metrics::counter!("pgbroker_kafka_connections_refused_total").increment(1);
}

/// Open client connections.
pub(crate) fn connections(open: usize) {
    metrics::gauge!("pgbroker_kafka_connections").set(open as f64);
}
