//! `pgbroker txn ...`: the transactional ids Kafka producers use, their
//! open transactions, and aborting one that hangs.

use clap::Subcommand;
use pgbroker::txn::TxnDescription;
use pgbroker::Broker;
use serde_json::json;

use crate::output::{print_json, print_table};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum TxnCommand {
    /// Every transactional id: producer id, epoch, state, open partitions.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One transactional id, with the partitions of its open transaction.
    Describe {
        /// The transactional id.
        id: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Abort the open transaction of a transactional id (its markers are
    /// written, its pending offsets dropped) and bump its epoch, as a
    /// timeout would.
    Abort {
        /// The transactional id.
        id: String,
    },
}

fn as_json(d: &TxnDescription) -> serde_json::Value {
    json!({
        "transactional_id": d.transactional_id,
        "producer_id": d.producer_id,
        "epoch": d.epoch,
        "state": d.state.as_str(),
        "timeout_ms": d.timeout_ms,
        "started_at_ms": d.started_at.map(pgbroker::to_millis),
        "partitions": d.partitions.iter().map(|(t, p)| json!({"topic": t.as_str(), "partition": p})).collect::<Vec<_>>(),
    })
}

fn row(d: &TxnDescription) -> Vec<String> {
    let parts: Vec<String> = d.partitions.iter().map(|(t, p)| format!("{t}[{p}]")).collect();
    vec![
        d.transactional_id.clone(),
        d.producer_id.to_string(),
        d.epoch.to_string(),
        d.state.as_str().to_string(),
        d.timeout_ms.to_string(),
        parts.join(","),
    ]
}

const HEADERS: &[&str] = &[
    "TRANSACTIONAL ID",
    "PRODUCER ID",
    "EPOCH",
    "STATE",
    "TIMEOUT MS",
    "PARTITIONS",
];

pub async fn run(broker: &Broker, cmd: TxnCommand) -> anyhow::Result<()> {
    match cmd {
        TxnCommand::List { format } => {
            let all = broker.transactions().list().await?;
            match format {
                Format::Json => print_json(&all.iter().map(as_json).collect::<Vec<_>>()),
                Format::Table => print_table(HEADERS, &all.iter().map(row).collect::<Vec<_>>()),
            }
        }
        TxnCommand::Describe { id, format } => {
            let d = broker
                .transactions()
                .describe(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("unknown transactional id {id:?}"))?;
            match format {
                Format::Json => print_json(&as_json(&d)),
                Format::Table => print_table(HEADERS, &[row(&d)]),
            }
        }
        TxnCommand::Abort { id } => {
            if broker.transactions().abort(&id).await? {
                println!("aborted the open transaction of {id}");
            } else {
                println!("{id} has no open transaction");
            }
            Ok(())
        }
    }
}
