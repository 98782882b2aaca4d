-- Kafka's consumer group protocol (KIP-848: ConsumerGroupHeartbeat with
-- broker-computed assignments) and the topic ids it speaks in. Runs with
-- search_path set to pgbroker's own schema.

-- A topic's id as Kafka clients see it: random, fixed for the life of the
-- topic (a topic deleted and created again under the same name gets a new
-- one).
ALTER TABLE topics ADD COLUMN topic_uuid uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX topics_uuid ON topics (topic_uuid);

-- A consumer-protocol group has protocol_type 'consumer-protocol'; its
-- generation is the group epoch, and the target assignment below always
-- belongs to it. The partition counts of its subscribed topics when the
-- target was computed tell when partitions were added.
ALTER TABLE groups
    ADD COLUMN subscribed_partitions jsonb NOT NULL DEFAULT '{}';

-- A consumer-protocol member: `topics` is its subscription by name,
-- `assignment` the partitions it has been given (at member_epoch),
-- `revoking` those it was asked to give up and has not yet confirmed,
-- `target` what the group's target assignment holds for it.
ALTER TABLE group_members
    ADD COLUMN member_epoch     integer NOT NULL DEFAULT 0,
    ADD COLUMN previous_epoch   integer NOT NULL DEFAULT -1,
    ADD COLUMN subscribed_regex text,
    ADD COLUMN server_assignor  text,
    ADD COLUMN rack_id          text,
    ADD COLUMN target           jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN revoking         jsonb NOT NULL DEFAULT '[]',
    -- A member that has not given up `revoking` by then is removed.
    ADD COLUMN revoke_deadline  timestamptz;
