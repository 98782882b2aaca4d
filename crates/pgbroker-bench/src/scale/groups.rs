//! `scale-groups` and `scale-members`: librdkafka consumers in this
//! process reading a backlog produced beforehand (not measured) through
//! `pgbroker serve`. `scale-groups` has N groups of one member on a topic
//! of 8 partitions; `scale-members` one group of N members on a topic of
//! 100 partitions. Each point uses new group ids, so every group reads
//! from the start of the backlog. It measures the time from the first
//! subscription to every group being stable (all partitions assigned, each
//! member with some when there are enough), then, over the measured time,
//! the records read per second by all consumers together and the CPU of
//! the broker, of Postgres and of this process, in cores.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::{drop_schema, populate, schema_name, Emit, ScaleArgs, ScalePoint};
use crate::kafka::Server;
use crate::measure::{payload, stamped};
use crate::procfs::{BrokerProcess, Cpu};
use crate::systems::Endpoints;

/// The longest a point waits for its groups to be stable.
const STABLE_WITHIN: Duration = Duration::from_secs(180);

/// Sweeps the number of groups of one member.
pub async fn groups(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    curve(env, args, "scale-groups", "groups", 8, &args.groups, emit).await
}

/// Sweeps the members of one group.
pub async fn members(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    curve(env, args, "scale-members", "members", 100, &args.members, emit).await
}

async fn curve(
    env: &Endpoints,
    args: &ScaleArgs,
    scenario: &str,
    knob: &str,
    partitions: i32,
    values: &[u32],
    emit: &mut Emit<'_>,
) -> Result<()> {
    let url = env.database_url.as_str();
    let schema = schema_name(knob);
    populate(url, &schema, &[("bench".to_string(), partitions)]).await?;
    let outcome = async {
        let server = Server::start_with(
            &env.pgbroker_bin,
            url,
            &schema,
            false,
            &["--max-connections".into(), "4096".into()],
        )
        .await?;
        let points = async {
            prefill(&server.bootstrap, partitions, args.backlog).await?;
            for &n in values {
                let (groups, members) = if knob == "groups" { (n, 1) } else { (1, n) };
                let mut p = ScalePoint::new(scenario, knob, u64::from(n));
                let shape = Shape {
                    partitions,
                    groups,
                    members,
                };
                read(&server, &shape, args.duration, args.backlog, &mut p)
                    .await
                    .with_context(|| format!("{scenario} at {n}"))?;
                emit(p)?;
            }
            anyhow::Ok(())
        }
        .await;
        server.stop().await?;
        points
    }
    .await;
    drop_schema(url, &schema).await?;
    outcome
}

/// Produces `n` records of 256 bytes round-robin over the partitions of
/// `bench`, in flights of 50,000.
async fn prefill(bootstrap: &str, partitions: i32, n: u64) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating the backlog's producer")?;
    let base = payload(256);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let flight = (n - sent).min(50_000);
        let now = SystemTime::now();
        let values: Vec<Vec<u8>> = (0..flight).map(|_| stamped(&base, now)).collect();
        let sends = values.iter().enumerate().map(|(i, v)| {
            let partition = i32::try_from(i).unwrap_or(0) % partitions.max(1);
            producer.send(
                FutureRecord::<(), [u8]>::to("bench").partition(partition).payload(v),
                Duration::from_secs(60),
            )
        });
        for outcome in join_all(sends).await {
            outcome.map_err(|(e, _)| e).context("producing the backlog")?;
        }
        sent += flight;
    }
    eprintln!("backlog of {n} records in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The consumers of one point.
struct Shape {
    partitions: i32,
    groups: u32,
    members: u32,
}

/// Whether every group of `consumers` (listed group by group, `members`
/// each) has all `partitions` assigned, each member some when there are
/// at least as many partitions as members.
fn stable(assigned: &[usize], members: usize, partitions: usize) -> bool {
    !assigned.is_empty()
        && assigned.chunks(members.max(1)).all(|group| {
            group.iter().sum::<usize>() == partitions && (group.len() > partitions || group.iter().all(|&n| n > 0))
        })
}

/// Reads with `shape`'s consumers; the measured time ends after
/// `duration`, or earlier once every group has read all `backlog`
/// records (a rate over a window the groups spent partly idle would be
/// the backlog's size, not their speed).
async fn read(server: &Server, shape: &Shape, duration: Duration, backlog: u64, p: &mut ScalePoint) -> Result<()> {
    let mut consumers = Vec::new();
    for g in 0..shape.groups {
        for _ in 0..shape.members {
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &server.bootstrap)
                .set("group.id", format!("scale-{}-{}-g{g}", p.knob, p.value))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "true")
                .set("fetch.wait.max.ms", "100")
                // librdkafka's default prefetch (64 MiB a consumer) times
                // 200 consumers would not fit beside everything else.
                .set("queued.max.messages.kbytes", "4096")
                .set("queued.min.messages", "10000")
                .create()
                .context("creating a librdkafka consumer")?;
            consumers.push(Arc::new(consumer));
        }
    }
    let (count, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in &consumers {
        c.subscribe(&["bench"])?;
        let (c, count, stop) = (c.clone(), count.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(got) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await {
                    got.context("consuming")?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    let (members, partitions) = (usize::try_from(shape.members)?, usize::try_from(shape.partitions)?);
    let measured = async {
        loop {
            let assigned: Vec<usize> = consumers
                .iter()
                .map(|c| c.assignment().map_or(0, |a| a.count()))
                .collect();
            if stable(&assigned, members, partitions) {
                break;
            }
            if started.elapsed() > STABLE_WITHIN {
                bail!("groups not stable after {STABLE_WITHIN:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.set("rebalance_ms", started.elapsed().as_secs_f64() * 1e3);
        let broker = BrokerProcess::Pid(server.pid()?);
        let (cpu0, read0, t0) = (Cpu::now(&broker), count.load(Ordering::Relaxed), Instant::now());
        let everything = backlog * u64::from(shape.groups);
        while t0.elapsed() < duration && count.load(Ordering::Relaxed) < everything {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (cpu1, read1) = (Cpu::now(&broker), count.load(Ordering::Relaxed));
        let secs = t0.elapsed().as_secs_f64();
        let used = cpu1.since(&cpu0, &broker);
        p.set("read_per_s", (read1 - read0) as f64 / secs);
        p.set("broker_cores", used.broker / secs);
        p.set("postgres_cores", used.postgres / secs);
        p.set("client_cores", used.own / secs);
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in join_all(tasks).await {
        t??;
    }
    // Closing leaves the group: in parallel, off the runtime's threads.
    let closes = consumers
        .into_iter()
        .map(|c| tokio::task::spawn_blocking(move || drop(c)));
    join_all(closes).await;
    measured
}

#[cfg(test)]
mod tests {
    use super::stable;

    #[test]
    fn a_group_is_stable_when_its_partitions_are_all_assigned_to_all_its_members() {
        assert!(stable(&[8, 8, 8], 1, 8));
        assert!(!stable(&[8, 0, 8], 1, 8));
        assert!(stable(&[1, 1, 1, 1], 4, 4));
        assert!(!stable(&[2, 0, 1, 1], 4, 4));
        assert!(!stable(&[1, 1, 1], 4, 4));
        assert!(!stable(&[2, 2, 0], 3, 4));
        assert!(stable(&[1, 1, 0], 3, 2));
        assert!(!stable(&[], 1, 8));
    }
}
