//! The records of a fetch read on a standby (see
//! [`crate::broker::replicas`]): only below the primary's bounds, and only
//! when the standby has replayed past the offset asked for. A long poll,
//! woken because the primary has new records, gives the standby up to
//! [`PATIENCE`] to replay them; any other read does not wait for it.

use std::time::{Duration, Instant};

use super::fetch::{read_segments, trim_statement_cache, Found, Read};
use crate::broker::Broker;

/// How long a long poll waits for a standby to replay the records the
/// primary has before the primary serves them: the most replication lag a
/// consumer at the tail is made to pay.
pub(crate) const PATIENCE: Duration = Duration::from_millis(20);

/// Longest a standby may take to serve a read (its patience included)
/// before it is skipped like one that failed: a standby that stalls
/// without closing its connections must not stall consumers.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// `read`'s records below `end` (the primary's high watermark or last
/// stable offset) from a standby that has at least the first of them;
/// `None` when no standby can serve them now, and the primary must.
pub(super) async fn read(broker: &Broker, pid: i64, read: &Read<'_>, segment_records: i64, end: i64) -> Option<Found> {
    let replicas = &broker.inner.replicas;
    if replicas.is_empty() || read.offset >= end {
        return None;
    }
    let replica = replicas.pick()?;
    match tokio::time::timeout(READ_TIMEOUT, read_on(broker, replica, pid, read, segment_records, end)).await {
        Ok(found) => found,
        Err(_) => {
            replica.failed(&crate::Error::Pool(format!(
                "no answer within {} ms",
                READ_TIMEOUT.as_millis()
            )));
            None
        }
    }
}

async fn read_on(
    broker: &Broker,
    replica: &crate::broker::replicas::Replica,
    pid: i64,
    read: &Read<'_>,
    segment_records: i64,
    end: i64,
) -> Option<Found> {
    let client = replica.client().await.ok()?;
    trim_statement_cache(&client);
    let give_up = Instant::now()
        + if read.limits.max_wait.is_zero() {
            Duration::ZERO
        } else {
            PATIENCE
        };
    let mut nap = Duration::from_millis(1);
    // The standby's own high watermark: it has every record below it.
    let replayed = loop {
        let replayed = async {
            let stmt = client.prepare_cached(&broker.inner.sql.streams.watermarks).await?;
            let row = client.query_opt(&stmt, &[&pid]).await?;
            Ok::<_, crate::Error>(row.map(|r| r.get::<_, i64>(1)))
        }
        .await;
        match replayed {
            Ok(Some(hw)) if hw > read.offset => break hw,
            // Not replayed that far yet, or the topic not at all.
            Ok(_) if Instant::now() + nap <= give_up => {
                tokio::time::sleep(nap).await;
                nap *= 2;
            }
            Ok(_) => return None,
            Err(e) => {
                replica.failed(&e);
                return None;
            }
        }
    };
    match read_segments(broker, &client, pid, read, segment_records, end.min(replayed)).await {
        Ok(found) if !found.records.is_empty() => {
            replica.served();
            Some(found)
        }
        // Retention dropped the segment there: the primary decides.
        Ok(_) => None,
        Err(e) => {
            replica.failed(&e);
            None
        }
    }
}
