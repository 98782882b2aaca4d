//! `pgbroker produce` and `pgbroker consume`.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pgbroker::groups::share::{Settle, ShareConsumer};
use pgbroker::streams::{ConsumedRecord, FetchLimits, OffsetReset, OffsetSpec};
use pgbroker::{Broker, Consumer, ConsumerConfig, GroupId, Header, Record, TopicName, TopicPartition};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, Notify};

use crate::output::{count, write_record};
use crate::{ConsumeArgs, ProduceArgs};

/// Lines per `pgbroker::streams::Streams::produce` call.
const BATCH: usize = 500;
/// How long a partial batch waits for more input before it is sent, so that
/// interactive input is written line by line while piped input is batched.
const LINGER: Duration = Duration::from_millis(100);

pub async fn produce(broker: &Broker, args: ProduceArgs) -> anyhow::Result<()> {
    // Check topic and partition before reading any input.
    let info = broker.topics().info(&args.topic).await?;
    if let Some(p) = args.partition {
        if p >= info.partitions {
            return Err(pgbroker::Error::UnknownPartition {
                topic: args.topic.to_string(),
                partition: p,
                count: usize::try_from(info.partitions).unwrap_or(0),
            }
            .into());
        }
    }
    let headers: Vec<Header> = args
        .headers
        .iter()
        .map(|(k, v)| Header {
            key: k.clone(),
            value: Some(v.clone().into_bytes()),
        })
        .collect();
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let (tx, mut rx) = mpsc::channel(BATCH * 2);
    tokio::spawn(read_lines(tx));
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut written = 0usize;
    let mut read_error = None;
    let bar = crate::progress::input(crate::progress::stdin_file_len(), "records written");
    let mut read_bytes = 0u64;
    let show = |written: usize, read_bytes: u64| {
        if let Some(bar) = &bar {
            bar.set_position(read_bytes);
            bar.set_message(format!("{} written", count(written, "record")));
        }
    };
    loop {
        let next = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(LINGER, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    written += send(broker, &args, &mut batch, written).await?;
                    show(written, read_bytes);
                    continue;
                }
            }
        };
        match next {
            Some(Ok(line)) => {
                read_bytes += u64::try_from(line.len()).unwrap_or(0) + 1;
                batch.push(to_record(line, separator, &headers));
                if batch.len() >= BATCH {
                    written += send(broker, &args, &mut batch, written).await?;
                    show(written, read_bytes);
                }
            }
            Some(Err(e)) => {
                read_error = Some(e);
                break;
            }
            None => break,
        }
    }
    // Complete lines read before an input error are still written.
    written += send(broker, &args, &mut batch, written).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    eprintln!("wrote {} to {}", count(written, "record"), args.topic);
    match read_error {
        Some(e) => Err(anyhow::Error::new(e).context("reading standard input")),
        None => Ok(()),
    }
}

/// Writes and empties the batch; returns how many records it held.
async fn send(broker: &Broker, args: &ProduceArgs, batch: &mut Vec<Record>, before: usize) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    broker
        .streams()
        .produce(&args.topic, args.partition, batch)
        .await
        .with_context(|| format!("writing to {} ({before} records written before)", args.topic))?;
    let n = batch.len();
    batch.clear();
    Ok(n)
}

/// Reads stdin line by line (bytes, so non-UTF-8 input is kept as is) into
/// the channel. It runs apart from the producing loop so that the loop can
/// time out on a pause in the input without losing a partly read line.
pub(crate) async fn read_lines(tx: mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let mut reader = tokio::io::BufReader::new(tokio::io::stdin());
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // The receiver may be gone already; nothing else to tell.
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// One input line as a record: split at the first separator into key and
/// value, or all value when there is no separator (or it does not occur).
fn to_record(line: Vec<u8>, separator: Option<&[u8]>, headers: &[Header]) -> Record {
    let split = separator.and_then(|sep| {
        let at = line.windows(sep.len()).position(|w| w == sep)?;
        Some((line[..at].to_vec(), line[at + sep.len()..].to_vec()))
    });
    let (key, value) = match split {
        Some((k, v)) => (Some(k), v),
        None => (None, line),
    };
    Record {
        key: key.map(Into::into),
        value: Some(value.into()),
        headers: headers.to_vec(),
        timestamp: None,
    }
}

/// Resolves once Ctrl-C was pressed, also when pressed while nobody waited
/// (`notify_one` keeps a permit).
pub(crate) fn interrupt_signal() -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            n.notify_one();
        }
    });
    notify
}

/// Why the consume loop ended.
enum Stop {
    /// Enough records or idle: positions are committed, leave normally.
    Done,
    /// Ctrl-C, possibly in the middle of a poll that had already moved
    /// positions past records never printed: leave without committing.
    Interrupted,
}

pub async fn consume(broker: &Broker, args: ConsumeArgs) -> anyhow::Result<()> {
    let limit = args.max_messages.unwrap_or(u64::MAX);
    if let Some(partition) = args.partition {
        return consume_partition(broker, &args, partition, limit).await;
    }
    if let Some(group) = &args.share_group {
        return consume_shared(broker, &args, group.clone(), limit).await;
    }
    let mut config = ConsumerConfig::new(vec![args.topic.clone()], args.group.clone());
    config.reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    config.max_records = usize::try_from(limit.min(500)).unwrap_or(500);
    let mut consumer = Consumer::new(broker.clone(), config).await?;
    let outcome = consume_loop(&mut consumer, &args, limit).await;
    match outcome {
        Ok(Stop::Done) => consumer.close().await?,
        Ok(Stop::Interrupted) | Err(_) => {
            // Leave at once so the next run is not assigned fewer partitions
            // while this member's session runs out.
            if let Some(m) = consumer.membership() {
                if let Err(e) = broker.groups().leave(&m.group, &m.member_id).await {
                    tracing::warn!(error = %e, "could not leave the group");
                }
            }
        }
    }
    outcome.map(|_| ())
}

async fn consume_loop(consumer: &mut Consumer, args: &ConsumeArgs, limit: u64) -> anyhow::Result<Stop> {
    let interrupt = interrupt_signal();
    let mut printed = 0u64;
    while printed < limit {
        let batch = tokio::select! {
            batch = consumer.poll(args.idle_timeout) => batch?,
            () = interrupt.notified() => return Ok(Stop::Interrupted),
        };
        if batch.is_empty() {
            break; // idle for idle_timeout
        }
        let room = usize::try_from(limit - printed).unwrap_or(usize::MAX);
        let take = batch.len().min(room);
        print_records(args, batch[..take].iter().map(|c| (&c.topic, &c.record)))?;
        rewind_unprinted(consumer, &batch[take..])?;
        consumer.commit().await?;
        printed += u64::try_from(take)?;
    }
    Ok(Stop::Done)
}

/// The poll moved positions past every record it returned; move them back
/// to the first record not printed on each partition, so that commits cover
/// printed records only.
fn rewind_unprinted(consumer: &mut Consumer, unprinted: &[ConsumedRecord]) -> anyhow::Result<()> {
    let mut done = BTreeSet::new();
    for c in unprinted {
        let tp = TopicPartition {
            topic: c.topic.clone(),
            partition: c.record.partition,
        };
        if !done.contains(&tp) {
            consumer.seek(&tp, c.record.offset)?;
            done.insert(tp);
        }
    }
    Ok(())
}

fn print_records<'a>(
    args: &ConsumeArgs,
    records: impl Iterator<Item = (&'a TopicName, &'a pgbroker::StoredRecord)>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (topic, record) in records {
        write_record(&mut out, args.format, args.print_key, topic, record)?;
    }
    out.flush()?;
    Ok(())
}

/// `--partition` (and `--offset`): one partition, no group, plain fetches.
async fn consume_partition(broker: &Broker, args: &ConsumeArgs, partition: i32, limit: u64) -> anyhow::Result<()> {
    let topic = &args.topic;
    let mut offset = match args.offset {
        Some(o) => o,
        None => {
            let spec = if args.from_beginning {
                OffsetSpec::Earliest
            } else {
                OffsetSpec::Latest
            };
            broker.streams().resolve_offset(topic, partition, spec).await?
        }
    };
    let interrupt = interrupt_signal();
    let mut printed = 0u64;
    while printed < limit {
        let room = usize::try_from(limit - printed).unwrap_or(usize::MAX);
        let limits = FetchLimits {
            max_records: room.min(500),
            max_wait: args.idle_timeout,
            ..FetchLimits::default()
        };
        let fetched = tokio::select! {
            r = broker.streams().fetch_committed(topic, partition, offset, limits) => {
                r.with_context(|| format!("cannot read {topic}/{partition} at offset {offset}"))?
            }
            () = interrupt.notified() => break,
        };
        let records = &fetched.records[..fetched.records.len().min(room)];
        let Some(last) = records.last() else {
            // Only transaction markers or aborted records: step over them.
            if fetched.next_offset > offset {
                offset = fetched.next_offset;
                continue;
            }
            break; // idle for idle_timeout
        };
        offset = if records.len() == fetched.records.len() {
            fetched.next_offset.max(last.offset + 1)
        } else {
            last.offset + 1
        };
        print_records(args, records.iter().map(|r| (topic, r)))?;
        printed += u64::try_from(records.len())?;
    }
    Ok(())
}

/// `--share-group`: a member of a share group, settling what it printed.
async fn consume_shared(broker: &Broker, args: &ConsumeArgs, group: GroupId, limit: u64) -> anyhow::Result<()> {
    let how = if args.release {
        Settle::Release
    } else if args.reject {
        Settle::Reject
    } else {
        Settle::Accept
    };
    let mut member = ShareConsumer::join(broker.clone(), group, vec![args.topic.clone()]).await?;
    let interrupt = interrupt_signal();
    let mut printed = 0u64;
    let outcome: anyhow::Result<()> = async {
        while printed < limit {
            let room = usize::try_from(limit - printed).unwrap_or(usize::MAX).min(500);
            let got = tokio::select! {
                got = member.poll(room, args.idle_timeout) => got?,
                () = interrupt.notified() => break,
            };
            if got.is_empty() {
                break; // idle for idle_timeout
            }
            print_records(args, got.iter().map(|r| (&r.topic, &r.record)))?;
            member.acknowledge(&got, how).await?;
            printed += u64::try_from(got.len())?;
        }
        Ok(())
    }
    .await;
    // Leaving puts back at once whatever is still held.
    member.close().await?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_first_separator() {
        let r = to_record(b"k:v:w".to_vec(), Some(b":"), &[]);
        assert_eq!(
            (r.key.as_deref(), r.value.as_deref()),
            (Some(&b"k"[..]), Some(&b"v:w"[..]))
        );
        let r = to_record(b"novalue".to_vec(), Some(b"::"), &[]);
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"novalue"[..])));
        let r = to_record(b"a::b".to_vec(), Some(b"::"), &[]);
        assert_eq!(
            (r.key.as_deref(), r.value.as_deref()),
            (Some(&b"a"[..]), Some(&b"b"[..]))
        );
        let r = to_record(b"k:v".to_vec(), None, &[]);
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"k:v"[..])));
    }
}
