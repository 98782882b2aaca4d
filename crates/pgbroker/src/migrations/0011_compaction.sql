-- Compacted topics: a topic's clean-up policy and compaction settings,
-- when each segment was first compacted, and a cleaner checkpoint per
-- partition. See streams/compact.rs.

ALTER TABLE topics
    ADD COLUMN cleanup_policy text NOT NULL DEFAULT 'delete'
        CHECK (cleanup_policy IN ('delete', 'compact', 'compact,delete')),
    ADD COLUMN min_compaction_lag_ms bigint NOT NULL DEFAULT 0 CHECK (min_compaction_lag_ms >= 0),
    ADD COLUMN max_compaction_lag_ms bigint NOT NULL DEFAULT 9223372036854775807
        CHECK (max_compaction_lag_ms >= 1),
    ADD COLUMN delete_retention_ms bigint NOT NULL DEFAULT 86400000 CHECK (delete_retention_ms >= 0),
    ADD COLUMN min_cleanable_dirty_ratio float8 NOT NULL DEFAULT 0.5
        CHECK (min_cleanable_dirty_ratio >= 0 AND min_cleanable_dirty_ratio <= 1);

-- When the cleaner first rewrote (or passed over) the segment: tombstones
-- in it are kept for delete_retention_ms from then.
ALTER TABLE segments ADD COLUMN cleaned_at timestamptz;

-- One row per compacted partition: every offset below clean_offset has
-- been compacted; clean_records were left below it by the last pass.
CREATE TABLE cleaner_checkpoints (
    partition_id    bigint PRIMARY KEY REFERENCES partitions (id) ON DELETE CASCADE,
    clean_offset    bigint NOT NULL,
    clean_records   bigint NOT NULL,
    tombstones_due  timestamptz,
    bytes_reclaimed bigint NOT NULL DEFAULT 0,
    cleaned_at      timestamptz NOT NULL DEFAULT now()
);
