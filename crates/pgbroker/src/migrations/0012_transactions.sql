-- Kafka transactions: the coordinator's state, the partitions and offsets
-- of each open transaction, and the aborted ranges read_committed fetches
-- need. Runs with search_path set to pgbroker's own schema.

-- Records written by a transactional producer carry its id and epoch;
-- commit and abort markers (control records) are flagged. Plain records
-- leave all three NULL: adding nullable columns rewrites no segment.
ALTER TABLE records
    ADD COLUMN producer_id    bigint,
    ADD COLUMN producer_epoch smallint,
    ADD COLUMN control        boolean;

-- One row per transactional id: the producer id and epoch it holds, the
-- state of its current transaction, and when that transaction times out.
-- `last_epoch` is the epoch before the broker last bumped it on its own
-- (a timeout), so that the producer may recover (KIP-360).
CREATE TABLE kafka_transactions (
    transactional_id text PRIMARY KEY,
    producer_id      bigint NOT NULL UNIQUE,
    epoch            smallint NOT NULL,
    last_epoch       smallint NOT NULL DEFAULT -1,
    state            text NOT NULL,
    timeout_ms       integer NOT NULL,
    started_at       timestamptz,
    deadline         timestamptz,
    completed        bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (state IN ('Empty', 'Ongoing', 'CompleteCommit', 'CompleteAbort'))
);

CREATE INDEX kafka_transactions_deadline ON kafka_transactions (deadline) WHERE state = 'Ongoing';

-- The partitions of each ongoing transaction, and the first offset it
-- wrote there (NULL until it writes). The smallest first offset of a
-- partition is its last stable offset.
CREATE TABLE kafka_txn_partitions (
    transactional_id text NOT NULL REFERENCES kafka_transactions (transactional_id) ON DELETE CASCADE,
    partition_id     bigint NOT NULL REFERENCES partitions (id) ON DELETE CASCADE,
    first_offset     bigint,
    PRIMARY KEY (transactional_id, partition_id)
);

CREATE INDEX kafka_txn_partitions_open ON kafka_txn_partitions (partition_id, first_offset)
    WHERE first_offset IS NOT NULL;

-- Groups added to an ongoing transaction, and the offsets committed in it:
-- they reach group_offsets only when the transaction commits.
CREATE TABLE kafka_txn_groups (
    transactional_id text NOT NULL REFERENCES kafka_transactions (transactional_id) ON DELETE CASCADE,
    group_name       text NOT NULL,
    PRIMARY KEY (transactional_id, group_name)
);

CREATE TABLE kafka_txn_offsets (
    transactional_id text NOT NULL REFERENCES kafka_transactions (transactional_id) ON DELETE CASCADE,
    group_name       text NOT NULL,
    topic_id         bigint NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    partition        integer NOT NULL,
    "offset"         bigint NOT NULL,
    metadata         text,
    PRIMARY KEY (transactional_id, group_name, topic_id, partition)
);

CREATE INDEX kafka_txn_offsets_group ON kafka_txn_offsets (group_name);

-- Aborted transactions per partition: from the producer's first record to
-- its abort marker. read_committed consumers skip that producer's records
-- in the range.
CREATE TABLE kafka_aborted_txns (
    partition_id bigint NOT NULL REFERENCES partitions (id) ON DELETE CASCADE,
    first_offset bigint NOT NULL,
    last_offset  bigint NOT NULL,
    producer_id  bigint NOT NULL,
    PRIMARY KEY (partition_id, first_offset)
);

CREATE INDEX kafka_aborted_txns_last ON kafka_aborted_txns (partition_id, last_offset);
