-- Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
-- LeaveGroup with client-side assignment) on the existing group tables.
-- Runs with search_path set to pgbroker's own schema.

-- protocol_type: 'pgbroker' for the library's own server-assigned groups,
-- the client's protocol type (usually 'consumer') for Kafka clients, and ''
-- for a group that so far only stores offsets. state and the columns after
-- it are only maintained for Kafka groups.
ALTER TABLE groups
    ADD COLUMN protocol_type      text NOT NULL DEFAULT 'pgbroker',
    ADD COLUMN state              text NOT NULL DEFAULT 'Empty'
        CHECK (state IN ('Empty', 'PreparingRebalance', 'CompletingRebalance', 'Stable')),
    -- The assignor chosen for the current generation.
    ADD COLUMN protocol_name      text,
    ADD COLUMN leader             text,
    -- A rebalance completes when every member has rejoined or at this time.
    ADD COLUMN rebalance_deadline timestamptz,
    -- ... but not before this time (the initial rebalance delay of a group
    -- that was empty, so that members starting together join one generation).
    ADD COLUMN join_delay_until   timestamptz;

ALTER TABLE group_members
    ADD COLUMN group_instance_id    text,
    ADD COLUMN client_host          text NOT NULL DEFAULT '',
    -- The member's protocols (assignors) in its order of preference, and
    -- the subscription metadata for each.
    ADD COLUMN protocol_names       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN protocol_metadata    bytea[] NOT NULL DEFAULT '{}',
    ADD COLUMN rebalance_timeout_ms integer NOT NULL DEFAULT 0,
    -- Was given a member id (MEMBER_ID_REQUIRED) but has not joined with it yet.
    ADD COLUMN pending              boolean NOT NULL DEFAULT false,
    -- Has joined the rebalance in progress.
    ADD COLUMN joined               boolean NOT NULL DEFAULT false,
    -- The last generation this member was admitted to.
    ADD COLUMN member_generation    integer NOT NULL DEFAULT 0,
    -- What the leader assigned it in that generation.
    ADD COLUMN assignment_bytes     bytea NOT NULL DEFAULT '\x';

-- A static member (group.instance.id) is registered at most once per group.
CREATE UNIQUE INDEX group_members_instance
    ON group_members (group_name, group_instance_id)
    WHERE group_instance_id IS NOT NULL;
