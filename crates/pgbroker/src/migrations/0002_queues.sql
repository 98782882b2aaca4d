-- Work queues: queues, their messages, FIFO groups, deduplication keys and
-- the optional archive of acknowledged messages.
-- Runs with search_path set to pgbroker's own schema.

CREATE TABLE queues (
    id                    bigserial PRIMARY KEY,
    name                  text NOT NULL UNIQUE,
    visibility_timeout_ms bigint NOT NULL,
    max_attempts          integer NOT NULL,
    -- Deleting a queue that is another's dead-letter queue is refused.
    dead_letter_id        bigint REFERENCES queues (id),
    backoff_base_ms       bigint NOT NULL,
    backoff_max_ms        bigint NOT NULL,
    -- NULL: acknowledged messages are deleted, not archived.
    archive_retention_ms  bigint,
    max_message_bytes     integer NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);

-- Which of the two message partitions receives new messages. Maintenance
-- moves the few live rows out of the other partition, TRUNCATEs it and
-- makes it current: space held by acknowledged messages is returned to
-- the operating system whole, whatever vacuum can or cannot do.
CREATE TABLE queue_rotation (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    current    smallint NOT NULL,
    rotated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO queue_rotation (current) VALUES (0);

CREATE SEQUENCE queue_message_ids;

-- Every message of every queue. A message is claimable when it is the head
-- of its group (ungrouped messages always are) and visible_at has passed.
-- Fresh messages wait in the `ready` index, by priority and id; every
-- message that waits for a time (a delayed send, a nack's backoff, a
-- lease) waits in the `due` index, by visible_at. A claim moves a message
-- from either to `due` with a new receipt and visible_at at the end of the
-- lease, so the ready index never holds leased rows and an expired lease
-- is found by an index range, not a scan past every message in flight.
CREATE TABLE queue_messages (
    id          bigint NOT NULL,
    queue_id    bigint NOT NULL,
    visible_at  timestamptz NOT NULL,
    enqueued_at timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    -- For a dead letter: the deliveries it had when it ran out of attempts.
    dead_attempts integer,
    slot        smallint NOT NULL,
    priority    smallint NOT NULL,
    -- Claimable when due: the head of its group, or not grouped.
    head        boolean NOT NULL,
    -- Waiting for visible_at (delayed send, backoff, lease): indexed by
    -- time instead of by priority.
    timed       boolean NOT NULL,
    -- Out of attempts in a queue without a dead-letter queue.
    dead        boolean NOT NULL DEFAULT false,
    -- The current lease's token; NULL when never claimed or released.
    receipt     uuid,
    -- For a dead letter: the queue it died in.
    dead_source bigint,
    group_key   text,
    dedup_key   text,
    last_error  text,
    headers     jsonb,
    body        bytea NOT NULL,
    PRIMARY KEY (id, slot)
) PARTITION BY LIST (slot);

CREATE TABLE queue_messages_0 PARTITION OF queue_messages FOR VALUES IN (0);
CREATE TABLE queue_messages_1 PARTITION OF queue_messages FOR VALUES IN (1);
-- Vacuum early and without throttling; leave room on pages for updates.
ALTER TABLE queue_messages_0 SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 50000);
ALTER TABLE queue_messages_1 SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 50000);

-- Claims: due heads by priority, then age.
CREATE INDEX queue_messages_ready ON queue_messages (queue_id, priority DESC, id)
    WHERE head AND NOT timed;
-- Claims of delayed, retried and expired messages, by the time they are due.
CREATE INDEX queue_messages_due ON queue_messages (queue_id, visible_at)
    WHERE head AND timed;
-- The next message of a group.
CREATE INDEX queue_messages_group ON queue_messages (queue_id, group_key, id)
    WHERE group_key IS NOT NULL;
-- Whether a group has its head.
CREATE INDEX queue_messages_group_head ON queue_messages (queue_id, group_key)
    WHERE head AND group_key IS NOT NULL;
CREATE INDEX queue_messages_dead ON queue_messages (queue_id) WHERE dead;
CREATE INDEX queue_messages_dead_source ON queue_messages (dead_source)
    WHERE dead_source IS NOT NULL;

-- Live messages per FIFO group. Sends and settlements take the group's
-- row lock, which orders them: a send sees whether the group is empty
-- (then its message is the head), and a settlement that removes the head
-- promotes the next message after all earlier sends have committed.
CREATE TABLE queue_groups (
    queue_id  bigint NOT NULL,
    group_key text NOT NULL,
    size      integer NOT NULL,
    PRIMARY KEY (queue_id, group_key)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);

-- Deduplication keys of messages still in their queue.
CREATE TABLE queue_dedup (
    queue_id   bigint NOT NULL,
    dedup_key  text NOT NULL,
    message_id bigint NOT NULL,
    PRIMARY KEY (queue_id, dedup_key)
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);

-- Acknowledged messages, kept only for queues with an archive retention.
CREATE TABLE queue_archive (
    queue_id    bigint NOT NULL,
    id          bigint NOT NULL,
    priority    smallint NOT NULL,
    attempts    integer NOT NULL,
    enqueued_at timestamptz NOT NULL,
    acked_at    timestamptz NOT NULL DEFAULT now(),
    group_key   text,
    dedup_key   text,
    headers     jsonb,
    body        bytea NOT NULL
);
CREATE INDEX queue_archive_expiry ON queue_archive (queue_id, acked_at);

-- Plain-SQL access: every message with its queue and state.
CREATE VIEW queue_contents AS
SELECT q.name AS queue,
       m.id,
       CASE WHEN m.dead THEN 'dead'
            WHEN m.receipt IS NOT NULL AND m.visible_at > now() THEN 'in_flight'
            WHEN m.visible_at > now() THEN 'delayed'
            ELSE 'ready' END AS state,
       m.priority,
       m.group_key,
       m.dedup_key,
       m.attempts,
       m.enqueued_at,
       m.visible_at,
       m.last_error,
       s.name AS dead_letter_source,
       m.dead_attempts,
       m.headers,
       m.body
FROM queue_messages m
JOIN queues q ON q.id = m.queue_id
LEFT JOIN queues s ON s.id = m.dead_source;

CREATE VIEW queue_archived AS
SELECT q.name AS queue, a.id, a.priority, a.attempts, a.enqueued_at, a.acked_at,
       a.group_key, a.dedup_key, a.headers, a.body
FROM queue_archive a
JOIN queues q ON q.id = a.queue_id;
