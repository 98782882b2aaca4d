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

impl Broker {
    /// Creates the next segment of every partition low on room; returns
    /// how many partitions it made room in.
    pub(crate) async fn create_segments_ahead(&self) -> Result<usize> {
        let rows = self
            .client()
            .await?
            .query(&self.inner.sql.streams.low_on_room, &[])
            .await?;
        for row in &rows {
            self.ensure_segments(row.get(0), 0, row.get(1)).await?;
        }
        Ok(rows.len())
    }
}
