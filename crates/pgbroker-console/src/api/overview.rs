//! The overview (brokers, rates, largest lags, queue backlogs, Postgres
//! health), the history behind the charts, and users with their grants.
//! The overview reads the newest sample of the history plus one ping and
//! one node listing, so a page left open and refreshing costs the broker
//! next to nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::access::Caller;
use crate::error::{json_response, ApiError, ApiResult};
use crate::history::Sample;
use crate::State;

/// Nodes not seen for this long are left out (as the Kafka listener does).
const NODE_TTL: Duration = Duration::from_secs(10);

/// Rows of each "largest" list in the overview.
const TOP: usize = 10;

#[derive(Serialize)]
struct Postgres {
    ok: bool,
    ping_ms: Option<f64>,
    error: Option<String>,
    pool_open: usize,
    pool_idle: usize,
    pool_max: usize,
}

#[derive(Serialize)]
struct GroupLag {
    group: String,
    lag: i64,
    members: usize,
    state: String,
}

#[derive(Serialize)]
struct QueueBacklog {
    queue: String,
    #[serde(flatten)]
    stats: pgbroker::queues::QueueStats,
}

/// `GET /api/overview`.
pub(crate) async fn overview(AxState(state): AxState<Arc<State>>, caller: Caller) -> ApiResult<Response> {
    let started = Instant::now();
    let ping = tokio::time::timeout(Duration::from_secs(2), state.broker.ping()).await;
    let ping_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (pool_open, pool_idle, pool_max) = state.broker.pool_status();
    let postgres = match ping {
        Ok(Ok(())) => Postgres {
            ok: true,
            ping_ms: Some(ping_ms),
            error: None,
            pool_open,
            pool_idle,
            pool_max,
        },
        Ok(Err(e)) => Postgres {
            ok: false,
            ping_ms: None,
            error: Some(e.to_string()),
            pool_open,
            pool_idle,
            pool_max,
        },
        Err(_) => Postgres {
            ok: false,
            ping_ms: None,
            error: Some("no answer within 2 s".into()),
            pool_open,
            pool_idle,
            pool_max,
        },
    };
    let nodes = if postgres.ok {
        state.broker.cluster().live_nodes(NODE_TTL).await?
    } else {
        Vec::new()
    };
    let latest = state.history.fresh(&state.broker, state.config.sample_every * 2).await;
    let samples = state.history.samples();
    let previous = samples.iter().rev().find(|s| s.at_ms < latest.at_ms).cloned();
    let topics: Vec<_> = latest.topics.iter().filter(|t| caller.sees_topic(&t.name)).collect();
    let mut lags: Vec<GroupLag> = latest
        .groups
        .iter()
        .filter(|g| caller.sees_group(&g.name))
        .map(|g| GroupLag {
            group: g.name.clone(),
            lag: g.lag,
            members: g.members,
            state: g.state.clone(),
        })
        .collect();
    lags.sort_by(|a, b| b.lag.cmp(&a.lag).then_with(|| a.group.cmp(&b.group)));
    lags.truncate(TOP);
    let mut queues: Vec<QueueBacklog> = latest
        .queues
        .iter()
        .filter(|q| caller.sees_queue(&q.name))
        .map(|q| QueueBacklog {
            queue: q.name.clone(),
            stats: q.stats,
        })
        .collect();
    queues.sort_by(|a, b| b.stats.ready.cmp(&a.stats.ready).then_with(|| a.queue.cmp(&b.queue)));
    queues.truncate(TOP);
    let rates = previous.map(|p| rates(&caller, &p, &latest));
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "user": caller.user,
            "sampled_at_ms": latest.at_ms,
            "nodes": nodes,
            "postgres": postgres,
            "topics": topics.len(),
            "partitions": topics.iter().map(|t| i64::from(t.partitions)).sum::<i64>(),
            "records": topics.iter().map(|t| t.records).sum::<i64>(),
            "produce_rate": rates.map(|r| r.0),
            "consume_rate": rates.map(|r| r.1),
            "largest_lags": lags,
            "queue_backlogs": queues,
        }),
    ))
}

/// Records produced and committed per second between two samples, over
/// what the caller may see.
fn rates(caller: &Caller, before: &Sample, after: &Sample) -> (f64, f64) {
    let secs = (after.at_ms - before.at_ms).max(1) as f64 / 1000.0;
    let produced: i64 = after
        .topics
        .iter()
        .filter(|t| caller.sees_topic(&t.name))
        .map(|t| {
            let old = before.topics.iter().find(|o| o.name == t.name);
            old.map_or(0, |o| (t.high_watermarks - o.high_watermarks).max(0))
        })
        .sum();
    let consumed: i64 = after
        .groups
        .iter()
        .filter(|g| caller.sees_group(&g.name))
        .map(|g| {
            let old = before.groups.iter().find(|o| o.name == g.name);
            old.map_or(0, |o| (g.committed - o.committed).max(0))
        })
        .sum();
    (produced as f64 / secs, consumed as f64 / secs)
}

/// What a history series is of.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    topic: Option<String>,
    group: Option<String>,
    queue: Option<String>,
}

#[derive(Serialize, Default)]
struct Point {
    at_ms: i64,
    /// Records produced per second since the previous point.
    produce_rate: Option<f64>,
    /// Records committed per second since the previous point.
    consume_rate: Option<f64>,
    /// Summed lag of the groups.
    lag: Option<i64>,
    /// Records stored in the topics.
    records: Option<i64>,
    /// Queue counts.
    ready: Option<i64>,
    in_flight: Option<i64>,
    delayed: Option<i64>,
    dead_lettered: Option<i64>,
}

/// `GET /api/history`: the broker as a whole (what the caller may see),
/// or one topic, group or queue, oldest point first.
pub(crate) async fn history(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    let chosen = [q.topic.is_some(), q.group.is_some(), q.queue.is_some()];
    if chosen.iter().filter(|c| **c).count() > 1 {
        return Err(ApiError::bad_request("give at most one of topic, group, queue"));
    }
    let topic_ok = |name: &str| q.topic.as_deref().map_or(caller.sees_topic(name), |t| t == name);
    let group_ok = |name: &str| q.group.as_deref().map_or(caller.sees_group(name), |g| g == name);
    let queue_ok = |name: &str| q.queue.as_deref().map_or(caller.sees_queue(name), |x| x == name);
    if let Some(t) = &q.topic {
        caller.need_visible(caller.sees_topic(t), "topic", t)?;
    }
    if let Some(g) = &q.group {
        caller.need_visible(caller.sees_group(g), "group", g)?;
    }
    if let Some(x) = &q.queue {
        caller.need_visible(caller.sees_queue(x), "queue", x)?;
    }
    let samples = state.history.samples();
    let mut points = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|j| samples.get(j));
        let secs = prev.map(|p| (s.at_ms - p.at_ms).max(1) as f64 / 1000.0);
        let hwm = |x: &Sample| -> i64 {
            x.topics
                .iter()
                .filter(|t| topic_ok(&t.name))
                .map(|t| t.high_watermarks)
                .sum()
        };
        let committed =
            |x: &Sample| -> i64 { x.groups.iter().filter(|g| group_ok(&g.name)).map(|g| g.committed).sum() };
        let queues = s.queues.iter().filter(|x| queue_ok(&x.name));
        let mut p = Point {
            at_ms: s.at_ms,
            ..Point::default()
        };
        if q.group.is_none() && q.queue.is_none() {
            p.produce_rate = prev
                .zip(secs)
                .map(|(prev, secs)| (hwm(s) - hwm(prev)).max(0) as f64 / secs);
            p.records = Some(s.topics.iter().filter(|t| topic_ok(&t.name)).map(|t| t.records).sum());
        }
        if q.topic.is_none() && q.queue.is_none() {
            p.consume_rate = prev
                .zip(secs)
                .map(|(prev, secs)| (committed(s) - committed(prev)).max(0) as f64 / secs);
            p.lag = Some(s.groups.iter().filter(|g| group_ok(&g.name)).map(|g| g.lag).sum());
        }
        if q.topic.is_none() && q.group.is_none() {
            let (mut r, mut f, mut d, mut x) = (0, 0, 0, 0);
            for qr in queues {
                r += qr.stats.ready;
                f += qr.stats.in_flight;
                d += qr.stats.delayed;
                x += qr.stats.dead_lettered;
            }
            (p.ready, p.in_flight, p.delayed, p.dead_lettered) = (Some(r), Some(f), Some(d), Some(x));
        }
        points.push(p);
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "interval_ms": u64::try_from(state.config.sample_every.as_millis()).unwrap_or(u64::MAX),
            "points": points,
        }),
    ))
}

/// `GET /api/users`: users and their grants; a user who may not do
/// everything sees only themselves.
pub(crate) async fn users(AxState(state): AxState<Arc<State>>, caller: Caller) -> ApiResult<Response> {
    let users = state.broker.auth().list_users().await?;
    let acls = state.broker.auth().list_acls(None).await?;
    let (users, acls): (Vec<_>, Vec<_>) = if caller.is_all() {
        (users, acls)
    } else {
        let me = caller.user.clone().unwrap_or_default();
        (
            users.into_iter().filter(|u| u.name == me).collect(),
            acls.into_iter().filter(|a| a.user == me).collect(),
        )
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "users": users,
            "acls": acls,
            "super_users": if caller.is_all() { state.config.super_users.clone() } else { Vec::new() },
        }),
    ))
}
