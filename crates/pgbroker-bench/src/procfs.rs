//! CPU time and resident memory of processes, read from /proc (Linux; zero
//! elsewhere).

use std::collections::HashMap;
use std::path::Path;

/// Where the broker under test runs, for its CPU and memory figures.
#[derive(Debug, Clone)]
pub enum BrokerProcess {
    /// In this process (pgbroker's library, or a design driven by SQL).
    InProcess,
    /// A child or other process with this pid (`pgbroker serve`).
    Pid(u32),
    /// Several processes, summed (several `pgbroker serve` on one schema).
    Pids(Vec<u32>),
    /// Every process whose command name is this (`redis-server`, `beam.smp`).
    Named(String),
}

/// CPU seconds of each process of a kind, by pid: processes come and go
/// (Postgres backends), so differences are taken per pid.
pub type PerPid = HashMap<String, f64>;

/// CPU seconds used so far.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    own: f64,
    broker: PerPid,
    postgres: PerPid,
}

/// CPU seconds used between two readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUsed {
    /// By this process.
    pub own: f64,
    /// By the broker under test (equal to `own` when it runs in process).
    pub broker: f64,
    /// By all `postgres` processes.
    pub postgres: f64,
}

/// Command name and CPU seconds (user + system) of the process `stat` describes.
fn stat(path: &Path) -> Option<(String, f64)> {
    let ticks = 100.0; // USER_HZ on Linux
    let s = std::fs::read_to_string(path).ok()?;
    let (head, rest) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let used = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((comm, used / ticks))
}

/// The `/proc` directories of all processes.
fn processes() -> impl Iterator<Item = std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .map(|e| e.path())
}

/// CPU seconds of every process named `name`, by pid.
fn named(name: &str) -> PerPid {
    processes()
        .filter_map(|p| {
            let (comm, used) = stat(&p.join("stat"))?;
            (comm == name).then(|| (p.to_string_lossy().into_owned(), used))
        })
        .collect()
}

/// CPU seconds of each of `list`, by pid (those that exist).
fn pids(list: &[u32]) -> PerPid {
    list.iter()
        .filter_map(|pid| {
            let (_, used) = stat(&Path::new("/proc").join(pid.to_string()).join("stat"))?;
            Some((pid.to_string(), used))
        })
        .collect()
}

/// The parent pid in a `stat` file's text.
fn parent_of(stat_text: &str) -> Option<u32> {
    let (_, rest) = stat_text.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of a Postgres cluster, by pid: its postmaster `postmaster`
/// and the postmaster's children (backends, WAL sender or receiver,
/// checkpointer, startup process...). Several clusters on one machine are
/// told apart this way, where [`Cpu::now`]'s `postgres` counts them all.
pub fn cluster(postmaster: u32) -> PerPid {
    let me = postmaster.to_string();
    processes()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let text = std::fs::read_to_string(p.join("stat")).ok()?;
            if name != me && parent_of(&text) != Some(postmaster) {
                return None;
            }
            let (_, used) = stat(&p.join("stat"))?;
            Some((name, used))
        })
        .collect()
}

/// CPU used from `before` to `after` by the processes alive at `after`
/// (what exited in between is not counted).
pub fn delta(before: &PerPid, after: &PerPid) -> f64 {
    after
        .iter()
        .map(|(pid, used)| (used - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

impl Cpu {
    /// Reads the counters now.
    pub fn now(broker: &BrokerProcess) -> Cpu {
        let own = stat(Path::new("/proc/self/stat")).map_or(0.0, |x| x.1);
        let broker = match broker {
            BrokerProcess::InProcess => PerPid::new(),
            BrokerProcess::Pid(pid) => pids(&[*pid]),
            BrokerProcess::Pids(list) => pids(list),
            BrokerProcess::Named(name) => named(name),
        };
        Cpu {
            own,
            broker,
            postgres: named("postgres"),
        }
    }

    /// What was used since `before`.
    pub fn since(&self, before: &Cpu, broker: &BrokerProcess) -> CpuUsed {
        let own = self.own - before.own;
        CpuUsed {
            own,
            broker: match broker {
                BrokerProcess::InProcess => own,
                _ => delta(&before.broker, &self.broker),
            },
            postgres: delta(&before.postgres, &self.postgres),
        }
    }
}

/// Resident bytes of one process, from its `status` file.
fn rss_of(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Resident memory of the broker now, in bytes (summed over processes of
/// that name).
pub fn rss_bytes(broker: &BrokerProcess) -> u64 {
    match broker {
        BrokerProcess::InProcess => rss_of(Path::new("/proc/self")),
        BrokerProcess::Pid(pid) => rss_of(&Path::new("/proc").join(pid.to_string())),
        BrokerProcess::Pids(list) => list
            .iter()
            .map(|pid| rss_of(&Path::new("/proc").join(pid.to_string())))
            .sum(),
        BrokerProcess::Named(name) => processes()
            .filter(|p| stat(&p.join("stat")).is_some_and(|(comm, _)| &comm == name))
            .map(|p| rss_of(&p))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_name_with_spaces_and_parentheses() {
        let text = "4242 (postgres: a (b) c) S 4100 4100 4100 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(parent_of(text), Some(4100));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn a_cluster_is_its_postmaster_and_its_children() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let tree = cluster(me);
        assert!(tree.contains_key(&me.to_string()), "{tree:?}");
        assert!(tree.contains_key(&child.id().to_string()), "{tree:?}");
        assert!(!tree.contains_key("1"), "{tree:?}");
        child.kill().ok();
        child.wait().ok();
    }
}
