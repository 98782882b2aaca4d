//! Finding the PostgreSQL server installed on the machine: `pg_config
//! --bindir`, Debian's and Ubuntu's `/usr/lib/postgresql/<major>/bin`, and
//! the `PATH`, the newest major version first (or the one an existing
//! cluster was made by).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

/// One installed PostgreSQL server: the directory holding `initdb` and
/// `postgres`, and its major version.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The directory with `initdb` and `postgres`.
    pub dir: PathBuf,
    /// The major version (15 for 15.8).
    pub major: u32,
}

impl Binaries {
    /// The path of one program of this installation.
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The installation to run: the one matching `cluster_major` (the
/// `PG_VERSION` of an existing cluster) if given, else the newest.
pub fn find(cluster_major: Option<u32>) -> anyhow::Result<Binaries> {
    let found = installed();
    if let Some(major) = cluster_major {
        if let Some(b) = found.iter().find(|b| b.major == major) {
            return Ok(b.clone());
        }
        let others: Vec<String> = found
            .iter()
            .map(|b| format!("{} in {}", b.major, b.dir.display()))
            .collect();
        bail!(
            "the embedded cluster was made by PostgreSQL {major}, which is not installed{}; \
             install it (Debian and Ubuntu: apt-get install postgresql-{major}), or move the cluster \
             to a newer version with pg_upgrade",
            if others.is_empty() {
                String::new()
            } else {
                format!(" (found: {})", others.join(", "))
            }
        );
    }
    // The newest major version; among equals, the first found.
    let newest = found.iter().map(|b| b.major).max();
    match found.into_iter().find(|b| Some(b.major) == newest) {
        Some(b) => Ok(b),
        None => bail!(
            "no PostgreSQL server found (initdb and postgres): looked in `pg_config --bindir`, \
             /usr/lib/postgresql/*/bin and PATH; install one (Debian and Ubuntu: \
             apt-get install postgresql, or postgresql-15 for a given version)"
        ),
    }
}

/// Every installation found, in the order looked at, each directory once.
fn installed() -> Vec<Binaries> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut debian: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        debian.sort_by_key(|d| std::cmp::Reverse(d.0));
        dirs.extend(debian.into_iter().map(|(_, d)| d));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut found: Vec<Binaries> = Vec::new();
    for dir in dirs {
        let dir = dir.canonicalize().unwrap_or(dir);
        if found.iter().any(|b| b.dir == dir) || !is_server(&dir) {
            continue;
        }
        if let Some(major) = server_major(&dir) {
            found.push(Binaries { dir, major });
        }
    }
    found
}

fn is_server(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|p| dir.join(p).is_file())
}

/// The major version `postgres --version` reports
/// (`postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)`).
fn server_major(dir: &Path) -> Option<u32> {
    let out = Command::new(dir.join("postgres")).arg("--version").output().ok()?;
    parse_major(&String::from_utf8_lossy(&out.stdout))
}

/// The major version in `postgres --version`'s answer.
pub fn parse_major(version: &str) -> Option<u32> {
    let rest = version.split(") ").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_major;

    #[test]
    fn major_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1\n"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24\n"), Some(9));
        assert_eq!(parse_major("something else"), None);
    }
}
