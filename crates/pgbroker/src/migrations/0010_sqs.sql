-- Settings of queues served through the SQS-compatible API that the
-- queues table has no column for, the 5-minute deduplication window of
-- FIFO queues, and the first receive time of messages.
-- Runs with search_path set to pgbroker's own schema.

CREATE TABLE sqs_queues (
    queue_id             bigint PRIMARY KEY REFERENCES queues (id) ON DELETE CASCADE,
    fifo                 boolean NOT NULL DEFAULT false,
    content_based_dedup  boolean NOT NULL DEFAULT false,
    delay_seconds        integer NOT NULL DEFAULT 0,
    receive_wait_seconds integer NOT NULL DEFAULT 0,
    retention_seconds    integer NOT NULL DEFAULT 345600,
    -- Attributes kept as given and reported back (RedriveAllowPolicy, ...).
    extra                jsonb NOT NULL DEFAULT '{}',
    tags                 jsonb NOT NULL DEFAULT '{}',
    modified_at          timestamptz NOT NULL DEFAULT now()
);

-- Deduplication ids of FIFO queues, for five minutes after the send.
CREATE TABLE sqs_dedup (
    queue_id   bigint NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    dedup_id   text NOT NULL,
    message_id bigint NOT NULL,
    sent_at    timestamptz NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
);
CREATE INDEX sqs_dedup_sent ON sqs_dedup (sent_at);

-- When each message still in a queue was first received.
CREATE TABLE sqs_first_receive (
    message_id  bigint PRIMARY KEY,
    received_at timestamptz NOT NULL
);
