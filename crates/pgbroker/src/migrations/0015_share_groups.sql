-- Share groups (KIP-932): many consumers share the records of a
-- partition, each record acquired under a time-limited lock and
-- acknowledged one by one. A share group is a `groups` row with
-- protocol_type 'share' and its members are `group_members` rows
-- (member_epoch, topics, assignment). Runs with search_path set to
-- pgbroker's own schema.

-- Settings of a group, as IncrementalAlterConfigs sets them on GROUP
-- resources (share.record.lock.duration.ms, ...). Only the names set are
-- stored; a group that does not exist yet may have settings.
CREATE TABLE group_configs (
    group_name text NOT NULL,
    name       text NOT NULL,
    value      text NOT NULL,
    PRIMARY KEY (group_name, name)
);

-- One share-partition: where the group stands in one partition. Every
-- offset below start_offset is done (acknowledged or archived); every
-- offset from end_offset on has never been delivered. Locking this row
-- serialises acquisitions and acknowledgements of the share-partition.
CREATE TABLE share_partitions (
    group_name   text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    partition_id bigint NOT NULL REFERENCES partitions (id) ON DELETE CASCADE,
    start_offset bigint NOT NULL,
    end_offset   bigint NOT NULL,
    PRIMARY KEY (group_name, partition_id)
);

-- The in-flight window: one row per offset in [start_offset, end_offset).
-- state is Kafka's: 0 Available, 1 Acquired, 2 Acknowledged, 4 Archived.
-- An acquired record has its member and lock deadline; a lock past its
-- deadline is applied by the next call on the share-partition.
CREATE TABLE share_records (
    group_name     text NOT NULL,
    partition_id   bigint NOT NULL,
    "offset"       bigint NOT NULL,
    state          smallint NOT NULL,
    delivery_count smallint NOT NULL,
    lock_deadline  timestamptz,
    member_id      text,
    PRIMARY KEY (group_name, partition_id, "offset"),
    FOREIGN KEY (group_name, partition_id) REFERENCES share_partitions ON DELETE CASCADE
);
-- What a member holds, for releasing it when the member goes.
CREATE INDEX share_records_member ON share_records (group_name, member_id) WHERE state = 1;
