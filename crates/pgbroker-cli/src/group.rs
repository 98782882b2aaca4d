//! `pgbroker group ...`.

use pgbroker::groups::{GroupDescription, ResetTo};
use pgbroker::Broker;

use crate::output::{count, opt, print_json, print_table};
use crate::{Format, GroupCommand, ResetArgs};

pub async fn run(broker: &Broker, cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { format } => {
            let groups = broker.groups().list().await?;
            match format {
                Format::Json => print_json(&groups),
                Format::Table => {
                    let rows: Vec<Vec<String>> = groups.iter().map(|g| vec![g.to_string()]).collect();
                    print_table(&["GROUP"], &rows)
                }
            }
        }
        GroupCommand::Describe { group, format } => {
            let d = broker.groups().describe(&group).await?;
            match format {
                Format::Json => print_json(&d),
                Format::Table => print_description(&d),
            }
        }
        GroupCommand::ResetOffsets(args) => reset(broker, args).await,
        GroupCommand::Delete { group } => {
            broker.groups().delete(&group).await?;
            println!("deleted group {group}");
            Ok(())
        }
        GroupCommand::Config {
            group,
            set,
            unset,
            format,
        } => {
            let changes: Vec<(String, Option<String>)> = set
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .chain(unset.into_iter().map(|k| (k, None)))
                .collect();
            if !changes.is_empty() {
                broker.share_groups().alter_configs(&group, &changes).await?;
            }
            let entries = broker.share_groups().configs(&group).await?;
            match format {
                Format::Json => print_json(&entries),
                Format::Table => {
                    let rows: Vec<Vec<String>> = entries
                        .iter()
                        .map(|e| {
                            vec![
                                e.name.to_string(),
                                e.value.clone(),
                                if e.is_default { "default" } else { "set" }.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "VALUE", "SOURCE"], &rows)
                }
            }
        }
    }
}

async fn reset(broker: &Broker, args: ResetArgs) -> anyhow::Result<()> {
    // clap's ArgGroup guarantees exactly one target.
    let to = if args.to_earliest {
        ResetTo::Earliest
    } else if args.to_latest {
        ResetTo::Latest
    } else if let Some(o) = args.to_offset {
        ResetTo::Offset(o)
    } else if let Some(t) = args.to_datetime {
        ResetTo::Timestamp(t)
    } else {
        anyhow::bail!("give one of --to-earliest, --to-latest, --to-offset or --to-datetime");
    };
    let offsets = broker.groups().reset_offsets(&args.group, &args.topic, to).await?;
    let rows: Vec<Vec<String>> = offsets
        .iter()
        .map(|o| vec![args.topic.to_string(), o.partition.to_string(), o.offset.to_string()])
        .collect();
    print_table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
}

fn print_description(d: &GroupDescription) -> anyhow::Result<()> {
    println!(
        "group {} is {} (generation {}, strategy {}, {})",
        d.group,
        d.state,
        d.generation,
        d.strategy,
        count(d.members.len(), "member")
    );
    if !d.members.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                let parts: Vec<String> = m
                    .assignment
                    .iter()
                    .map(|tp| format!("{}/{}", tp.topic, tp.partition))
                    .collect();
                vec![m.member_id.clone(), m.client_id.clone(), parts.join(",")]
            })
            .collect();
        print_table(&["MEMBER", "CLIENT", "PARTITIONS"], &rows)?;
    }
    println!();
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.to_string(),
                p.partition.to_string(),
                opt(p.committed),
                p.high_watermark.to_string(),
                p.lag.to_string(),
                opt(p.member.as_deref()),
            ]
        })
        .collect();
    print_table(
        &["TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG", "MEMBER"],
        &rows,
    )
}
