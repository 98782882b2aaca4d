//! `pgbroker-bench report`: BENCHMARKS.md and its plots, generated from the
//! JSON-lines results of `suite`, `sweep` and `soak`, never by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::compaction::CompactionRun;
use crate::pages::PageLoad;
use crate::plots;
use crate::summary::{
    load, median_of, medians, ordered, Environment, Figure, Line, Note, SoakSample, Summary, E2E_MAX, E2E_P50, E2E_P95,
    E2E_P99, E2E_P999, READ_RATE, TABLE, WRITE_RATE,
};
use crate::targets::{losses, page_targets, targets};
use crate::workload::Shape;
use anyhow::{Context, Result};

/// Flags of `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// JSON-lines result files. A scenario's runs come from the last file
    /// that has it: a rerun supersedes the earlier runs of its scenarios.
    #[arg(long, num_args = 1.., required = true)]
    pub from: Vec<PathBuf>,
    /// The Markdown file written.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Directory for the SVG plots (linked relative to the Markdown file).
    #[arg(long, default_value = "docs/bench")]
    pub plots: PathBuf,
}

/// Runs of `scenario`, and its systems in order (the first is the base).
pub fn scenario_runs<'a>(runs: &'a [Summary], scenario: &str) -> (Vec<&'a Summary>, Vec<String>) {
    let mine: Vec<&Summary> = runs
        .iter()
        .filter(|r| r.scenario.as_deref() == Some(scenario))
        .collect();
    let systems = ordered(mine.iter().map(|r| r.system.as_str()));
    (mine, systems)
}

/// The median of `figure` for `system` in `scenario`, if measured.
pub fn scenario_median(runs: &[Summary], scenario: &str, system: &str, figure: &Figure) -> Option<f64> {
    let (mine, _) = scenario_runs(runs, scenario);
    let v = median_of(mine, system, figure);
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

fn workload_line(run: &Summary) -> String {
    let shape = match &run.shape {
        Shape::Pubsub(a) => format!(
            "workload \"pubsub\", message_size {}, partitions {}, producers {}, groups {}, consumers_per_group {}, \
             write_batch {}, read_batch {}",
            a.message_size, a.partitions, a.producers, a.groups, a.consumers_per_group, a.write_batch, a.read_batch
        ),
        Shape::Queue(a) => format!(
            "workload \"queue\", message_size {}, producers {}, workers {}, send_batch {}, receive_batch {}",
            a.message_size, a.producers, a.workers, a.send_batch, a.receive_batch
        ),
    };
    let rate = run
        .shape
        .target_rate()
        .map_or_else(String::new, |r| format!(", target_rate {r}"));
    format!("{shape}{rate}, duration_s {}", run.figures.duration_s)
}

/// The CPU, cores and load average each results file recorded when its
/// run began, when there are several files (each was measured at another
/// time, perhaps on another machine).
fn loads(files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    if files.len() < 2 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for file in files {
        for line in load(std::slice::from_ref(file))? {
            if let Line::Note(Note::Environment(e)) = line {
                let load = e.load_average.unwrap_or_else(|| "null".into());
                let cpu = e.cpu.unwrap_or_else(|| "null".into());
                let machine = format!("{cpu}, {} cores, load average {load}", e.cores);
                out.push((file.display().to_string(), machine));
            }
        }
    }
    Ok(out)
}

fn environment(md: &mut String, env: Option<&Environment>, loads: &[(String, String)]) {
    md.push_str("## Machine and Postgres\n\n");
    let Some(env) = env else {
        md.push_str("No environment line in the results.\n\n");
        return;
    };
    md.push_str("| | |\n|---|---|\n");
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "null".into());
    let rows = [
        ("cpu", text(&env.cpu)),
        ("cores", env.cores.to_string()),
        ("memory", text(&env.memory)),
        ("kernel", text(&env.kernel)),
        ("load_average", text(&env.load_average)),
        ("postgres", env.postgres.clone()),
    ];
    for (k, v) in rows {
        if k == "load_average" && !loads.is_empty() {
            for (file, machine) in loads {
                let _ = writeln!(md, "| machine of {file} | {machine} |");
            }
            continue;
        }
        let _ = writeln!(md, "| {k} | {v} |");
    }
    for (k, v) in &env.settings {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md.push('\n');
}

fn scenario(md: &mut String, runs: &[Summary], name: &str, plots: &Path, rel: &Path) -> Result<()> {
    let (mine, systems) = scenario_runs(runs, name);
    let rounds = mine.iter().filter_map(|r| r.round).max().unwrap_or(1);
    let names: Vec<&str> = systems.iter().map(String::as_str).collect();
    let m = medians(&mine, &systems);
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
    for (i, figure) in TABLE.iter().enumerate() {
        // Figures added after these runs were measured.
        if m.iter().all(|values| !values[i].is_finite()) {
            continue;
        }
        let _ = write!(md, "| {} |", figure.name);
        for values in &m {
            let _ = write!(md, " {} | {} |", fmt(values[i]), fmt(values[i] / m[0][i]));
        }
        md.push('\n');
    }
    let col = |f: &Figure| -> Vec<f64> { systems.iter().map(|s| median_of(mine.iter().copied(), s, f)).collect() };
    let tput = plots.join(format!("{name}-throughput.svg"));
    plots::bars(
        &tput,
        &format!("{name}: messages/s"),
        "messages/s",
        &systems,
        &[("written", col(&WRITE_RATE)), ("read", col(&READ_RATE))],
    )?;
    let lat = plots.join(format!("{name}-latency.svg"));
    let pcts: Vec<(String, Vec<f64>)> = systems
        .iter()
        .map(|s| {
            let v = [E2E_P50, E2E_P95, E2E_P99, E2E_P999, E2E_MAX]
                .iter()
                .map(|f| median_of(mine.iter().copied(), s, f))
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

fn sweep(md: &mut String, runs: &[Summary], plots: &Path, rel: &Path) -> Result<()> {
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
        for r in mine.iter().filter(|r| r.system == *s) {
            let t = r.shape.target_rate();
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        let mut points = Vec::new();
        for t in targets {
            let at = mine.iter().copied().filter(|r| r.shape.target_rate() == t);
            let med = |f: &Figure| median_of(at.clone(), s, f);
            let offered = t.map_or_else(|| "max".to_string(), |t| fmt(t as f64));
            let _ = writeln!(
                md,
                "| {s} | {offered} | {} | {} | {} | {} |",
                fmt(med(&WRITE_RATE)),
                fmt(med(&READ_RATE)),
                fmt(med(&E2E_P50)),
                fmt(med(&E2E_P99))
            );
            points.push((med(&WRITE_RATE), med(&E2E_P99)));
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

fn soak(md: &mut String, samples: &[&SoakSample], plots: &Path, rel: &Path) -> Result<()> {
    if samples.is_empty() {
        return Ok(());
    }
    md.push_str("## Soak\n\n| scenario | t (s) | written/s | read/s | e2e p99 ms | dead tuples | tables MiB | transaction held |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
    let mut p99 = Vec::new();
    let mut size = Vec::new();
    for name in ordered(samples.iter().map(|s| s.scenario.as_str())) {
        let mine: Vec<&SoakSample> = samples.iter().copied().filter(|s| s.scenario == name).collect();
        for s in &mine {
            let _ = writeln!(
                md,
                "| {name} | {:.0} | {} | {} | {} | {} | {} | {} |",
                s.t_s,
                fmt(s.write_msgs_per_s),
                fmt(s.read_msgs_per_s),
                fmt(s.e2e_p99_ms),
                fmt(s.dead_tuples as f64),
                fmt(s.table_bytes as f64 / 1048576.0),
                s.holding_transaction
            );
        }
        let series = |y: fn(&SoakSample) -> f64| mine.iter().map(|s| (s.t_s, y(s))).collect::<Vec<_>>();
        p99.push((name.clone(), series(|s| s.e2e_p99_ms)));
        size.push((name.clone(), series(|s| s.table_bytes as f64 / 1048576.0)));
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

/// Every line of `files`, except the runs of a scenario that a later file
/// runs again.
fn latest_runs(files: &[PathBuf]) -> Result<Vec<Line>> {
    let per_file = files
        .iter()
        .map(|f| load(std::slice::from_ref(f)))
        .collect::<Result<Vec<_>>>()?;
    Ok(newest_only(per_file))
}

/// Which lines a later file replaces: a scenario's runs, a scale curve's
/// points, and the tail runs of one segment size and disturbance (each
/// is one series; an older series, made by an older build, is not mixed
/// into a newer one).
fn superseding_key(line: &Line) -> Option<String> {
    match line {
        Line::Run(Summary { scenario: Some(s), .. }) => Some(format!("run {s}")),
        Line::Note(Note::ScalePoint(p)) => Some(format!("scale {}", p.scenario)),
        Line::Note(Note::TailRun(r)) => Some(format!("tail {} {} {:?}", r.scenario, r.segment_records, r.disturbance)),
        _ => None,
    }
}

/// The lines of `per_file` (one list per results file, oldest first),
/// keeping each [`superseding_key`] only from the last file that has it.
fn newest_only(per_file: Vec<Vec<Line>>) -> Vec<Line> {
    let mut last_file: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, lines) in per_file.iter().enumerate() {
        for key in lines.iter().filter_map(superseding_key) {
            last_file.insert(key, i);
        }
    }
    let mut all = Vec::new();
    for (i, lines) in per_file.into_iter().enumerate() {
        all.extend(lines.into_iter().filter(|line| match superseding_key(line) {
            Some(key) => last_file.get(&key) == Some(&i),
            None => true,
        }));
    }
    all
}

/// Writes the report and its plots.
pub fn report(args: &ReportArgs) -> Result<()> {
    let all = latest_runs(&args.from)?;
    std::fs::create_dir_all(&args.plots).with_context(|| format!("creating {}", args.plots.display()))?;
    let base = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let rel = pathdiff(&args.plots, base);
    let mut runs: Vec<Summary> = Vec::new();
    let mut samples: Vec<&SoakSample> = Vec::new();
    let mut page_loads: Vec<&PageLoad> = Vec::new();
    let mut compactions: Vec<&CompactionRun> = Vec::new();
    let mut standby_runs: Vec<&crate::standby::StandbyRun> = Vec::new();
    let mut brokers_runs: Vec<&crate::brokers::BrokersRun> = Vec::new();
    let mut scale_points: Vec<&crate::scale::ScalePoint> = Vec::new();
    let mut tail_runs: Vec<&crate::tails::TailRun> = Vec::new();
    let mut machine = None;
    for line in &all {
        match line {
            Line::Run(r) if r.scenario.is_some() => runs.push(r.clone()),
            Line::Run(_) => {}
            Line::Note(Note::SoakSample(s)) => samples.push(s),
            Line::Note(Note::PageLoad(p)) => page_loads.push(p),
            Line::Note(Note::Compaction(c)) => compactions.push(c),
            Line::Note(Note::StandbyRun(r)) => standby_runs.push(r),
            Line::Note(Note::BrokersRun(r)) => brokers_runs.push(r),
            Line::Note(Note::ScalePoint(p)) => scale_points.push(p),
            Line::Note(Note::TailRun(r)) => tail_runs.push(r),
            Line::Note(Note::Environment(e)) => machine = Some(e),
        }
    }
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
    let rounds = runs.iter().filter_map(|r| r.round).max().unwrap_or(0);
    let shortest = runs.iter().map(|r| r.figures.duration_s).fold(f64::INFINITY, f64::min);
    if !runs.is_empty() && (rounds < 3 || shortest < 19.0) {
        let _ = writeln!(
            md,
            "**A short run** ({rounds} round(s), runs of {shortest:.0} s): a check of the harness, \
            not a reference measurement; `./scripts/bench.sh` makes one.\n"
        );
    }
    environment(&mut md, machine, &loads(&args.from)?);
    md.push_str("## Targets\n\n| target | measured | verdict |\n|---|---|---|\n");
    for t in targets(&runs).into_iter().chain(page_targets(&page_loads)) {
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
            .filter_map(|r| r.scenario.as_deref())
            .filter(|s| *s != "sweep"),
    ) {
        scenario(&mut md, &runs, &name, &args.plots, &rel)?;
    }
    sweep(&mut md, &runs, &args.plots, &rel)?;
    soak(&mut md, &samples, &args.plots, &rel)?;
    crate::pages::section(&mut md, &page_loads);
    crate::compaction::section(&mut md, &compactions);
    crate::standby::section(&mut md, &standby_runs);
    crate::brokers::section(&mut md, &brokers_runs);
    crate::scale::section(&mut md, &scale_points, &args.plots, &rel)?;
    crate::tails::section(&mut md, &tail_runs);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_results_file_names_its_machine_when_there_are_several() {
        let dir = std::env::temp_dir().join(format!("pgbroker-bench-loads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let env = |cpu: &str, load: &str| {
            format!(
                "{{\"kind\":\"environment\",\"cpu\":\"{cpu}\",\"cores\":2,\"memory\":null,\"kernel\":null,\
                 \"load_average\":\"{load}\",\"postgres\":\"PostgreSQL 15\",\"settings\":{{}}}}\n"
            )
        };
        let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
        std::fs::write(&a, env("AMD EPYC", "0.28 1.29 3.34")).expect("write");
        std::fs::write(&b, env("Intel Xeon", "13.22 14.02 13.97")).expect("write");
        assert!(loads(std::slice::from_ref(&a)).expect("one file").is_empty());
        let both = loads(&[a.clone(), b.clone()]).expect("two files");
        assert_eq!(
            both,
            vec![
                (
                    a.display().to_string(),
                    "AMD EPYC, 2 cores, load average 0.28 1.29 3.34".to_string()
                ),
                (
                    b.display().to_string(),
                    "Intel Xeon, 2 cores, load average 13.22 14.02 13.97".to_string()
                ),
            ]
        );
        let Ok(Note::Environment(last)) = serde_json::from_str::<Note>(&env("Intel Xeon", "13.22")) else {
            panic!("an environment line");
        };
        let mut md = String::new();
        environment(&mut md, Some(&last), &both);
        let row = format!(
            "| machine of {} | AMD EPYC, 2 cores, load average 0.28 1.29 3.34 |",
            a.display()
        );
        assert!(md.contains(&row), "{md}");
        assert!(!md.contains("| load_average |"), "{md}");
        assert!(md.contains("| cpu | Intel Xeon |"), "{md}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_later_sweep_of_a_scale_curve_replaces_the_earlier_one() {
        let point = |scenario: &str, value: u64, create_s: f64| {
            let mut p = crate::scale::ScalePoint::new(scenario, "topics", value);
            p.set("create_s", create_s);
            Line::Note(Note::ScalePoint(p))
        };
        let old = vec![
            point("scale-topics", 10, 0.95),
            point("scale-topics", 1000, 297.0),
            point("scale-groups", 1, 0.5),
        ];
        let new = vec![point("scale-topics", 10, 0.30), point("scale-topics", 100, 1.4)];
        let kept: Vec<(String, u64, f64)> = newest_only(vec![old, new])
            .into_iter()
            .filter_map(|l| match l {
                Line::Note(Note::ScalePoint(p)) => Some((p.scenario.clone(), p.value, p.metrics["create_s"])),
                _ => None,
            })
            .collect();
        assert_eq!(
            kept,
            vec![
                ("scale-groups".to_string(), 1, 0.5),
                ("scale-topics".to_string(), 10, 0.30),
                ("scale-topics".to_string(), 100, 1.4),
            ]
        );
    }
}
