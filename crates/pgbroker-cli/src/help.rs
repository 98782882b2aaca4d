//! What the command says about itself: the examples shown by `--help`,
//! shell completions (`pgbroker completions`) and the manual page
//! (`pgbroker man`), all generated from the clap definitions.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory};

use crate::Cli;

/// The top-level summary: every command, grouped.
pub const ABOUT: &str = "Kafka-style streams, work queues and a Kafka and SQS server, stored in PostgreSQL";

/// Shown after the top-level command list.
pub const TOP: &str = "\
Streams: migrate, topic, produce, consume, group, maintain
Queues:  queue (create, send, receive, ack, nack, redrive, stats, ...)
Server:  serve (Kafka protocol, /healthz and /metrics, SQS API)
Access:  user (SCRAM users, access keys), acl (grants)
Shell:   completions (bash, zsh, fish), man (manual page)

Examples:
  pgbroker migrate
  pgbroker topic create orders --partitions 4
  printf 'user-1:created\\n' | pgbroker produce orders --key-separator :
  pgbroker consume orders --group billing --from-beginning
  pgbroker serve --kafka-listen 0.0.0.0:9092

Run `pgbroker <command> --help` for a command's flags and examples.";

/// Examples of `topic`.
pub const TOPIC: &str = "\
Examples:
  pgbroker topic create orders --partitions 4 --retention 7d
  pgbroker topic create audit --retention forever
  pgbroker topic list --format json
  pgbroker topic describe orders
  pgbroker topic add-partitions orders --count 2
  pgbroker topic delete orders";

/// Examples of `produce`.
pub const PRODUCE: &str = "\
Examples:
  printf 'user-1:created\\nuser-2:created\\n' | pgbroker produce orders --key-separator :
  pgbroker produce orders --partition 0 --header source=import < lines.txt";

/// Examples of `consume`.
pub const CONSUME: &str = "\
Examples:
  pgbroker consume orders --group billing --from-beginning --max-messages 100
  pgbroker consume orders --partition 1 --offset 42 --format json --idle-timeout 2s";

/// Examples of `group`.
pub const GROUP: &str = "\
Examples:
  pgbroker group list
  pgbroker group describe billing
  pgbroker group reset-offsets billing --topic orders --to-earliest
  pgbroker group delete billing";

/// Examples of `queue`.
pub const QUEUE: &str = "\
Examples:
  pgbroker queue create jobs --max-attempts 5 --dead-letter jobs.dlq
  printf 'resize 1.png\\n' | pgbroker queue send jobs --priority 5
  pgbroker queue receive jobs --max 10 --format json
  pgbroker queue ack jobs 17:6f1c...
  pgbroker queue stats jobs
  pgbroker queue redrive jobs.dlq";

/// Examples of `user`.
pub const USER: &str = "\
Examples:
  printf '%s\\n' \"$PASSWORD\" | pgbroker user add orders-svc --password-stdin
  pgbroker user list
  pgbroker user remove orders-svc";

/// Examples of `acl`.
pub const ACL: &str = "\
Examples:
  pgbroker acl add --user orders-svc --allow produce --topic orders
  pgbroker acl add --user billing --allow group --group-prefix billing-
  pgbroker acl list --user billing";

/// Examples of `serve`.
pub const SERVE: &str = "\
Examples:
  pgbroker serve
  pgbroker serve --embedded    # its own PostgreSQL in /var/lib/pgbroker (root) or ~/.local/share/pgbroker
  pgbroker serve --kafka-listen 0.0.0.0:9092 --advertised-listener broker.internal:9092
  pgbroker serve --sasl-mechanisms SCRAM-SHA-256 --super-users admin
  pgbroker serve --sqs-listen 127.0.0.1:9324 --sqs-allow-anonymous";

/// Examples of `completions`.
pub const COMPLETIONS: &str = "\
Examples:
  pgbroker completions bash > /etc/bash_completion.d/pgbroker
  pgbroker completions zsh > \"${fpath[1]}/_pgbroker\"
  pgbroker completions fish > ~/.config/fish/completions/pgbroker.fish";

/// Examples of `man`.
pub const MAN: &str = "\
Examples:
  pgbroker man | man -l -
  pgbroker man --dir /usr/local/share/man/man1   # one page per command";

/// Flags of `pgbroker completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Flags of `pgbroker man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command into this directory (pgbroker.1,
    /// pgbroker-topic.1, ...) instead of printing the top-level page.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script of a shell.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics when its writer fails, and
    // stdout may be a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "pgbroker", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// Prints the manual page, or writes one page per command into a directory.
pub fn man(args: &ManArgs) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match &args.dir {
        Some(dir) => write_pages(cmd, dir),
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
            Ok(())
        }
    }
}

fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir).with_context(|| format!("cannot write manual pages to {}", dir.display()))?;
    println!("wrote manual pages to {}", dir.display());
    Ok(())
}
