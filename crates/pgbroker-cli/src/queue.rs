//! `pgbroker queue ...`: work queues.

use std::io::{BufWriter, Write};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use pgbroker::queues::{NackOptions, QueueInfo, ReceiveOptions};
use pgbroker::{Broker, Header, Message, QueueConfig, QueueName, Receipt};
use tokio::sync::mpsc;

use crate::output::{count, millis, opt, print_json, print_table};
use crate::stream::{interrupt_signal, read_lines};
use crate::{parse_datetime, parse_header, parse_positive_duration, Format};

/// Lines per `send_batch` call.
const BATCH: usize = 500;
/// How long a partial batch waits for more input before it is sent.
const LINGER: Duration = Duration::from_millis(100);

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue.
    Create(CreateArgs),
    /// Change settings of a queue; settings not given stay as they are.
    Update(UpdateArgs),
    /// List queues and their settings.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Count ready, in-flight, delayed and dead-lettered messages.
    Stats {
        #[arg(value_parser = parse_queue)]
        queue: QueueName,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete every message of a queue (ready, delayed, in flight and dead).
    Purge {
        #[arg(value_parser = parse_queue)]
        queue: QueueName,
    },
    /// Delete a queue with its messages.
    Delete {
        #[arg(value_parser = parse_queue)]
        queue: QueueName,
    },
    /// Send one message per line of standard input; prints each message's id.
    Send(SendArgs),
    /// Receive messages under a lease; prints `receipt<TAB>body` per message
    /// (only the body with --ack), or JSON.
    Receive(ReceiveArgs),
    /// Acknowledge messages: they are done. All receipts must be current.
    Ack {
        #[arg(value_parser = parse_queue)]
        queue: QueueName,
        #[arg(required = true, value_parser = parse_receipt)]
        receipts: Vec<Receipt>,
    },
    /// Release messages for another attempt, after --delay or the queue's
    /// retry backoff. All receipts must be current.
    Nack {
        #[arg(value_parser = parse_queue)]
        queue: QueueName,
        #[arg(required = true, value_parser = parse_receipt)]
        receipts: Vec<Receipt>,
        /// Due again after this long (0s: at once) instead of the backoff.
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
        /// Why processing failed; kept as the message's last error.
        #[arg(long)]
        error: Option<String>,
    },
    /// Extend a lease by DURATION past its current end.
    Extend {
        #[arg(value_parser = parse_queue)]
        queue: QueueName,
        #[arg(value_parser = parse_receipt)]
        receipt: Receipt,
        #[arg(long, value_parser = parse_positive_duration)]
        by: Duration,
    },
    /// Move the dead letters held in a queue back where they came from, or
    /// to --to.
    Redrive {
        #[arg(value_parser = parse_queue)]
        queue: QueueName,
        #[arg(long, value_parser = parse_queue)]
        to: Option<QueueName>,
    },
}

/// Settings of `queue create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(value_parser = parse_queue)]
    queue: QueueName,
    /// Lease of a received message (default 30s).
    #[arg(long, value_parser = parse_positive_duration)]
    visibility_timeout: Option<Duration>,
    /// Deliveries before a message is dead-lettered (default 5).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=i64::from(pgbroker::queues::MAX_ATTEMPTS_LIMIT)))]
    max_attempts: Option<i32>,
    /// Queue that receives messages out of attempts; without one they stay
    /// in this queue, dead.
    #[arg(long, value_parser = parse_queue)]
    dead_letter: Option<QueueName>,
    /// First retry delay after a failed delivery (default 1s); doubles per
    /// attempt, with jitter.
    #[arg(long, value_parser = humantime::parse_duration)]
    backoff_base: Option<Duration>,
    /// Longest retry delay (default 15m).
    #[arg(long, value_parser = humantime::parse_duration)]
    backoff_max: Option<Duration>,
    /// Keep acknowledged messages this long in the archive (default: not kept).
    #[arg(long, value_parser = parse_positive_duration)]
    archive_retention: Option<Duration>,
    /// Largest message (body and headers) accepted, in bytes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=pgbroker::queues::QUEUE_MAX_MESSAGE_BYTES_LIMIT as u64))]
    max_message_bytes: Option<u64>,
}

/// Settings of `queue update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    settings: CreateArgs,
    /// Remove the dead-letter queue.
    #[arg(long, conflicts_with = "dead_letter")]
    no_dead_letter: bool,
    /// Stop archiving acknowledged messages.
    #[arg(long, conflicts_with = "archive_retention")]
    no_archive: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[arg(value_parser = parse_queue)]
    queue: QueueName,
    /// Deliver no earlier than this long from now.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Deliver no earlier than this RFC 3339 time.
    #[arg(long, conflicts_with = "delay", value_parser = parse_datetime)]
    deliver_at: Option<SystemTime>,
    /// 0 (default) to 9; higher is delivered first.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=i64::from(pgbroker::queues::MAX_PRIORITY)))]
    priority: u8,
    /// Deduplication key of every line: while a message with it is in the
    /// queue, sending it again is a no-op that prints the first id.
    #[arg(long)]
    dedup_key: Option<String>,
    /// FIFO group of every line: delivered one at a time, in order.
    #[arg(long)]
    group: Option<String>,
    /// A header added to every message (repeatable).
    #[arg(long = "header", value_name = "K=V", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

/// Output format of `queue receive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MessageFormat {
    /// `receipt<TAB>body` per message; only the body with --ack.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    #[arg(value_parser = parse_queue)]
    queue: QueueName,
    /// Most messages to receive.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=pgbroker::queues::MAX_RECEIVE as u64))]
    max: u64,
    /// Wait this long for a message when none is ready.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Lease for these messages instead of the queue's.
    #[arg(long, value_parser = parse_positive_duration)]
    visibility_timeout: Option<Duration>,
    /// Acknowledge the messages after printing them.
    #[arg(long)]
    ack: bool,
    #[arg(long, value_enum, default_value_t = MessageFormat::Text)]
    format: MessageFormat,
}

fn parse_queue(s: &str) -> Result<QueueName, String> {
    QueueName::new(s).map_err(|e| e.to_string())
}

fn parse_receipt(s: &str) -> Result<Receipt, String> {
    s.parse().map_err(|e: pgbroker::Error| e.to_string())
}

pub async fn run(broker: &Broker, cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::Create(args) => {
            let info = broker
                .queues()
                .create(&args.queue, &config(QueueConfig::default(), &args)?)
                .await?;
            println!("created queue {}", info.name);
            Ok(())
        }
        QueueCommand::Update(args) => update(broker, args).await,
        QueueCommand::List { format } => {
            let queues = broker.queues().list().await?;
            match format {
                Format::Json => print_json(&queues),
                Format::Table => print_queues(&queues),
            }
        }
        QueueCommand::Stats { queue, format } => {
            let s = broker.queues().stats(&queue).await?;
            match format {
                Format::Json => print_json(&s),
                Format::Table => {
                    print_table(
                        &["READY", "IN-FLIGHT", "DELAYED", "DEAD-LETTERED", "OLDEST-READY-AGE"],
                        &[vec![
                            s.ready.to_string(),
                            s.in_flight.to_string(),
                            s.delayed.to_string(),
                            s.dead_lettered.to_string(),
                            millis(s.oldest_ready_age_ms),
                        ]],
                    )?;
                    let queues = broker.queues().list().await?;
                    println!();
                    for line in crate::queue_text::dead_letter_notes(&queue, &queues) {
                        println!("{line}");
                    }
                    Ok(())
                }
            }
        }
        QueueCommand::Purge { queue } => {
            let n = broker.queues().purge(&queue).await?;
            println!("purged {} from {queue}", count(n, "message"));
            Ok(())
        }
        QueueCommand::Delete { queue } => {
            broker.queues().delete(&queue).await?;
            println!("deleted queue {queue}");
            Ok(())
        }
        QueueCommand::Send(args) => send(broker, args).await,
        QueueCommand::Receive(args) => receive(broker, args).await,
        QueueCommand::Ack { queue, receipts } => {
            broker.queues().ack(&queue, &receipts).await?;
            println!("acknowledged {}", count(receipts.len(), "message"));
            Ok(())
        }
        QueueCommand::Nack {
            queue,
            receipts,
            delay,
            error,
        } => {
            broker
                .queues()
                .nack(&queue, &receipts, &NackOptions { delay, error })
                .await?;
            println!("released {}", count(receipts.len(), "message"));
            Ok(())
        }
        QueueCommand::Extend { queue, receipt, by } => {
            let ends = broker
                .queues()
                .extend_lease(&queue, std::slice::from_ref(&receipt), by)
                .await?;
            let end = ends.first().copied().unwrap_or_else(SystemTime::now);
            println!(
                "lease of {receipt} now ends at {}",
                humantime::format_rfc3339_millis(end)
            );
            Ok(())
        }
        QueueCommand::Redrive { queue, to } => {
            // One transaction however many move: a spinner, not a bar.
            let bar = crate::progress::spinner(format!("moving the dead letters of {queue}"));
            let moved = broker.queues().redrive(&queue, to.as_ref()).await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let n = moved?;
            println!("moved {} from {queue}", count(n, "message"));
            Ok(())
        }
    }
}

/// `base` with the settings given on the command line.
fn config(base: QueueConfig, args: &CreateArgs) -> anyhow::Result<QueueConfig> {
    Ok(QueueConfig {
        visibility_timeout: args.visibility_timeout.unwrap_or(base.visibility_timeout),
        max_attempts: args.max_attempts.unwrap_or(base.max_attempts),
        dead_letter: args.dead_letter.clone().or(base.dead_letter),
        backoff_base: args.backoff_base.unwrap_or(base.backoff_base),
        backoff_max: args.backoff_max.unwrap_or(base.backoff_max),
        archive_retention: args.archive_retention.or(base.archive_retention),
        max_message_bytes: match args.max_message_bytes {
            Some(n) => usize::try_from(n)?,
            None => base.max_message_bytes,
        },
    })
}

async fn update(broker: &Broker, args: UpdateArgs) -> anyhow::Result<()> {
    let info = broker.queues().info(&args.settings.queue).await?;
    let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    let current = QueueConfig {
        visibility_timeout: ms(info.visibility_timeout_ms),
        max_attempts: info.max_attempts,
        dead_letter: if args.no_dead_letter { None } else { info.dead_letter },
        backoff_base: ms(info.backoff_base_ms),
        backoff_max: ms(info.backoff_max_ms),
        archive_retention: if args.no_archive {
            None
        } else {
            info.archive_retention_ms.map(ms)
        },
        max_message_bytes: info.max_message_bytes,
    };
    let updated = broker
        .queues()
        .update(&args.settings.queue, &config(current, &args.settings)?)
        .await?;
    print_queues(std::slice::from_ref(&updated))
}

fn print_queues(queues: &[QueueInfo]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                q.name.to_string(),
                millis(Some(q.visibility_timeout_ms)),
                q.max_attempts.to_string(),
                opt(q.dead_letter.as_ref()),
                format!(
                    "{}..{}",
                    millis(Some(q.backoff_base_ms)),
                    millis(Some(q.backoff_max_ms))
                ),
                millis(q.archive_retention_ms),
                q.max_message_bytes.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "QUEUE",
            "VISIBILITY-TIMEOUT",
            "MAX-ATTEMPTS",
            "DEAD-LETTER",
            "BACKOFF",
            "ARCHIVE",
            "MAX-MESSAGE-BYTES",
        ],
        &rows,
    )
}

async fn send(broker: &Broker, args: SendArgs) -> anyhow::Result<()> {
    // Check the queue and the settings before reading any input.
    broker.queues().info(&args.queue).await?;
    let template = Message {
        body: Vec::new(),
        headers: args
            .headers
            .iter()
            .map(|(k, v)| Header {
                key: k.clone(),
                value: Some(v.clone().into_bytes()),
            })
            .collect(),
        priority: args.priority,
        delay: args.delay,
        deliver_at: args.deliver_at,
        dedup_key: args.dedup_key.clone(),
        group: args.group.clone(),
    };
    let (tx, mut rx) = mpsc::channel(BATCH * 2);
    tokio::spawn(read_lines(tx));
    let mut batch: Vec<Message> = Vec::with_capacity(BATCH);
    let (mut sent, mut duplicates) = (0usize, 0usize);
    let mut read_error = None;
    loop {
        let next = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(LINGER, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(broker, &args.queue, &mut batch, &mut sent, &mut duplicates).await?;
                    continue;
                }
            }
        };
        match next {
            Some(Ok(line)) => {
                batch.push(Message {
                    body: line,
                    ..template.clone()
                });
                if batch.len() >= BATCH {
                    flush(broker, &args.queue, &mut batch, &mut sent, &mut duplicates).await?;
                }
            }
            Some(Err(e)) => {
                read_error = Some(e);
                break;
            }
            None => break,
        }
    }
    flush(broker, &args.queue, &mut batch, &mut sent, &mut duplicates).await?;
    eprintln!(
        "sent {} to {} ({})",
        count(sent, "message"),
        args.queue,
        count(duplicates, "duplicate")
    );
    match read_error {
        Some(e) => Err(anyhow::Error::new(e).context("reading standard input")),
        None => Ok(()),
    }
}

/// Sends and empties the batch; prints the ids.
async fn flush(
    broker: &Broker,
    queue: &QueueName,
    batch: &mut Vec<Message>,
    sent: &mut usize,
    duplicates: &mut usize,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let result = broker
        .queues()
        .send_batch(queue, batch)
        .await
        .with_context(|| format!("sending to {queue} ({sent} messages sent before)"))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for s in &result {
        writeln!(out, "{}", s.id)?;
    }
    out.flush()?;
    *sent += result.iter().filter(|s| !s.duplicate).count();
    *duplicates += result.iter().filter(|s| s.duplicate).count();
    batch.clear();
    Ok(())
}

async fn receive(broker: &Broker, args: ReceiveArgs) -> anyhow::Result<()> {
    let options = ReceiveOptions {
        max_messages: usize::try_from(args.max)?,
        wait: args.wait,
        visibility_timeout: args.visibility_timeout,
    };
    let interrupt = interrupt_signal();
    let got = tokio::select! {
        got = broker.queues().receive(&args.queue, &options) => got?,
        () = interrupt.notified() => return Ok(()),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for m in &got {
        match args.format {
            MessageFormat::Json => writeln!(out, "{}", crate::queue_text::message_json(m))?,
            MessageFormat::Text if args.ack => writeln!(out, "{}", String::from_utf8_lossy(&m.body))?,
            MessageFormat::Text => writeln!(out, "{}\t{}", m.receipt, String::from_utf8_lossy(&m.body))?,
        }
    }
    out.flush()?;
    drop(out);
    if args.ack && !got.is_empty() {
        // Printed first: if the acknowledgement fails, the messages come
        // back after their lease rather than being lost.
        let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
        broker.queues().ack(&args.queue, &receipts).await?;
    }
    Ok(())
}
