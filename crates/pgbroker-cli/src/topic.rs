//! `pgbroker topic ...`.

use pgbroker::streams::TopicInfo;
use pgbroker::{Broker, TopicConfig};

use crate::output::{count, millis, opt, print_json, print_table};
use crate::{AlterTopicArgs, CreateTopicArgs, Format, TopicCommand};

pub async fn run(broker: &Broker, cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create(args) => create(broker, args).await,
        TopicCommand::List { format } => {
            let topics = broker.topics().list().await?;
            match format {
                Format::Json => print_json(&topics),
                Format::Table => print_topics(&topics),
            }
        }
        TopicCommand::Describe { topic, format } => {
            let d = broker.topics().describe(&topic).await?;
            match format {
                Format::Json => print_json(&d),
                Format::Table => {
                    print_topics(std::slice::from_ref(&d.topic))?;
                    println!();
                    let rows: Vec<Vec<String>> = d
                        .partition_states
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                p.log_start_offset.to_string(),
                                p.high_watermark.to_string(),
                                p.records.to_string(),
                                p.bytes.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["PARTITION", "LOG-START", "HIGH-WATERMARK", "RECORDS", "BYTES"], &rows)
                }
            }
        }
        TopicCommand::AddPartitions { topic, count } => {
            let info = broker.topics().add_partitions(&topic, count).await?;
            println!(
                "topic {} now has {}",
                info.name,
                crate::output::count(info.partitions, "partition")
            );
            Ok(())
        }
        TopicCommand::Delete { topic } => {
            broker.topics().delete(&topic).await?;
            println!("deleted topic {topic}");
            Ok(())
        }
        TopicCommand::Alter(args) => alter(broker, args).await,
        TopicCommand::Cleaner { format } => {
            let status = broker.maintenance().cleaner_status().await?;
            match format {
                Format::Json => print_json(&status),
                Format::Table => {
                    let rows: Vec<Vec<String>> = status
                        .iter()
                        .map(|s| {
                            vec![
                                s.topic.clone(),
                                s.partition.to_string(),
                                s.clean_offset.to_string(),
                                s.dirty_offsets.to_string(),
                                s.bytes_reclaimed.to_string(),
                            ]
                        })
                        .collect();
                    print_table(
                        &["TOPIC", "PARTITION", "CLEAN-OFFSET", "DIRTY", "BYTES-RECLAIMED"],
                        &rows,
                    )
                }
            }
        }
    }
}

async fn create(broker: &Broker, args: CreateTopicArgs) -> anyhow::Result<()> {
    let defaults = TopicConfig::default();
    let max_message_bytes = match args.max_message_bytes {
        Some(n) => usize::try_from(n)?,
        None => defaults.max_message_bytes,
    };
    let mut config = TopicConfig {
        partitions: args.partitions,
        retention: args.retention.and_then(crate::Retention::duration),
        retention_bytes: args.retention_bytes,
        segment_records: args.segment_records.unwrap_or(defaults.segment_records),
        max_message_bytes,
        cleanup: defaults.cleanup,
    };
    args.cleanup.apply(&mut config.cleanup);
    let info = broker.topics().create(&args.topic, &config).await?;
    println!(
        "created topic {} with {}",
        info.name,
        count(info.partitions, "partition")
    );
    Ok(())
}

async fn alter(broker: &Broker, args: AlterTopicArgs) -> anyhow::Result<()> {
    let mut config = broker.topics().info(&args.topic).await?.config();
    if let Some(r) = args.retention {
        config.retention = Some(r);
    }
    if let Some(b) = args.retention_bytes {
        config.retention_bytes = Some(b);
    }
    if let Some(m) = args.max_message_bytes {
        config.max_message_bytes = usize::try_from(m)?;
    }
    args.cleanup.apply(&mut config.cleanup);
    let info = broker.topics().alter(&args.topic, &config).await?;
    println!("altered topic {} (cleanup.policy {})", info.name, info.cleanup.policy);
    Ok(())
}

fn print_topics(topics: &[TopicInfo]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.name.to_string(),
                t.partitions.to_string(),
                millis(t.retention_ms),
                opt(t.retention_bytes),
                t.segment_records.to_string(),
                t.max_message_bytes.to_string(),
                t.cleanup.policy.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "TOPIC",
            "PARTITIONS",
            "RETENTION",
            "RETENTION-BYTES",
            "SEGMENT-RECORDS",
            "MAX-MESSAGE-BYTES",
            "CLEANUP-POLICY",
        ],
        &rows,
    )
}
