-- The Kafka front end: live broker processes and idempotent producers.

-- Each `pgbroker serve` process registers here and refreshes `last_seen`;
-- Metadata lists the live ones.
CREATE TABLE kafka_nodes (
    node_id    serial PRIMARY KEY,
    host       text NOT NULL,
    port       integer NOT NULL,
    rack       text,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- Producer ids handed out by InitProducerId.
CREATE SEQUENCE kafka_producer_ids;

-- Per idempotent producer and partition: its epoch, the last sequence
-- number written, and the last few batches as [base_seq, last_seq,
-- base_offset], so that a retried batch is answered with its first offset.
CREATE TABLE kafka_producer_state (
    producer_id  bigint NOT NULL,
    partition_id bigint NOT NULL REFERENCES partitions (id) ON DELETE CASCADE,
    epoch        smallint NOT NULL,
    last_seq     integer NOT NULL,
    batches      jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer_id, partition_id)
);
