//! The group coordinators' statements (see [`crate::sql`]), for the
//! library's protocol and the classic one alike.

/// A member's session has expired, as a condition on `group_members m`.
macro_rules! expired {
    () => {
        "m.last_heartbeat + m.session_timeout_ms * interval '1 millisecond' < now()"
    };
}

crate::sql::statements! {
    /// The group coordinators' statements, qualified with the broker's schema.
    Statements {
    /// Removes a group's expired members.
    expire = concat!("DELETE FROM {s}group_members m WHERE m.group_name = $1 AND ", expired!());
    /// Removes a classic group's expired members, returning whether each was pending.
    expire_classic = concat!(
        "DELETE FROM {s}group_members m WHERE m.group_name = $1 AND ",
        expired!(),
        " RETURNING m.pending"
    );
    /// Counts a group's members that are neither pending nor expired.
    live_count = concat!(
        "SELECT count(*) FROM {s}group_members m WHERE m.group_name = $1 AND NOT m.pending AND NOT (",
        expired!(),
        ")"
    );
    /// Refreshes a waiting joiner's session and tells whether a locked look may find work.
    join_probe = concat!(
        "WITH me AS (
             UPDATE {s}group_members SET last_heartbeat = now()
             WHERE group_name = $1 AND member_id = $2 AND NOT pending RETURNING joined)
         SELECT coalesce((SELECT NOT joined FROM me), true)
             OR g.state <> 'PreparingRebalance'
             OR EXISTS (SELECT 1 FROM {s}group_members m
                        WHERE m.group_name = $1 AND m.member_id <> $2 AND ",
        expired!(),
        ")
             OR (now() >= coalesce(g.join_delay_until, '-infinity')
                 AND (now() >= coalesce(g.rebalance_deadline, '-infinity')
                      OR NOT EXISTS (SELECT 1 FROM {s}group_members m
                                     WHERE m.group_name = $1 AND m.member_id <> $2
                                       AND (m.pending OR NOT m.joined))))
         FROM {s}groups g WHERE g.name = $1"
    );
    /// Refreshes a syncing member's session and reads the group's state and its assignment.
    sync_probe = concat!(
        "WITH me AS (
             UPDATE {s}group_members SET last_heartbeat = now()
             WHERE group_name = $1 AND member_id = $2 AND NOT pending RETURNING 1)
         SELECT g.state, g.generation, EXISTS (SELECT 1 FROM me),
                (SELECT m.assignment_bytes FROM {s}group_members m
                 WHERE m.group_name = $1 AND m.member_id = $2),
                EXISTS (SELECT 1 FROM {s}group_members m
                        WHERE m.group_name = $1 AND m.member_id <> $2 AND ",
        expired!(),
        ")
         FROM {s}groups g WHERE g.name = $1"
    );
    /// Every group with its protocol type and state.
    list_detailed = concat!(
        "SELECT g.name, g.protocol_type,
                CASE WHEN NOT EXISTS (SELECT 1 FROM {s}group_members m
                                      WHERE m.group_name = g.name AND NOT m.pending
                                        AND NOT (",
        expired!(),
        ")) THEN 'Empty'
                     WHEN g.protocol_type IN ($1, $2, $3) THEN 'Stable'
                     ELSE g.state END
         FROM {s}groups g
         UNION ALL
         SELECT DISTINCT o.group_name, '', 'Empty' FROM {s}group_offsets o
         WHERE NOT EXISTS (SELECT 1 FROM {s}groups g WHERE g.name = o.group_name)
         ORDER BY 1"
    );
    /// A library group's live members, for the classic describe.
    describe_library_members = concat!(
        "SELECT member_id, client_id FROM {s}group_members m
         WHERE m.group_name = $1 AND NOT (",
        expired!(),
        ") ORDER BY member_id"
    );
    /// Used by `lock_group`.
    lock_library = "SELECT generation, strategy, protocol_type FROM {s}groups WHERE name = $1 FOR UPDATE";
    /// Used by `adopt_group`.
    protocol_type = "SELECT protocol_type FROM {s}groups WHERE name = $1 FOR UPDATE";
    /// Used by `adopt_group`.
    has_live_members = "SELECT EXISTS (SELECT 1 FROM {s}group_members WHERE group_name = $1 AND NOT pending
                 AND last_heartbeat + session_timeout_ms * interval '1 millisecond' >= now())";
    /// Used by `adopt_group`.
    delete_members = "DELETE FROM {s}group_members WHERE group_name = $1";
    /// Used by `adopt_group`.
    adopt = "UPDATE {s}groups SET protocol_type = $2, state = 'Empty', protocol_name = NULL, leader = NULL,
                rebalance_deadline = NULL, join_delay_until = NULL, updated_at = now()
         WHERE name = $1";
    /// Used by `rebalance`.
    subscriptions = "SELECT member_id, topics, assignment FROM {s}group_members WHERE group_name = $1";
    /// Used by `rebalance`.
    partition_counts = "SELECT t.name, count(p.id)::int FROM {s}topics t JOIN {s}partitions p ON p.topic_id = t.id
             WHERE t.name = ANY($1) GROUP BY t.name";
    /// Used by `rebalance`.
    set_assignment = "UPDATE {s}group_members SET assignment = $3 WHERE group_name = $1 AND member_id = $2";
    /// Used by `rebalance`.
    set_generation = "UPDATE {s}groups SET generation = $2, updated_at = now() WHERE name = $1";
    /// Used by `join_group`.
    create_group = "INSERT INTO {s}groups (name, strategy) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    /// Used by `join_group`.
    member_topics = "SELECT topics FROM {s}group_members WHERE group_name = $1 AND member_id = $2";
    /// Used by `join_group`.
    rejoin = "UPDATE {s}group_members SET last_heartbeat = now(), session_timeout_ms = $3, topics = $4
                     WHERE group_name = $1 AND member_id = $2";
    /// Used by `join_group`.
    add_member = "INSERT INTO {s}group_members (group_name, member_id, client_id, session_timeout_ms, topics)
                     VALUES ($1, $2, $3, $4, $5)";
    /// Used by `join_group`.
    member_assignment = "SELECT assignment FROM {s}group_members WHERE group_name = $1 AND member_id = $2";
    /// Refreshes a member's session.
    touch = "UPDATE {s}group_members SET last_heartbeat = now() WHERE group_name = $1 AND member_id = $2";
    /// Used by `leave_group`.
    remove_member = "DELETE FROM {s}group_members WHERE group_name = $1 AND member_id = $2";
    /// Used by `commit_offsets`.
    share_group = "SELECT generation, protocol_type FROM {s}groups WHERE name = $1 FOR SHARE";
    /// Used by `commit_offsets`.
    live_member_assignment = "SELECT assignment FROM {s}group_members
                         WHERE group_name = $1 AND member_id = $2
                           AND last_heartbeat + session_timeout_ms * interval '1 millisecond' >= now()";
    /// Used by `commit_offsets`.
    count_live_members = "SELECT count(*) FROM {s}group_members WHERE group_name = $1 AND NOT pending
                           AND last_heartbeat + session_timeout_ms * interval '1 millisecond' >= now()";
    /// Used by `upsert_offsets`.
    upsert_offsets = "INSERT INTO {s}group_offsets (group_name, topic_id, partition, \"offset\", metadata)
         SELECT $1, t.id, x.partition, x.off, x.meta
         FROM unnest($2::text[], $3::int[], $4::bigint[], $5::text[]) AS x(topic, partition, off, meta)
         JOIN {s}topics t ON t.name = x.topic
         ON CONFLICT (group_name, topic_id, partition)
         DO UPDATE SET \"offset\" = EXCLUDED.\"offset\", metadata = EXCLUDED.metadata, committed_at = now()";
    /// Used by `committed_offsets`.
    committed_offsets = "SELECT o.partition, o.\"offset\", o.metadata FROM {s}group_offsets o
                 JOIN {s}topics t ON t.id = o.topic_id
                 WHERE o.group_name = $1 AND t.name = $2 ORDER BY o.partition";
    /// Used by `list_groups`.
    list_groups = "SELECT name FROM {s}groups UNION SELECT group_name FROM {s}group_offsets ORDER BY 1";
    /// Used by `lag_of_all_groups`: every group's lag on every partition of
    /// a topic it has committed on or its members subscribe to.
    lag_all = "WITH g AS (SELECT group_name, topic_id FROM {s}group_offsets
                           UNION
                           SELECT m.group_name, t.id FROM {s}group_members m JOIN {s}topics t ON t.name = ANY(m.topics))
                 SELECT g.group_name, t.name, p.partition,
                        greatest(p.next_offset - coalesce(o.\"offset\", p.log_start), 0)
                 FROM g JOIN {s}topics t ON t.id = g.topic_id JOIN {s}partitions p ON p.topic_id = t.id
                 LEFT JOIN {s}group_offsets o
                   ON o.group_name = g.group_name AND o.topic_id = t.id AND o.partition = p.partition
                 ORDER BY 1, 2, 3";
    /// Used by `describe_group`.
    describe_group = "SELECT generation, strategy, protocol_type, state, protocol_name FROM {s}groups WHERE name = $1";
    /// Used by `describe_group`.
    describe_members = "SELECT member_id, client_id, last_heartbeat, assignment, assignment_bytes FROM {s}group_members
                 WHERE group_name = $1 AND NOT pending
                   AND last_heartbeat + session_timeout_ms * interval '1 millisecond' >= now()
                 ORDER BY member_id";
    /// Used by `describe_group`.
    describe_partitions = "SELECT t.name, p.partition, o.\"offset\", p.next_offset, p.log_start
                 FROM {s}topics t JOIN {s}partitions p ON p.topic_id = t.id
                 LEFT JOIN {s}group_offsets o
                   ON o.group_name = $1 AND o.topic_id = t.id AND o.partition = p.partition
                 WHERE t.id IN (SELECT topic_id FROM {s}group_offsets WHERE group_name = $1)
                    OR t.name IN (SELECT unnest(topics) FROM {s}group_members WHERE group_name = $1)
                    OR t.name = ANY($2)
                 ORDER BY t.name, p.partition";
    /// Used by `delete_group`.
    lock_any_group = "SELECT 1 FROM {s}groups WHERE name = $1 FOR UPDATE";
    /// Used by `delete_group`.
    count_members = "SELECT count(*) FROM {s}group_members WHERE group_name = $1 AND NOT pending";
    /// Used by `delete_group`.
    delete_group = "DELETE FROM {s}groups WHERE name = $1";
    /// Used by `delete_group`.
    delete_offsets = "DELETE FROM {s}group_offsets WHERE group_name = $1";
    /// Used by `leave_one`.
    leave_one = "DELETE FROM {s}group_members WHERE group_name = $1 AND member_id = $2 RETURNING pending";
    /// Used by `sync_locked`.
    set_assignments = "UPDATE {s}group_members m SET assignment_bytes = x.a
         FROM unnest($2::text[], $3::bytea[]) AS x(id, a)
         WHERE m.group_name = $1 AND m.member_id = x.id AND NOT m.pending";
    /// Used by `sync_locked`.
    mark_stable = "UPDATE {s}groups SET state = 'Stable', updated_at = now() WHERE name = $1";
    /// Used by `join_locked`.
    delete_joined_members = "DELETE FROM {s}group_members WHERE group_name = $1 AND NOT pending";
    /// Used by `join_locked`.
    adopt_classic = "UPDATE {s}groups SET protocol_type = $2, state = 'Empty', protocol_name = NULL, leader = NULL,
                    rebalance_deadline = NULL, join_delay_until = NULL, updated_at = now()
             WHERE name = $1";
    /// Used by `join_locked`.
    other_protocols = "SELECT protocol_names FROM {s}group_members WHERE group_name = $1 AND NOT pending AND member_id <> $2";
    /// Used by `join_locked`.
    rename_member = "UPDATE {s}group_members SET member_id = $3 WHERE group_name = $1 AND member_id = $2";
    /// Used by `join_locked`.
    set_leader = "UPDATE {s}groups SET leader = $2 WHERE name = $1";
    /// Used by `insert_member`.
    insert_member = "INSERT INTO {s}group_members (group_name, member_id, client_id, session_timeout_ms, topics,
             group_instance_id, client_host, protocol_names, protocol_metadata, rebalance_timeout_ms,
             pending, joined)
         VALUES ($1, $2, $3, $4, '{}', $5, $6, $7, $8, $9, $10, NOT $10)";
    /// Used by `update_member`.
    update_member = "UPDATE {s}group_members SET client_id = $3, session_timeout_ms = $4, client_host = $5,
                protocol_names = $6, protocol_metadata = $7, rebalance_timeout_ms = $8,
                pending = false, joined = true, last_heartbeat = now()
         WHERE group_name = $1 AND member_id = $2";
    /// Used by `observe`.
    observe = "UPDATE {s}group_members SET joined = true, last_heartbeat = now() WHERE group_name = $1 AND member_id = $2";
    /// Used by `response`.
    response = "SELECT member_id, group_instance_id,
                    coalesce(protocol_metadata[array_position(protocol_names, $2)], '\\x')
             FROM {s}group_members WHERE group_name = $1 AND NOT pending ORDER BY member_id";
    /// Used by `lock`.
    lock_classic = "SELECT generation, protocol_type, state, protocol_name, leader FROM {s}groups WHERE name = $1 FOR UPDATE";
    /// Used by `lock_or_create`.
    create_classic_group = "INSERT INTO {s}groups (name, strategy, protocol_type) VALUES ($1, $2, '') ON CONFLICT DO NOTHING";
    /// Used by `prepare`.
    prepare = "WITH t AS (
             SELECT now() + coalesce(max(rebalance_timeout_ms), 0) * interval '1 millisecond' AS deadline
             FROM {s}group_members WHERE group_name = $1 AND NOT pending)
         UPDATE {s}groups SET state = 'PreparingRebalance', rebalance_deadline = t.deadline,
                join_delay_until = CASE WHEN $2::bigint IS NULL THEN NULL
                                        ELSE least(t.deadline, now() + $2::bigint * interval '1 millisecond') END,
                updated_at = now()
         FROM t WHERE name = $1";
    /// Used by `extend_delay`.
    extend_delay = "UPDATE {s}groups SET join_delay_until = least(rebalance_deadline, now() + $2::bigint * interval '1 millisecond')
         WHERE name = $1 AND join_delay_until > now()";
    /// Used by `maybe_complete`.
    maybe_complete = "SELECT now() >= coalesce(join_delay_until, '-infinity')
                AND (now() >= coalesce(rebalance_deadline, '-infinity')
                     OR NOT EXISTS (SELECT 1 FROM {s}group_members m
                                    WHERE m.group_name = $1 AND (m.pending OR NOT m.joined)))
             FROM {s}groups WHERE name = $1";
    /// Used by `complete`.
    remove_unjoined = "DELETE FROM {s}group_members
         WHERE group_name = $1 AND NOT pending AND NOT joined AND group_instance_id IS NULL";
    /// Used by `complete`.
    joined_members = "SELECT member_id, joined, protocol_names FROM {s}group_members
             WHERE group_name = $1 AND NOT pending ORDER BY joined_at, member_id";
    /// Used by `complete`.
    reset_to_empty = "UPDATE {s}groups SET state = 'Empty', protocol_name = NULL, leader = NULL,
                    rebalance_deadline = NULL, join_delay_until = NULL, updated_at = now()
             WHERE name = $1";
    /// Used by `complete`.
    extend_deadline = "UPDATE {s}groups SET rebalance_deadline = now() + coalesce((SELECT max(rebalance_timeout_ms)
                 FROM {s}group_members WHERE group_name = $1 AND NOT pending), 0) * interval '1 millisecond'
             WHERE name = $1";
    /// Used by `complete`.
    start_member_generation = "UPDATE {s}group_members
         SET member_generation = CASE WHEN joined THEN $2 ELSE member_generation END,
             joined = false, assignment_bytes = '\\x'
         WHERE group_name = $1 AND NOT pending";
    /// Used by `complete`.
    start_generation = "UPDATE {s}groups SET generation = $2, state = 'CompletingRebalance', protocol_name = $3, leader = $4,
                rebalance_deadline = NULL, join_delay_until = NULL, updated_at = now()
         WHERE name = $1";
    /// Used by `member`.
    member = "SELECT pending, joined, member_generation, protocol_names, protocol_metadata,
                    rebalance_timeout_ms, assignment_bytes
             FROM {s}group_members WHERE group_name = $1 AND member_id = $2";
    /// Used by `instance_owner`.
    instance_owner = "SELECT member_id FROM {s}group_members WHERE group_name = $1 AND group_instance_id = $2";
    /// Used by `all_committed_offsets`.
    all_committed_offsets = "SELECT t.name, o.partition, o.\"offset\", o.metadata FROM {s}group_offsets o
                 JOIN {s}topics t ON t.id = o.topic_id
                 WHERE o.group_name = $1 ORDER BY t.name, o.partition";
    /// Used by `describe_classic_group`.
    has_offsets = "SELECT EXISTS (SELECT 1 FROM {s}group_offsets WHERE group_name = $1)";
    /// Used by `describe_classic`.
    describe_classic = "SELECT member_id, group_instance_id, client_id, client_host,
                    coalesce(protocol_metadata[array_position(protocol_names, $2)], '\\x'), assignment_bytes
             FROM {s}group_members WHERE group_name = $1 AND NOT pending ORDER BY member_id";
    /// Creates a consumer-protocol group.
    create_consumer_group = "INSERT INTO {s}groups (name, strategy, protocol_type) VALUES ($1, 'sticky', $2)
         ON CONFLICT DO NOTHING";
    /// Locks a group for the consumer protocol.
    lock_consumer = "SELECT generation, protocol_type, subscribed_partitions FROM {s}groups WHERE name = $1 FOR UPDATE";
    /// Removes a consumer-protocol group's expired members and those that
    /// did not give up revoked partitions in time.
    expire_consumer = concat!(
        "DELETE FROM {s}group_members m WHERE m.group_name = $1 AND (",
        expired!(),
        " OR m.revoke_deadline < now()) RETURNING m.member_id"
    );
    /// A consumer-protocol group's members.
    consumer_members = "SELECT member_id, member_epoch, previous_epoch, topics, subscribed_regex, server_assignor,
                assignment, revoking, target, client_id, client_host, group_instance_id, rack_id, principal
         FROM {s}group_members WHERE group_name = $1 ORDER BY member_id";
    /// Adds a consumer-protocol member, or starts an existing one over.
    join_consumer = "INSERT INTO {s}group_members (group_name, member_id, client_id, session_timeout_ms, topics,
                group_instance_id, client_host, rebalance_timeout_ms, subscribed_regex, server_assignor, rack_id,
                principal)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (group_name, member_id) DO UPDATE SET client_id = $3, session_timeout_ms = $4, topics = $5,
                group_instance_id = $6, client_host = $7, rebalance_timeout_ms = $8, subscribed_regex = $9,
                server_assignor = $10, rack_id = $11, principal = $12, last_heartbeat = now(), member_epoch = 0,
                previous_epoch = -1, assignment = '[]', revoking = '[]', target = '[]', revoke_deadline = NULL";
    /// Refreshes a consumer-protocol member and its subscription.
    update_consumer = "UPDATE {s}group_members SET last_heartbeat = now(), session_timeout_ms = $3, topics = $4,
                rebalance_timeout_ms = $5, subscribed_regex = $6, server_assignor = $7, principal = $8
         WHERE group_name = $1 AND member_id = $2";
    /// Stores a member's target assignment.
    set_target = "UPDATE {s}group_members SET target = $3 WHERE group_name = $1 AND member_id = $2";
    /// Stores a member's reconciliation state; a revocation starts its
    /// deadline, the member's rebalance timeout.
    set_reconciled = "UPDATE {s}group_members SET member_epoch = $3, previous_epoch = $4, assignment = $5,
                revoking = $6,
                revoke_deadline = CASE WHEN $6::jsonb = '[]'::jsonb THEN NULL
                    ELSE coalesce(revoke_deadline, now() + rebalance_timeout_ms * interval '1 millisecond') END
         WHERE group_name = $1 AND member_id = $2";
    /// Moves a consumer-protocol group to a new epoch.
    set_group_epoch = "UPDATE {s}groups SET generation = $2, subscribed_partitions = $3, updated_at = now()
         WHERE name = $1";
    /// Every topic's name, for matching regular expressions.
    all_topic_names = "SELECT name FROM {s}topics ORDER BY name";
    /// One user's grants, for the topics its member's regular expression
    /// may match.
    member_grants = "SELECT permission, resource_type, pattern, name FROM {s}acls WHERE user_name = $1";
    /// Topic ids by name.
    topic_ids = "SELECT name, uuid_send(topic_uuid) FROM {s}topics WHERE name = ANY($1)";
    /// Topic names by id.
    topic_names = "SELECT uuid_send(topic_uuid), name FROM {s}topics
         WHERE topic_uuid IN (SELECT encode(x, 'hex')::uuid FROM unnest($1::bytea[]) AS x)";
    /// The member holding a static member's instance id, its epoch and subscription.
    instance_holder = "SELECT member_id, member_epoch, topics, subscribed_regex, server_assignor
         FROM {s}group_members WHERE group_name = $1 AND group_instance_id = $2";
    /// A static member leaves for a while: it keeps its partitions, its epoch is remembered.
    static_leave = "UPDATE {s}group_members SET previous_epoch = member_epoch, member_epoch = -2
         WHERE group_name = $1 AND member_id = $2";
    /// A static member comes back under a new member id, with its epoch and partitions.
    static_return = "UPDATE {s}group_members SET member_id = $3, member_epoch = previous_epoch,
                previous_epoch = -1, last_heartbeat = now()
         WHERE group_name = $1 AND member_id = $2";
    /// A group's protocol type and the epoch of one of its live members.
    fetch_fence = concat!(
        "SELECT g.protocol_type, (SELECT m.member_epoch FROM {s}group_members m
                 WHERE m.group_name = $1 AND m.member_id = $2 AND NOT (",
        expired!(),
        ")) FROM {s}groups g WHERE g.name = $1"
    );
    /// A live member's epoch.
    live_member_epoch = concat!(
        "SELECT m.member_epoch FROM {s}group_members m WHERE m.group_name = $1 AND m.member_id = $2 AND NOT (",
        expired!(),
        ")"
    );
    /// Used by `describe_library`.
    library_strategy = "SELECT strategy FROM {s}groups WHERE name = $1";
    }
}
