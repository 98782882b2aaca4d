//! Segments made ahead of producers that write through SQL.
//!
//! A produce through the SQL functions that reaches past a partition's
//! last segment creates the next one inside the caller's transaction, and
//! until that transaction ends, segment creation elsewhere in the schema
//! waits. The library's own producers make room ahead after their appends;
//! for partitions written only through SQL, the maintenance loop of a
//! running broker does it.

use crate::broker::Broker;
use crate::error::Result;

/// Creates the next segment of every partition low on room; returns
/// how many partitions it made room in.
pub(crate) async fn create_segments_ahead(broker: &Broker) -> Result<usize> {
    let rows = broker
        .client()
        .await?
        .query(&broker.inner.sql.streams.low_on_room, &[])
        .await?;
    for row in &rows {
        crate::streams::segments::ensure_segments(broker, row.get(0), 0, row.get(1)).await?;
    }
    Ok(rows.len())
}
