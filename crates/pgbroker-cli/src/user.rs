//! `pgbroker user ...`: the users Kafka clients authenticate as, and the
//! access keys SQS clients sign requests with.

use std::fmt;
use std::io::BufRead as _;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Subcommand};
use pgbroker::{AccessKey, AccessKeyInfo, Broker, UserInfo};

use crate::output::{print_json, print_table};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user, or set a new password for an existing one.
    Add(AddUserArgs),
    /// Remove a user.
    Remove {
        #[arg(value_parser = parse_user)]
        name: String,
    },
    /// List users (names and iteration counts, never credentials).
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Access keys of a user, for SQS clients (AWS Signature Version 4).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new access key for a user and print it with its secret. The
    /// secret is shown only this once.
    Create {
        #[arg(value_parser = parse_user)]
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List a user's access keys (ids and dates, never secrets).
    List {
        #[arg(value_parser = parse_user)]
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete an access key: requests signed with it are refused from now on.
    Delete {
        #[arg(value_parser = parse_key_id)]
        key_id: String,
    },
}

fn parse_key_id(s: &str) -> Result<String, String> {
    pgbroker::validate_access_key_id(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).multiple(false).args(["password_stdin", "password"])))]
pub struct AddUserArgs {
    #[arg(value_parser = parse_user)]
    name: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The password. Other local users can see it in the process list;
    /// prefer --password-stdin.
    #[arg(long, value_parser = parse_password)]
    password: Option<Password>,
    /// PBKDF2 iterations of the SCRAM-SHA-256 credentials.
    #[arg(long, default_value_t = pgbroker::DEFAULT_SCRAM_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(
              i64::from(pgbroker::MIN_SCRAM_ITERATIONS)..=i64::from(pgbroker::MAX_SCRAM_ITERATIONS)))]
    iterations: u32,
}

/// A password, never printed.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

fn parse_password(s: &str) -> Result<Password, String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(Password(s.to_string()))
}

fn parse_user(s: &str) -> Result<String, String> {
    pgbroker::validate_user_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// The first line of standard input, without its line ending.
fn password_from_stdin() -> anyhow::Result<Password> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    parse_password(password).map_err(|e| anyhow::anyhow!("password from standard input {e}"))
}

pub async fn run(broker: &Broker, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add(args) => {
            let password = match args.password {
                Some(p) => p,
                None => password_from_stdin()?,
            };
            let created = broker.add_user(&args.name, &password.0, args.iterations).await?;
            if created {
                println!("added user {}", args.name);
            } else {
                println!("set a new password for user {}", args.name);
            }
            Ok(())
        }
        UserCommand::Remove { name } => {
            broker.remove_user(&name).await?;
            println!("removed user {name}");
            Ok(())
        }
        UserCommand::List { format } => {
            let users = broker.list_users().await?;
            match format {
                Format::Json => print_json(&users),
                Format::Table => print_users(&users),
            }
        }
        UserCommand::Key(cmd) => run_key(broker, cmd).await,
    }
}

async fn run_key(broker: &Broker, cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create { name, format } => {
            let key = broker.create_access_key(&name).await?;
            match format {
                Format::Json => print_json(&key)?,
                Format::Table => print_new_key(&key),
            }
            eprintln!("The secret access key is shown only now; keep it safe.");
            Ok(())
        }
        KeyCommand::List { name, format } => {
            let keys = broker.list_access_keys(&name).await?;
            match format {
                Format::Json => print_json(&keys),
                Format::Table => print_keys(&keys),
            }
        }
        KeyCommand::Delete { key_id } => {
            if !broker.delete_access_key(&key_id).await? {
                anyhow::bail!("no access key {key_id}");
            }
            println!("deleted access key {key_id}");
            Ok(())
        }
    }
}

fn print_new_key(key: &AccessKey) {
    println!("user:              {}", key.user);
    println!("access_key_id:     {}", key.access_key_id);
    println!("secret_access_key: {}", key.secret_access_key);
}

fn print_keys(keys: &[AccessKeyInfo]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.access_key_id.clone(),
                k.user.clone(),
                time(k.created_at_ms),
                k.last_used_ms.map_or_else(|| "never".to_string(), time),
            ]
        })
        .collect();
    print_table(&["ACCESS KEY ID", "USER", "CREATED", "LAST USED"], &rows)
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(pgbroker::from_millis(ms)).to_string()
}

fn print_users(users: &[UserInfo]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.name.clone(),
                u.iterations.to_string(),
                time(u.created_at_ms),
                time(u.updated_at_ms),
            ]
        })
        .collect();
    print_table(&["USER", "ITERATIONS", "CREATED", "UPDATED"], &rows)
}
