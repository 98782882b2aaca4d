//! `pgbroker acl ...`: what each user of the Kafka listener may do, once
//! SASL authentication is on, and of the SQS listener.

use clap::{ArgGroup, Args, Subcommand};
use pgbroker::{Acl, AclResource, Broker, Permission};

use crate::output::{print_json, print_table};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Grant a user a permission on a topic, a group or a queue, or on
    /// every one whose name starts with a prefix.
    Add(AclArgs),
    /// Revoke a grant made with `acl add` (the same flags).
    Remove(AclArgs),
    /// List grants, of every user or of one.
    List {
        /// Only this user's grants.
        #[arg(long, value_parser = parse_user)]
        user: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("resource").required(true).multiple(false)
    .args(["topic", "topic_prefix", "group", "group_prefix", "queue", "queue_prefix"])))]
pub struct AclArgs {
    /// The user (see `pgbroker user`).
    #[arg(long, value_parser = parse_user)]
    user: String,
    /// The permission: produce, consume (topics, queues), group (groups),
    /// admin (any).
    #[arg(long, value_parser = parse_permission, value_name = "PERMISSION")]
    allow: Permission,
    /// One topic, by name.
    #[arg(long, value_parser = topic_arg)]
    topic: Option<AclResource>,
    /// Every topic whose name starts with this prefix ('' for all topics).
    #[arg(long, value_parser = topic_prefix_arg, value_name = "PREFIX")]
    topic_prefix: Option<AclResource>,
    /// One consumer group, by id.
    #[arg(long, value_parser = group_arg)]
    group: Option<AclResource>,
    /// Every group whose id starts with this prefix ('' for all groups).
    #[arg(long, value_parser = group_prefix_arg, value_name = "PREFIX")]
    group_prefix: Option<AclResource>,
    /// One queue, by name (the SQS listener: produce = send, consume =
    /// receive, delete and change visibility, admin = create, delete,
    /// purge and set attributes).
    #[arg(long, value_parser = queue_arg)]
    queue: Option<AclResource>,
    /// Every queue whose name starts with this prefix ('' for all queues).
    #[arg(long, value_parser = queue_prefix_arg, value_name = "PREFIX")]
    queue_prefix: Option<AclResource>,
}

fn topic_arg(s: &str) -> Result<AclResource, String> {
    AclResource::topic(s).map_err(|e| e.to_string())
}

fn topic_prefix_arg(s: &str) -> Result<AclResource, String> {
    AclResource::topic_prefix(s).map_err(|e| e.to_string())
}

fn group_arg(s: &str) -> Result<AclResource, String> {
    AclResource::group(s).map_err(|e| e.to_string())
}

fn group_prefix_arg(s: &str) -> Result<AclResource, String> {
    AclResource::group_prefix(s).map_err(|e| e.to_string())
}

fn queue_arg(s: &str) -> Result<AclResource, String> {
    AclResource::queue(s).map_err(|e| e.to_string())
}

fn queue_prefix_arg(s: &str) -> Result<AclResource, String> {
    AclResource::queue_prefix(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<String, String> {
    pgbroker::validate_user_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

fn parse_permission(s: &str) -> Result<Permission, String> {
    s.parse().map_err(|e: pgbroker::Error| e.to_string())
}

impl AclArgs {
    /// The grant these flags describe, checked as a whole.
    fn acl(self) -> anyhow::Result<Acl> {
        let resource = self
            .topic
            .or(self.topic_prefix)
            .or(self.group)
            .or(self.group_prefix)
            .or(self.queue)
            .or(self.queue_prefix)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "one of --topic, --topic-prefix, --group, --group-prefix, --queue, --queue-prefix is required"
                )
            })?;
        Ok(Acl::new(&self.user, self.allow, resource)?)
    }
}

pub async fn run(broker: &Broker, cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Add(args) => {
            let acl = args.acl()?;
            if broker.grant(&acl).await? {
                println!("granted: {acl}");
            } else {
                println!("already granted: {acl}");
            }
            Ok(())
        }
        AclCommand::Remove(args) => {
            let acl = args.acl()?;
            broker.revoke(&acl).await?;
            println!("revoked: {acl}");
            Ok(())
        }
        AclCommand::List { user, format } => {
            let acls = broker.list_acls(user.as_deref()).await?;
            match format {
                Format::Json => print_json(&acls),
                Format::Table => print_acls(&acls),
            }
        }
    }
}

fn print_acls(acls: &[Acl]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = acls
        .iter()
        .map(|a| {
            vec![
                a.user.clone(),
                a.permission.to_string(),
                a.resource.resource_type().to_string(),
                a.resource.pattern().to_string(),
                a.resource.name().to_string(),
            ]
        })
        .collect();
    print_table(&["USER", "PERMISSION", "RESOURCE", "PATTERN", "NAME"], &rows)
}
