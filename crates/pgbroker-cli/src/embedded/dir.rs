//! The embedded cluster's directory: where it is by default, who owns it,
//! and the lock that keeps a second broker out of it.
//!
//! Layout of `DIR`:
//!
//! | path | what |
//! |---|---|
//! | `pgbroker.lock` | flock held by the running broker; holds its pid |
//! | `data/` | the cluster (`PGDATA`), made by `initdb` on first start |
//! | `data/pgbroker.conf` | the settings pgbroker chooses, rewritten at every start |
//! | `.s.PGSQL.<port>` | the Unix socket |
//! | `password` | the superuser's password, for connections over TCP |
//! | `postgres.log` | the server's log |

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};

/// The user PostgreSQL runs as when pgbroker is started as root, unless
/// `--embedded-user` names another.
pub const DEFAULT_SERVER_USER: &str = "postgres";

/// Where the cluster lives when `--embedded` names no directory: for root
/// `/var/lib/pgbroker` (reachable by the unprivileged user the server runs
/// as), for anyone else `$XDG_DATA_HOME/pgbroker` or
/// `~/.local/share/pgbroker`.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/pgbroker"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(data).join("pgbroker"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/pgbroker")),
        None => bail!("no HOME to put the embedded cluster under; name a directory: --embedded DIR"),
    }
}

/// The OS user PostgreSQL runs as: the current user, or, when started as
/// root, an unprivileged one (PostgreSQL refuses to run as root).
#[derive(Debug, Clone)]
pub struct ServerUser {
    /// Its name.
    pub name: String,
    /// Its user id.
    pub uid: Uid,
    /// Its primary group, the only group the server keeps.
    pub gid: Gid,
    /// True when this process must switch to it (it is root, the user is not).
    pub switch: bool,
}

impl ServerUser {
    /// Resolves the user from `--embedded-user`.
    pub fn resolve(requested: Option<&str>) -> anyhow::Result<ServerUser> {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            let me = User::from_uid(euid)
                .context("looking up the current user")?
                .with_context(|| format!("the current user (uid {euid}) has no name"))?;
            if let Some(name) = requested.filter(|n| *n != me.name) {
                bail!(
                    "--embedded-user {name}: only root can run PostgreSQL as another user; \
                     started as {}, the server runs as {}",
                    me.name,
                    me.name
                );
            }
            return Ok(ServerUser {
                name: me.name,
                uid: me.uid,
                gid: me.gid,
                switch: false,
            });
        }
        let name = requested.unwrap_or(DEFAULT_SERVER_USER);
        let user = User::from_name(name)
            .with_context(|| format!("looking up user {name}"))?
            .with_context(|| {
                format!(
                    "started as root, the embedded PostgreSQL must run as an unprivileged user (it refuses root), \
                     and there is no user {name}: create it (useradd --system --user-group {name}) \
                     or name another with --embedded-user"
                )
            })?;
        if user.uid.is_root() {
            bail!("--embedded-user {name} is root; PostgreSQL refuses to run as root: name an unprivileged user");
        }
        Ok(ServerUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            switch: true,
        })
    }
}

/// Creates `dir` if needed, gives it to `user` (mode 0700) and returns its
/// canonical path. Refuses a directory the server could not reach or whose
/// cluster belongs to someone else.
pub fn prepare(dir: &Path, user: &ServerUser) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    // The socket's path must fit in sun_path (108 bytes with its NUL).
    if dir.as_os_str().len() + "/.s.PGSQL.65535".len() > 107 {
        bail!(
            "{} is too long a path for PostgreSQL's Unix socket (at most 92 bytes); choose a shorter one",
            dir.display()
        );
    }
    if user.switch {
        std::os::unix::fs::chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .with_context(|| format!("giving {} to user {}", dir.display(), user.name))?;
        check_reachable(&dir, user)?;
    }
    let meta = std::fs::metadata(&dir)?;
    if meta.uid() != user.uid.as_raw() {
        bail!(
            "{} belongs to uid {}, but the embedded PostgreSQL runs as {} (uid {}); \
             choose another directory or start pgbroker as its owner",
            dir.display(),
            meta.uid(),
            user.name,
            user.uid
        );
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    let data = dir.join("data");
    if let Ok(meta) = std::fs::metadata(&data) {
        if meta.uid() != user.uid.as_raw() {
            bail!(
                "the cluster in {} belongs to uid {}, but the embedded PostgreSQL would run as {} (uid {}); \
                 start pgbroker as its owner, or as root with --embedded-user naming it",
                data.display(),
                meta.uid(),
                user.name,
                user.uid
            );
        }
    }
    Ok(dir)
}

/// Every directory above `dir` must let `user` through, or the server
/// cannot reach its data (a data directory under `/root`, say).
fn check_reachable(dir: &Path, user: &ServerUser) -> anyhow::Result<()> {
    for parent in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(parent).with_context(|| format!("reading {}", parent.display()))?;
        let mode = meta.mode();
        let bit = if meta.uid() == user.uid.as_raw() {
            0o100
        } else if meta.gid() == user.gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            bail!(
                "the embedded PostgreSQL runs as user {}, which cannot reach {}: {} (mode {:o}) does not let it \
                 through; choose a directory it can reach, such as the default /var/lib/pgbroker",
                user.name,
                dir.display(),
                parent.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

/// The lock on a data directory, held for the broker's life. The kernel
/// drops it when the process ends however it ends, so a crash leaves no
/// stale lock; the file keeps the holder's pid for the error message.
#[derive(Debug)]
pub struct DirLock {
    _file: Flock<File>,
}

impl DirLock {
    /// Takes the lock on `dir`, or says which process holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DirLock> {
        let path = dir.join("pgbroker.lock");
        // Rust opens files close-on-exec: the postmaster does not inherit
        // this one, so the lock ends with this process.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                bail!(
                    "{} is in use by another pgbroker serve{holder}: two brokers cannot share one embedded \
                     data directory; stop that one, or give this one another directory (--embedded DIR) \
                     or connect it to that one's database with --database-url",
                    dir.display()
                );
            }
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        };
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file })
    }
}
