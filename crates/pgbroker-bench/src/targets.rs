//! The targets checked against the results, and the places where
//! another system beats pgbroker.

use crate::report::{scenario_median as median_of, scenario_runs};
use crate::summary::{Figure, Summary, BROKER_CPU, BROKER_RSS, E2E_P50, E2E_P99, POSTGRES_CPU, READ_RATE, WRITE_RATE};

/// One target and how it fared.
pub struct Verdict {
    /// The target, in words.
    pub what: String,
    /// What was measured.
    pub measured: String,
    /// Met, missed by how much, or not measured.
    pub verdict: String,
}

enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// At least this multiple of another system's figure in the same scenario.
    Times(&'static str, f64),
}

/// scenario, system, figure, goal
const TARGETS: &[(&str, &str, Figure, Goal)] = &[
    ("pubsub-write-only", "pgbroker", WRITE_RATE, Goal::Times("article", 1.5)),
    ("pubsub-write-only", "pgbroker", WRITE_RATE, Goal::Times("ceiling", 0.7)),
    ("pubsub-5-groups-at-5k", "pgbroker", E2E_P99, Goal::AtMost(10.0)),
    (
        "kafka-one-group-max",
        "kafka-protocol",
        WRITE_RATE,
        Goal::AtLeast(50_000.0),
    ),
    (
        "kafka-one-group-max",
        "kafka-protocol",
        READ_RATE,
        Goal::AtLeast(50_000.0),
    ),
    ("kafka-one-group-at-5k", "kafka-protocol", E2E_P99, Goal::AtMost(15.0)),
    ("kafka-one-group-max", "kafka-protocol", BROKER_RSS, Goal::AtMost(200.0)),
    ("queue-single", "pgbroker", READ_RATE, Goal::Times("article", 1.0)),
    ("queue-single", "pgbroker", READ_RATE, Goal::Times("pgmq", 1.5)),
    // The "10x the article's design" is its one-message design
    // (about 3,300/s here): 30,000/s, flat out and sustained at an offered
    // 32,000/s.
    ("queue-batch-100", "pgbroker", READ_RATE, Goal::AtLeast(30_000.0)),
    ("queue-batch-100-at-32k", "pgbroker", READ_RATE, Goal::AtLeast(30_000.0)),
    ("queue-batch-100", "pgbroker", READ_RATE, Goal::Times("pgmq", 1.5)),
    ("queue-batch-100", "pgbroker", READ_RATE, Goal::Times("rabbitmq", 1.0)),
    ("queue-single-at-3k", "pgbroker", E2E_P99, Goal::AtMost(20.0)),
];

fn f(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Every target whose scenario is in the results.
pub fn targets(runs: &[Summary]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (scenario, system, figure, goal) in TARGETS {
        if scenario_runs(runs, scenario).0.is_empty() {
            continue;
        }
        let mine = median_of(runs, scenario, system, figure);
        let name = figure.name;
        let (what, measured, verdict) = match (goal, mine) {
            (_, None) => (
                format!("{scenario}: {system} {name}"),
                "–".into(),
                "not measured".into(),
            ),
            (Goal::AtLeast(v), Some(m)) => (
                format!("{scenario}: {system} {name} ≥ {}", f(*v)),
                f(m),
                if m >= *v {
                    "met".into()
                } else {
                    format!("missed by {:.0} %", (1.0 - m / v) * 100.0)
                },
            ),
            (Goal::AtMost(v), Some(m)) => (
                format!("{scenario}: {system} {name} ≤ {}", f(*v)),
                f(m),
                if m <= *v {
                    "met".into()
                } else {
                    format!("missed: {:.1}x the bound", m / v)
                },
            ),
            (Goal::Times(other, k), Some(m)) => {
                let theirs = median_of(runs, scenario, other, figure);
                let what = format!("{scenario}: {system} {name} ≥ {k}x {other}");
                match theirs {
                    None => (what, f(m), format!("{other} not measured")),
                    Some(t) => {
                        let ratio = m / t;
                        let verdict = if ratio >= *k {
                            "met".into()
                        } else {
                            format!("missed by {:.0} %", (1.0 - ratio / k) * 100.0)
                        };
                        (what, format!("{} vs {} = {ratio:.2}x", f(m), f(t)), verdict)
                    }
                }
            }
        };
        out.push(Verdict {
            what,
            measured,
            verdict,
        });
    }
    out.extend(sweep_target(runs));
    out
}

/// The highest offered rate of the sweep at which every group of `system`
/// kept up (read at least 95 % of groups × written), if any.
fn keep_up_rate(runs: &[Summary], system: &str) -> Option<f64> {
    runs.iter()
        .filter(|r| r.scenario.as_deref() == Some("sweep") && r.system == system)
        .filter(|r| {
            let (w, rd) = (r.figures.write_msgs_per_s, r.figures.read_msgs_per_s);
            w > 0.0 && rd >= 0.95 * f64::from(r.shape.readers_of_each_message()) * w
        })
        .map(|r| r.figures.write_msgs_per_s)
        .fold(None, |best, w| Some(best.map_or(w, |b: f64| b.max(w))))
}

/// The sweep's target: pgbroker's keep-up rate at least 1.5x the article's.
fn sweep_target(runs: &[Summary]) -> Option<Verdict> {
    if !runs.iter().any(|r| r.scenario.as_deref() == Some("sweep")) {
        return None;
    }
    let what = "sweep: highest write rate at which all groups keep up, pgbroker ≥ 1.5x article".to_string();
    Some(match (keep_up_rate(runs, "pgbroker"), keep_up_rate(runs, "article")) {
        (Some(p), Some(a)) => Verdict {
            what,
            measured: format!("{} vs {} = {:.2}x", f(p), f(a), p / a),
            verdict: if p >= 1.5 * a {
                "met".into()
            } else {
                format!("missed by {:.0} %", (1.0 - p / a / 1.5) * 100.0)
            },
        },
        (p, a) => Verdict {
            what,
            measured: format!("pgbroker {:?}, article {:?}", p.map(f), a.map(f)),
            verdict: "not measured (no rate kept up)".into(),
        },
    })
}

/// The figures a loss is reported on: rates, typical and tail latency, and
/// the cost to the machine.
const COMPARED: &[&Figure] = &[
    &WRITE_RATE,
    &READ_RATE,
    &E2E_P50,
    &E2E_P99,
    &POSTGRES_CPU,
    &BROKER_CPU,
    &BROKER_RSS,
];

/// Sentences naming every figure where a peer beats pgbroker (or its Kafka
/// front end) by more than 10 % in the same scenario.
pub fn losses(runs: &[Summary]) -> Vec<String> {
    let ours = ["pgbroker", "kafka-protocol"];
    let mut scenarios: Vec<&str> = Vec::new();
    for r in runs {
        if let Some(s) = r.scenario.as_deref().filter(|s| !scenarios.contains(s)) {
            scenarios.push(s);
        }
    }
    let mut out = Vec::new();
    for scenario in scenarios {
        let (_, systems) = scenario_runs(runs, scenario);
        for us in ours.iter().filter(|u| systems.iter().any(|s| s == *u)) {
            // The ceiling is a bound, not a competitor: the targets compare with it.
            for other in systems
                .iter()
                .filter(|s| !ours.contains(&s.as_str()) && *s != "ceiling")
            {
                for figure in COMPARED {
                    let (Some(a), Some(b)) = (
                        median_of(runs, scenario, us, figure),
                        median_of(runs, scenario, other, figure),
                    ) else {
                        continue;
                    };
                    if a <= 0.0 || b <= 0.0 {
                        continue;
                    }
                    let worse = if figure.more_is_better {
                        b > a * 1.1
                    } else {
                        a > b * 1.1
                    };
                    if worse {
                        let factor = if figure.more_is_better { b / a } else { a / b };
                        out.push(format!(
                            "{scenario}: {other} beats {us} on {} ({} vs {}, {factor:.1}x)",
                            figure.name,
                            f(b),
                            f(a)
                        ));
                    }
                }
            }
        }
    }
    out
}
