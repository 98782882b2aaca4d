//! Counters and histograms of the Kafka front end, exported in Prometheus
//! text format by the HTTP listener.

use std::fmt::Write as _;
use std::sync::OnceLock;

use pgbroker::Broker;

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
            describe();
            pgbroker::queues::describe_metrics();
            pgbroker::describe_replica_metrics();
            Some(handle)
        })
        .as_ref()
}

/// The `# HELP` texts of this crate's metrics.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("pgbroker_kafka_requests_total", "Kafka requests served, by API");
    describe_counter!(
        "pgbroker_kafka_request_errors_total",
        "Kafka requests that failed as a whole, by API"
    );
    describe_histogram!(
        "pgbroker_kafka_request_seconds",
        "Time to answer a Kafka request, by API"
    );
    describe_counter!(
        "pgbroker_kafka_api_errors_total",
        "Error codes in otherwise answered Kafka requests, by API and code"
    );
    describe_counter!(
        "pgbroker_kafka_produced_records_total",
        "Records produced through Kafka, by topic"
    );
    describe_counter!(
        "pgbroker_kafka_produced_bytes_total",
        "Record bytes produced through Kafka, by topic"
    );
    describe_counter!(
        "pgbroker_kafka_fetched_records_total",
        "Records fetched through Kafka, by topic"
    );
    describe_counter!(
        "pgbroker_kafka_fetched_bytes_total",
        "Record bytes fetched through Kafka, by topic"
    );
    describe_counter!(
        "pgbroker_kafka_connections_refused_total",
        "Kafka connections closed on arrival at --max-connections"
    );
    describe_gauge!("pgbroker_kafka_connections", "Open Kafka client connections");
    // The library's compaction of compacted topics.
    describe_counter!(
        "pgbroker_compaction_bytes_reclaimed_total",
        "Bytes freed by compacting compacted topics"
    );
    describe_counter!(
        "pgbroker_compaction_records_removed_total",
        "Records removed by compacting compacted topics (superseded values, expired tombstones)"
    );
    describe_gauge!(
        "pgbroker_compaction_dirty_records",
        "Records of a compacted topic's partition not yet compacted, by topic and partition"
    );
}

/// Appends, read from Postgres now, each queue's messages by state and the
/// age of its oldest ready message.
pub(crate) async fn render_queues(broker: &Broker, out: &mut String) {
    let Ok(queues) = broker.queues().all_stats().await else {
        return;
    };
    let mut depth = String::new();
    let mut dead = String::new();
    let mut age = String::new();
    for (queue, s) in queues {
        let name = escape(queue.as_str());
        for (state, n) in [("ready", s.ready), ("in_flight", s.in_flight), ("delayed", s.delayed)] {
            let _ = writeln!(
                depth,
                "pgbroker_queue_messages{{queue=\"{name}\",state=\"{state}\"}} {n}"
            );
        }
        let _ = writeln!(
            dead,
            "pgbroker_queue_dead_lettered_messages{{queue=\"{name}\"}} {}",
            s.dead_lettered
        );
        let seconds = s.oldest_ready_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
        let _ = writeln!(
            age,
            "pgbroker_queue_oldest_ready_age_seconds{{queue=\"{name}\"}} {seconds}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP pgbroker_queue_messages Messages held in a queue, by state (ready: due now; in_flight: under a lease; delayed: waiting for a delay or backoff)"
    );
    let _ = write!(out, "# TYPE pgbroker_queue_messages gauge\n{depth}");
    let _ = writeln!(
        out,
        "# HELP pgbroker_queue_dead_lettered_messages Messages of a queue that ran out of attempts and are still held: dead in it, or in its dead-letter queue (where they also count as ready)"
    );
    let _ = write!(out, "# TYPE pgbroker_queue_dead_lettered_messages gauge\n{dead}");
    let _ = writeln!(
        out,
        "# HELP pgbroker_queue_oldest_ready_age_seconds Time since the oldest ready message of a queue was sent (0 when none is ready)"
    );
    let _ = write!(out, "# TYPE pgbroker_queue_oldest_ready_age_seconds gauge\n{age}");
}

/// Escapes a Prometheus label value.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
