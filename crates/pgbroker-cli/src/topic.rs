//! `pgbroker topic ...`.

use pgbroker::streams::TopicInfo;
use pgbroker::{Broker, TopicConfig};

use crate::output::{count, millis, opt, print_json, print_table};
use crate::{CreateTopicArgs, Format, TopicCommand};

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
    }
}

async fn create(broker: &Broker, args: CreateTopicArgs) -> anyhow::Result<()> {
    let defaults = TopicConfig::default();
    let max_message_bytes = match args.max_message_bytes {
        Some(n) => usize::try_from(n)?,
        None => defaults.max_message_bytes,
    };
    let config = TopicConfig {
        partitions: args.partitions,
        retention: args.retention.and_then(crate::Retention::duration),
        retention_bytes: args.retention_bytes,
        segment_records: args.segment_records.unwrap_or(defaults.segment_records),
        max_message_bytes,
    };
    let info = broker.topics().create(&args.topic, &config).await?;
    println!(
        "created topic {} with {}",
        info.name,
        count(info.partitions, "partition")
    );
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
        ],
        &rows,
    )
}
