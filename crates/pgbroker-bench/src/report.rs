//! `pgbroker-bench report`: BENCHMARKS.md and its plots, generated from the
//! JSON-lines results of `suite`, `sweep` and `soak`, never by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pgbroker_cli::bench::compare::{medians, FIGURES};
use serde_json::Value;

use crate::plots;
use crate::targets::{losses, targets};

/// Flags of `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// JSON-lines result files.
    #[arg(long, num_args = 1.., required = true)]
    pub from: Vec<PathBuf>,
    /// The Markdown file written.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Directory for the SVG plots (linked relative to the Markdown file).
    #[arg(long, default_value = "docs/bench")]
    pub plots: PathBuf,
}

/// Every line of the result files, parsed.
fn load(files: &[PathBuf]) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            all.push(serde_json::from_str(line).with_context(|| format!("{}:{}", f.display(), n + 1))?);
        }
    }
    Ok(all)
}

/// Names in order of first appearance.
fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.iter().any(|o| o == i) {
            out.push(i.to_string());
        }
    }
    out
}

/// Runs of `scenario`, and its systems in order (the first is the base).
pub fn scenario_runs<'a>(runs: &'a [Value], scenario: &str) -> (Vec<&'a Value>, Vec<String>) {
    let mine: Vec<&Value> = runs.iter().filter(|r| r["scenario"] == scenario).collect();
    let systems = ordered(mine.iter().filter_map(|r| r["system"].as_str()));
    (mine, systems)
}

/// The median of `figure` for `system` in `scenario`.
pub fn median_of(runs: &[Value], scenario: &str, system: &str, figure: &str) -> Option<f64> {
    let (mine, _) = scenario_runs(runs, scenario);
    let owned: Vec<Value> = mine.into_iter().cloned().collect();
    let i = FIGURES.iter().position(|(k, _)| *k == figure)?;
    let v = medians(&owned, &[system])[0][i];
    v.is_finite().then_some(v)
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 1000.0 {
        let s = format!("{v:.0}");
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 && c.is_ascii_digit() {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn workload_line(run: &Value) -> String {
    let keys = [
        "workload",
        "message_size",
        "partitions",
        "producers",
        "groups",
        "consumers_per_group",
        "write_batch",
        "read_batch",
        "workers",
        "send_batch",
        "receive_batch",
        "target_rate",
        "duration_s",
    ];
    keys.iter()
        .filter(|k| !run[**k].is_null())
        .map(|k| format!("{k} {}", run[*k]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn environment(md: &mut String, env: Option<&Value>) {
    md.push_str("## Machine and Postgres\n\n");
    let Some(env) = env else {
        md.push_str("No environment line in the results.\n\n");
        return;
    };
    md.push_str("| | |\n|---|---|\n");
    for k in ["cpu", "cores", "memory", "kernel", "load_average", "postgres"] {
        let v = &env[k];
        let _ = writeln!(
            md,
            "| {k} | {} |",
            v.as_str().map_or_else(|| v.to_string(), String::from)
        );
    }
    if let Some(settings) = env["settings"].as_object() {
        for (k, v) in settings {
            let _ = writeln!(md, "| {k} | {} |", v.as_str().unwrap_or_default());
        }
    }
    md.push('\n');
}

fn scenario(md: &mut String, runs: &[Value], name: &str, plots: &Path, rel: &Path) -> Result<()> {
    let (mine, systems) = scenario_runs(runs, name);
    let rounds = mine.iter().filter_map(|r| r["round"].as_u64()).max().unwrap_or(1);
    let owned: Vec<Value> = mine.iter().map(|r| (*r).clone()).collect();
    let names: Vec<&str> = systems.iter().map(String::as_str).collect();
    let m = medians(&owned, &names);
    let _ = writeln!(
        md,
        "### {name}\n\n{}; median of {rounds} round(s), ratio = system / {}.\n",
        workload_line(mine[0]),
        names[0]
    );
    md.push_str("| figure |");
    for s in &names {
        let _ = write!(md, " {s} | ratio |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|---:|".repeat(names.len()));
    md.push('\n');
    for (i, (figure, _)) in FIGURES.iter().enumerate() {
        let _ = write!(md, "| {figure} |");
        for values in &m {
            let _ = write!(md, " {} | {} |", fmt(values[i]), fmt(values[i] / m[0][i]));
        }
        md.push('\n');
    }
    let col = |k: &str| {
        FIGURES
            .iter()
            .position(|(f, _)| *f == k)
            .map_or(vec![], |i| m.iter().map(|v| v[i]).collect())
    };
    let tput = plots.join(format!("{name}-throughput.svg"));
    plots::bars(
        &tput,
        &format!("{name}: messages/s"),
        "messages/s",
        &systems,
        &[("written", col("write_msgs_per_s")), ("read", col("read_msgs_per_s"))],
    )?;
    let lat = plots.join(format!("{name}-latency.svg"));
    let pcts: Vec<(String, Vec<f64>)> = systems
        .iter()
        .map(|s| {
            let v = ["e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms", "e2e_p999_ms", "e2e_max_ms"]
                .iter()
                .map(|k| crate::targets::median_key(&mine, s, k))
                .collect();
            (s.clone(), v)
        })
        .collect();
    plots::lines(
        &lat,
        &format!("{name}: end-to-end latency (ms)"),
        "ms",
        &["p50", "p95", "p99", "p99.9", "max"],
        &pcts,
    )?;
    let _ = writeln!(
        md,
        "\n![throughput]({}) ![latency]({})\n",
        rel.join(format!("{name}-throughput.svg")).display(),
        rel.join(format!("{name}-latency.svg")).display()
    );
    Ok(())
}

fn sweep(md: &mut String, runs: &[Value], plots: &Path, rel: &Path) -> Result<()> {
    let (mine, systems) = scenario_runs(runs, "sweep");
    if mine.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        md,
        "## Latency against offered rate\n\n{}; median per rate.\n",
        workload_line(mine[0])
    );
    md.push_str(
        "| system | offered/s | written/s | read/s | e2e p50 ms | e2e p99 ms |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut lines = Vec::new();
    for s in &systems {
        let mut targets: Vec<Option<u64>> = Vec::new();
        for r in mine.iter().filter(|r| r["system"] == s.as_str()) {
            let t = r["target_rate"].as_u64();
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        let mut points = Vec::new();
        for t in targets {
            let at: Vec<&Value> = mine
                .iter()
                .copied()
                .filter(|r| r["system"] == s.as_str() && r["target_rate"].as_u64() == t)
                .collect();
            let med = |k: &str| crate::targets::median_key(&at, s, k);
            let offered = t.map_or_else(|| "max".to_string(), |t| fmt(t as f64));
            let _ = writeln!(
                md,
                "| {s} | {offered} | {} | {} | {} | {} |",
                fmt(med("write_msgs_per_s")),
                fmt(med("read_msgs_per_s")),
                fmt(med("e2e_p50_ms")),
                fmt(med("e2e_p99_ms"))
            );
            points.push((med("write_msgs_per_s"), med("e2e_p99_ms")));
        }
        lines.push((s.clone(), points));
    }
    plots::xy(
        &plots.join("sweep-p99.svg"),
        "end-to-end p99 against write rate",
        "records/s written",
        "p99 ms",
        &lines,
    )?;
    let _ = writeln!(md, "\n![p99 against rate]({})\n", rel.join("sweep-p99.svg").display());
    Ok(())
}

fn soak(md: &mut String, all: &[Value], plots: &Path, rel: &Path) -> Result<()> {
    let samples: Vec<&Value> = all.iter().filter(|v| v["kind"] == "soak-sample").collect();
    if samples.is_empty() {
        return Ok(());
    }
    md.push_str("## Soak\n\n| scenario | t (s) | written/s | read/s | e2e p99 ms | dead tuples | tables MiB | transaction held |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
    let mut p99 = Vec::new();
    let mut size = Vec::new();
    for name in ordered(samples.iter().filter_map(|s| s["scenario"].as_str())) {
        let mine: Vec<&&Value> = samples.iter().filter(|s| s["scenario"] == name.as_str()).collect();
        for s in &mine {
            let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {name} | {:.0} | {} | {} | {} | {} | {} | {} |",
                f("t_s"),
                fmt(f("write_msgs_per_s")),
                fmt(f("read_msgs_per_s")),
                fmt(f("e2e_p99_ms")),
                fmt(f("dead_tuples")),
                fmt(f("table_bytes") / 1048576.0),
                s["holding_transaction"]
            );
        }
        let series = |k: &str, scale: f64| {
            mine.iter()
                .map(|s| {
                    (
                        s["t_s"].as_f64().unwrap_or(0.0),
                        s[k].as_f64().unwrap_or(f64::NAN) * scale,
                    )
                })
                .collect::<Vec<_>>()
        };
        p99.push((name.clone(), series("e2e_p99_ms", 1.0)));
        size.push((name.clone(), series("table_bytes", 1.0 / 1048576.0)));
    }
    plots::xy(
        &plots.join("soak-p99.svg"),
        "soak: end-to-end p99 per sample",
        "seconds",
        "p99 ms",
        &p99,
    )?;
    plots::xy(
        &plots.join("soak-size.svg"),
        "soak: table size",
        "seconds",
        "MiB",
        &size,
    )?;
    let _ = writeln!(
        md,
        "\n![soak p99]({}) ![soak size]({})\n",
        rel.join("soak-p99.svg").display(),
        rel.join("soak-size.svg").display()
    );
    Ok(())
}

/// Writes the report and its plots.
pub fn report(args: &ReportArgs) -> Result<()> {
    let all = load(&args.from)?;
    std::fs::create_dir_all(&args.plots).with_context(|| format!("creating {}", args.plots.display()))?;
    let base = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let rel = pathdiff(&args.plots, base);
    let runs: Vec<Value> = all
        .iter()
        .filter(|v| v["kind"].is_null() && !v["scenario"].is_null())
        .cloned()
        .collect();
    let files: Vec<String> = args.from.iter().map(|p| p.display().to_string()).collect();
    let mut md = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        md,
        "Generated by `pgbroker-bench report` from {}; do not edit by hand. \
        Reproduce with `./scripts/bench.sh` (see the README). Every figure is the median of the rounds, \
        systems run in turn in each round so they share the machine's state and noise; ratios are \
        against the first system of each table. Rates are messages/s, latencies ms, CPU seconds per \
        million messages written, memory MiB (largest resident size seen).\n",
        files.join(", ")
    );
    let rounds = runs.iter().filter_map(|r| r["round"].as_u64()).max().unwrap_or(0);
    let shortest = runs
        .iter()
        .filter_map(|r| r["duration_s"].as_f64())
        .fold(f64::INFINITY, f64::min);
    if rounds < 3 || shortest < 19.0 {
        let _ = writeln!(
            md,
            "**A short run** ({rounds} round(s), runs of {shortest:.0} s): a check of the harness, \
            not a reference measurement; `./scripts/bench.sh` makes one.\n"
        );
    }
    environment(&mut md, all.iter().rev().find(|v| v["kind"] == "environment"));
    md.push_str("## Targets\n\n| target | measured | verdict |\n|---|---|---|\n");
    for t in targets(&runs) {
        let _ = writeln!(md, "| {} | {} | {} |", t.what, t.measured, t.verdict);
    }
    md.push_str("\n## Where pgbroker loses\n\n");
    let lost = losses(&runs);
    if lost.is_empty() {
        md.push_str("Nowhere in these results by more than 10 %.\n");
    }
    for l in lost {
        let _ = writeln!(md, "- {l}");
    }
    md.push_str("\n## Scenarios\n\n");
    for name in ordered(
        runs.iter()
            .filter(|r| r["scenario"] != "sweep")
            .filter_map(|r| r["scenario"].as_str()),
    ) {
        scenario(&mut md, &runs, &name, &args.plots, &rel)?;
    }
    sweep(&mut md, &runs, &args.plots, &rel)?;
    soak(&mut md, &all, &args.plots, &rel)?;
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} and plots in {}", args.out.display(), args.plots.display());
    Ok(())
}

/// `to` relative to `from` when `to` is inside it, else `to` as given.
fn pathdiff(to: &Path, from: &Path) -> PathBuf {
    if from == Path::new(".") {
        return to.to_path_buf();
    }
    to.strip_prefix(from)
        .map_or_else(|_| to.to_path_buf(), Path::to_path_buf)
}
