//! The share groups' statements (see [`crate::sql`]): membership in the
//! `groups` and `group_members` rows, share-partitions and their in-flight
//! records, and group settings.

/// A member's session has expired, as a condition on `group_members m`.
macro_rules! share_expired {
    () => {
        "m.last_heartbeat + m.session_timeout_ms * interval '1 millisecond' < now()"
    };
}

/// What a record whose delivery ends without acceptance becomes: archived
/// once it has been delivered `$3` times, else available again.
macro_rules! returned {
    () => {
        "state = CASE WHEN delivery_count >= $3 THEN 4 ELSE 0 END, member_id = NULL, lock_deadline = NULL"
    };
}

crate::sql::statements! {
    /// The share groups' statements, qualified with the broker's schema.
    Statements {
    /// Creates a share group.
    create_group = "INSERT INTO {s}groups (name, strategy, protocol_type) VALUES ($1, 'simple', $2)
         ON CONFLICT DO NOTHING";
    /// Locks a group, reading its epoch and protocol type.
    lock_group = "SELECT generation, protocol_type FROM {s}groups WHERE name = $1 FOR UPDATE";
    /// Whether a group of another type still has live members.
    others_live = concat!(
        "SELECT EXISTS (SELECT 1 FROM {s}group_members m WHERE m.group_name = $1 AND NOT m.pending AND NOT (",
        share_expired!(),
        "))"
    );
    /// Turns a group without live members into a share group.
    adopt = "WITH gone AS (DELETE FROM {s}group_members WHERE group_name = $1)
         UPDATE {s}groups SET protocol_type = $2, strategy = 'simple', state = 'Empty', protocol_name = NULL,
                leader = NULL, rebalance_deadline = NULL, join_delay_until = NULL, updated_at = now()
         WHERE name = $1";
    /// Removes a share group's expired members.
    expire = concat!(
        "DELETE FROM {s}group_members m WHERE m.group_name = $1 AND ",
        share_expired!(),
        " RETURNING m.member_id"
    );
    /// A share group's members.
    members = "SELECT member_id, member_epoch, topics, assignment, client_id, client_host, rack_id
         FROM {s}group_members WHERE group_name = $1 ORDER BY member_id";
    /// Whether a member of a share group is live.
    live_member = concat!(
        "SELECT EXISTS (SELECT 1 FROM {s}group_members m JOIN {s}groups g ON g.name = m.group_name
         WHERE m.group_name = $1 AND m.member_id = $2 AND g.protocol_type = $3 AND NOT (",
        share_expired!(),
        "))"
    );
    /// Adds a member, or starts an existing one over.
    join = "INSERT INTO {s}group_members (group_name, member_id, client_id, session_timeout_ms, topics, client_host, rack_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (group_name, member_id) DO UPDATE SET client_id = $3, session_timeout_ms = $4, topics = $5,
                client_host = $6, rack_id = $7, last_heartbeat = now(), member_epoch = 0, assignment = '[]'";
    /// Refreshes a member's session and, when given, its subscription.
    touch = "UPDATE {s}group_members SET last_heartbeat = now(), session_timeout_ms = $3, topics = coalesce($4, topics)
         WHERE group_name = $1 AND member_id = $2";
    /// Stores a member's epoch and assignment.
    set_member = "UPDATE {s}group_members SET member_epoch = $3, assignment = $4 WHERE group_name = $1 AND member_id = $2";
    /// Id and partition count of each named topic.
    topic_partitions = "SELECT t.name, uuid_send(t.topic_uuid), count(p.id)::int
         FROM {s}topics t JOIN {s}partitions p ON p.topic_id = t.id
         WHERE t.name = ANY($1) GROUP BY t.name, t.topic_uuid ORDER BY t.name";
    /// Puts back every record a member holds.
    release_member = concat!(
        "UPDATE {s}share_records SET ",
        returned!(),
        " WHERE group_name = $1 AND member_id = $2 AND state = 1"
    );
    /// A partition's log start and high watermark.
    partition = "SELECT log_start, next_offset FROM {s}partitions WHERE id = $1";
    /// Starts a share-partition at an offset.
    create_partition = "INSERT INTO {s}share_partitions (group_name, partition_id, start_offset, end_offset)
         VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING";
    /// Locks a share-partition, reading its window, the partition's
    /// watermarks and the first offset of its oldest open transaction.
    /// The transaction commits without waiting for the WAL flush (as
    /// `crate::sql::NO_FLUSH_WAIT`): an acquisition lost to a Postgres crash
    /// is a lock that ended at once without counting a delivery, a lost
    /// acknowledgement a record delivered again, as queue claims and
    /// acknowledgements. The row lock is then held for the statements
    /// only, not for a disk flush.
    lock_partition = "SELECT sp.start_offset, sp.end_offset, p.log_start, p.next_offset,
                             (SELECT min(x.first_offset) FROM {s}kafka_txn_partitions x
                              WHERE x.partition_id = $2 AND x.first_offset IS NOT NULL),
                             set_config('synchronous_commit', 'off', true)
         FROM {s}share_partitions sp JOIN {s}partitions p ON p.id = sp.partition_id
         WHERE sp.group_name = $1 AND sp.partition_id = $2 FOR UPDATE OF sp";
    /// Puts back the records of a share-partition whose lock has run out.
    expire_locks = concat!(
        "UPDATE {s}share_records SET ",
        returned!(),
        " WHERE group_name = $1 AND partition_id = $2 AND state = 1 AND lock_deadline < now()"
    );
    /// Acquires the first `$5` available records of the window for member `$3`, for `$4` ms.
    /// The offsets are picked once, as an array (a join to the picking
    /// subquery ran it again for every in-flight row).
    acquire_available = "UPDATE {s}share_records r SET state = 1, delivery_count = r.delivery_count + 1,
                lock_deadline = now() + $4::integer * interval '1 millisecond', member_id = $3
         WHERE r.group_name = $1 AND r.partition_id = $2
           AND r.\"offset\" = ANY(ARRAY(SELECT \"offset\" FROM {s}share_records
                                        WHERE group_name = $1 AND partition_id = $2 AND state = 0
                                        ORDER BY \"offset\" LIMIT $5))
         RETURNING r.\"offset\", r.delivery_count";
    /// Acquires the never-delivered offsets [$5, $6) for member `$3`, for `$4` ms.
    acquire_new = "INSERT INTO {s}share_records (group_name, partition_id, \"offset\", state, delivery_count, lock_deadline, member_id)
         SELECT $1, $2, o, 1, 1, now() + $4::integer * interval '1 millisecond', $3
         FROM generate_series($5::bigint, $6::bigint - 1) AS o";
    /// Archives the just-acquired offsets [$3, $4) that hold records of an
    /// aborted transaction (read_committed groups never deliver them);
    /// answers their offsets.
    archive_aborted = "UPDATE {s}share_records r SET state = 4, member_id = NULL, lock_deadline = NULL
         FROM {s}records x
         WHERE x.partition_id = $2 AND x.\"offset\" >= $3 AND x.\"offset\" < $4 AND x.producer_id IS NOT NULL
           AND x.control IS NOT TRUE
           AND EXISTS (SELECT 1 FROM {s}kafka_aborted_txns a
                       WHERE a.partition_id = $2 AND a.producer_id = x.producer_id
                         AND x.\"offset\" BETWEEN a.first_offset AND a.last_offset)
           AND r.group_name = $1 AND r.partition_id = $2 AND r.\"offset\" = x.\"offset\"
         RETURNING r.\"offset\"";
    /// Settles records member `$6` holds: accept (1), release (2), reject or gap (3, 0).
    acknowledge = "UPDATE {s}share_records r SET
                state = CASE a.kind WHEN 1 THEN 2 WHEN 2 THEN CASE WHEN r.delivery_count >= $3 THEN 4 ELSE 0 END ELSE 4 END,
                member_id = NULL, lock_deadline = NULL
         FROM unnest($4::bigint[], $5::smallint[]) AS a(off, kind)
         WHERE r.group_name = $1 AND r.partition_id = $2 AND r.\"offset\" = a.off AND r.state = 1 AND r.member_id = $6";
    /// The first offset of the window still to be delivered or settled.
    first_open = "SELECT min(\"offset\") FROM {s}share_records WHERE group_name = $1 AND partition_id = $2 AND state IN (0, 1)";
    /// Forgets the records below a share-partition's new start.
    forget_below = "DELETE FROM {s}share_records WHERE group_name = $1 AND partition_id = $2 AND \"offset\" < $3";
    /// Stores a share-partition's window.
    set_window = "UPDATE {s}share_partitions SET start_offset = $3, end_offset = $4 WHERE group_name = $1 AND partition_id = $2";
    /// The offsets of a partition a member holds under live locks.
    held = "SELECT r.\"offset\" FROM {s}share_records r
         JOIN {s}partitions p ON p.id = r.partition_id JOIN {s}topics t ON t.id = p.topic_id
         WHERE r.group_name = $1 AND t.name = $2 AND p.partition = $3 AND r.member_id = $4 AND r.state = 1
           AND r.lock_deadline >= now() ORDER BY 1";
    /// A share-partition's window and its in-flight records.
    in_flight = "SELECT sp.start_offset, sp.end_offset, r.\"offset\", r.state, r.delivery_count, r.member_id
         FROM {s}share_partitions sp
         JOIN {s}partitions p ON p.id = sp.partition_id JOIN {s}topics t ON t.id = p.topic_id
         LEFT JOIN {s}share_records r ON r.group_name = sp.group_name AND r.partition_id = sp.partition_id
         WHERE sp.group_name = $1 AND t.name = $2 AND p.partition = $3 ORDER BY r.\"offset\"";
    /// A group's settings.
    configs = "SELECT name, value FROM {s}group_configs WHERE group_name = $1 ORDER BY name";
    /// Sets one setting of a group.
    set_config = "INSERT INTO {s}group_configs (group_name, name, value) VALUES ($1, $2, $3)
         ON CONFLICT (group_name, name) DO UPDATE SET value = $3";
    /// Removes one setting of a group (back to its default).
    delete_config = "DELETE FROM {s}group_configs WHERE group_name = $1 AND name = $2";
    }
}
