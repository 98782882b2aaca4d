//! `pgbroker-bench diff`: two results files, before and after a change,
//! compared figure by figure for every scenario and system both measured.
//! A change is flagged only when it is larger than the tolerance and than
//! the spread of either side's rounds: what the rounds of one run already
//! disagree on is noise, not a regression. It exits non-zero when any
//! figure got worse.

use std::path::PathBuf;

use anyhow::Result;

use crate::summary::{load, median, ordered, Figure, Line, Summary, TABLE};

/// Flags of `diff`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// Results measured before the change.
    pub base: PathBuf,
    /// Results measured after it.
    pub new: PathBuf,
    /// Changes smaller than this many percent are never flagged.
    #[arg(long, default_value_t = 10.0)]
    pub tolerance: f64,
}

/// Which way a flagged figure moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Beyond noise, in the bad direction.
    Worse,
    /// Beyond noise, in the good direction.
    Better,
}

/// One figure of one scenario and system that moved beyond noise.
#[derive(Debug, Clone)]
pub struct Change {
    /// The scenario.
    pub scenario: String,
    /// The system.
    pub system: String,
    /// The figure's name.
    pub figure: &'static str,
    /// Median before.
    pub base: f64,
    /// Median after.
    pub new: f64,
    /// `new` against `base`, percent.
    pub change_pct: f64,
    /// The threshold it passed: the tolerance or the larger spread, percent.
    pub threshold_pct: f64,
    /// Worse or better.
    pub verdict: Verdict,
}

/// Median and spread (highest minus lowest round, percent of the median)
/// of a figure over some runs; `None` without a finite value.
fn centre(runs: &[&Summary], figure: &Figure) -> Option<(f64, f64)> {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|r| (figure.of)(&r.figures))
        .filter(|v| v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = median(values);
    (m.is_finite() && m != 0.0).then(|| (m, (hi - lo) / m.abs() * 100.0))
}

fn of<'a>(runs: &'a [Summary], scenario: &str, system: &str) -> Vec<&'a Summary> {
    runs.iter()
        .filter(|r| r.scenario.as_deref() == Some(scenario) && r.system == system)
        .collect()
}

/// The figures that moved beyond noise, and how many were compared.
pub fn changes(base: &[Summary], new: &[Summary], tolerance: f64) -> (Vec<Change>, usize) {
    let mut out = Vec::new();
    let mut compared = 0;
    for scenario in ordered(new.iter().filter_map(|r| r.scenario.as_deref())) {
        for system in ordered(
            new.iter()
                .filter(|r| r.scenario.as_deref() == Some(&scenario))
                .map(|r| r.system.as_str()),
        ) {
            let (before, after) = (of(base, &scenario, &system), of(new, &scenario, &system));
            if before.is_empty() {
                continue;
            }
            for figure in TABLE {
                let (Some((b, b_spread)), Some((n, n_spread))) = (centre(&before, figure), centre(&after, figure))
                else {
                    continue;
                };
                compared += 1;
                let change_pct = (n - b) / b.abs() * 100.0;
                let threshold_pct = tolerance.max(b_spread).max(n_spread);
                if change_pct.abs() <= threshold_pct {
                    continue;
                }
                let verdict = if (change_pct > 0.0) == figure.more_is_better {
                    Verdict::Better
                } else {
                    Verdict::Worse
                };
                out.push(Change {
                    scenario: scenario.clone(),
                    system: system.clone(),
                    figure: figure.name,
                    base: b,
                    new: n,
                    change_pct,
                    threshold_pct,
                    verdict,
                });
            }
        }
    }
    (out, compared)
}

fn runs_in(path: &PathBuf) -> Result<Vec<Summary>> {
    Ok(load(std::slice::from_ref(path))?
        .into_iter()
        .filter_map(|l| match l {
            Line::Run(r) => Some(r),
            Line::Note(_) => None,
        })
        .collect())
}

/// Prints the flagged changes; fails when any is worse.
pub fn diff(args: &DiffArgs) -> Result<()> {
    let (base, new) = (runs_in(&args.base)?, runs_in(&args.new)?);
    let (changes, compared) = changes(&base, &new, args.tolerance);
    if !changes.is_empty() {
        println!(
            "{:<24} {:<20} {:<28} {:>12} {:>12} {:>9} {:>9}  verdict",
            "scenario", "system", "figure", "before", "after", "change", "noise"
        );
    }
    for c in &changes {
        println!(
            "{:<24} {:<20} {:<28} {:>12.1} {:>12.1} {:>8.1}% {:>8.1}%  {}",
            c.scenario,
            c.system,
            c.figure,
            c.base,
            c.new,
            c.change_pct,
            c.threshold_pct,
            match c.verdict {
                Verdict::Worse => "WORSE",
                Verdict::Better => "better",
            }
        );
    }
    let worse = changes.iter().filter(|c| c.verdict == Verdict::Worse).count();
    println!(
        "{compared} figures compared; {worse} worse and {} better beyond noise (at least {}%)",
        changes.len() - worse,
        args.tolerance
    );
    anyhow::ensure!(worse == 0, "{worse} figures got worse beyond noise");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{E2E_P99, READ_RATE};

    /// Three rounds of system `a` with these read rates and p99s.
    fn rounds(figures: [(f64, f64); 3]) -> Vec<Summary> {
        (1..)
            .zip(figures)
            .map(|(i, (read, p99))| run("a", i, read, p99))
            .collect()
    }

    fn run(system: &str, round: u32, read: f64, p99: f64) -> Summary {
        crate::summary::test_run("s", system, round, read, p99)
    }

    fn flagged<'a>(c: &'a [Change], figure: &Figure) -> Option<&'a Change> {
        c.iter().find(|c| c.figure == figure.name)
    }

    #[test]
    fn a_drop_beyond_noise_is_worse_and_a_latency_cut_better() {
        let base = rounds([(1000.0, 10.0), (1020.0, 10.0), (990.0, 10.0)]);
        let new = rounds([(700.0, 5.0), (710.0, 5.0), (690.0, 5.0)]);
        let (c, compared) = changes(&base, &new, 10.0);
        assert!(compared > 0);
        let read = flagged(&c, &READ_RATE).expect("read rate flagged");
        assert_eq!(read.verdict, Verdict::Worse);
        assert!((read.change_pct + 30.0).abs() < 0.1, "{}", read.change_pct);
        assert_eq!(flagged(&c, &E2E_P99).map(|c| c.verdict), Some(Verdict::Better));
    }

    #[test]
    fn a_change_within_the_rounds_spread_is_noise() {
        // The base's rounds disagree by 40 %: a 20 % drop is within that.
        let base = rounds([(800.0, 10.0), (1000.0, 10.0), (1200.0, 10.0)]);
        let new = rounds([(790.0, 10.0), (800.0, 10.0), (810.0, 10.0)]);
        let (c, _) = changes(&base, &new, 10.0);
        assert!(flagged(&c, &READ_RATE).is_none(), "{c:?}");
    }

    #[test]
    fn systems_measured_on_one_side_only_are_not_compared() {
        let base = vec![run("a", 1, 1000.0, 10.0)];
        let new = vec![run("b", 1, 10.0, 100.0)];
        let (c, compared) = changes(&base, &new, 10.0);
        assert!(c.is_empty());
        assert_eq!(compared, 0);
    }
}
