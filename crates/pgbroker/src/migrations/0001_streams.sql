-- Streams: topics, partitions, the record log and consumer groups.
-- Runs with search_path set to pgbroker's own schema.

CREATE TABLE topics (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    retention_ms      bigint,
    retention_bytes   bigint,
    segment_records   bigint NOT NULL,
    max_message_bytes integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per topic partition. A producer increments next_offset by its
-- batch size in the same statement that inserts the batch, so the row lock
-- orders writers of one partition and offsets become visible gap-free.
-- Only non-indexed columns change, so the updates stay HOT.
CREATE TABLE partitions (
    id           bigserial PRIMARY KEY,
    topic_id     bigint NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL DEFAULT 0,
    log_start    bigint NOT NULL DEFAULT 0,
    UNIQUE (topic_id, partition)
) WITH (fillfactor = 50);

-- The log. Every topic partition is a range of (partition_id, offset); each
-- segment is a leaf table holding a fixed offset range. Retention drops whole
-- segments, so nothing is ever DELETEd from the log.
CREATE TABLE records (
    partition_id bigint NOT NULL,
    "offset"     bigint NOT NULL,
    ts           timestamptz NOT NULL,
    key          bytea,
    value        bytea,
    headers      jsonb,
    PRIMARY KEY (partition_id, "offset")
) PARTITION BY RANGE (partition_id, "offset");

CREATE TABLE segments (
    partition_id bigint NOT NULL REFERENCES partitions (id) ON DELETE CASCADE,
    base_offset  bigint NOT NULL,
    end_offset   bigint NOT NULL,
    table_name   text NOT NULL UNIQUE,
    dropping     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition_id, base_offset)
);

-- Segment tables whose partition or topic is gone, still to be dropped.
CREATE TABLE orphan_segments (
    table_name text PRIMARY KEY
);

-- Brokers with fetches waiting on a partition. Producers send a NOTIFY only
-- while another broker has registered here: a NOTIFY serialises commits on
-- a global lock, so it is not paid when nobody is listening.
CREATE TABLE waiters (
    partition_id bigint NOT NULL,
    listener     text NOT NULL,
    until        timestamptz NOT NULL,
    PRIMARY KEY (partition_id, listener)
);

CREATE TABLE groups (
    name       text PRIMARY KEY,
    generation integer NOT NULL DEFAULT 0,
    strategy   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE group_members (
    group_name         text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    member_id          text NOT NULL,
    client_id          text NOT NULL,
    session_timeout_ms integer NOT NULL,
    last_heartbeat     timestamptz NOT NULL DEFAULT now(),
    joined_at          timestamptz NOT NULL DEFAULT now(),
    topics             text[] NOT NULL,
    assignment         jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (group_name, member_id)
);

CREATE TABLE group_offsets (
    group_name   text NOT NULL,
    topic_id     bigint NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    partition    integer NOT NULL,
    "offset"     bigint NOT NULL,
    metadata     text,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, topic_id, partition)
);

-- Plain-SQL access: every stored record with its topic and partition.
CREATE VIEW messages AS
SELECT t.name AS topic,
       p.partition,
       r."offset",
       r.ts AS timestamp,
       r.key,
       r.value,
       r.headers
FROM records r
JOIN partitions p ON p.id = r.partition_id
JOIN topics t ON t.id = p.topic_id
WHERE r."offset" >= p.log_start;
