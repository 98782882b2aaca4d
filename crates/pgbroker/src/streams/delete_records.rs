//! Moving a partition's log start forward on request (Kafka's
//! DeleteRecords). Whole segments below the new start are dropped; records
//! of the segment it falls in stay stored but are no longer readable.

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::types::TopicName;

impl Broker {
    /// Makes every record before `before` unreadable and returns the new log
    /// start. `None` means the high watermark (delete everything). An
    /// offset beyond the high watermark is [`Error::OffsetOutOfRange`]; the
    /// log start never moves back.
    pub async fn delete_records(&self, topic: &TopicName, partition: i32, before: Option<i64>) -> Result<i64> {
        let (_, pid) = self.partition_id(topic, partition).await?;
        let client = self.client().await?;
        let row = client.query_one(&self.inner.sql.streams.watermarks, &[&pid]).await?;
        let (log_start, hw): (i64, i64) = (row.get(0), row.get(1));
        let target = before.unwrap_or(hw);
        if target < 0 || target > hw {
            return Err(Error::OffsetOutOfRange {
                offset: target,
                log_start,
                high_watermark: hw,
            });
        }
        let row = client
            .query_one(&self.inner.sql.streams.advance_log_start, &[&pid, &target])
            .await?;
        let start: i64 = row.get(0);
        client
            .execute(&self.inner.sql.streams.drop_segments_below, &[&pid, &start])
            .await?;
        drop(client);
        self.inner.cache.advance_log_start(pid, start);
        self.drop_pending_segments().await?;
        Ok(start)
    }
}
