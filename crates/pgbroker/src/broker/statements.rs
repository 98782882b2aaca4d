//! The statements of the cluster's registry of nodes and of the broker's
//! own plumbing (see [`crate::sql`]).

crate::sql::statements! {
    /// The cluster's and the broker's statements, qualified with its schema.
    Statements {
    /// Used by `register_node`.
    delete_stale_nodes = "DELETE FROM {s}kafka_nodes WHERE last_seen < now() - $1::bigint * interval '1 second'";
    /// Used by `register_node`: the node id of the address if it has one
    /// (the lowest, should there be several), else a new one.
    register_node = "WITH reused AS (
                   UPDATE {s}kafka_nodes SET rack = $3, listener = $4, started_at = now(), last_seen = now()
                   WHERE node_id = (SELECT min(node_id) FROM {s}kafka_nodes WHERE host = $1 AND port = $2)
                   RETURNING node_id),
                 inserted AS (
                   INSERT INTO {s}kafka_nodes (host, port, rack, listener)
                   SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM reused)
                   RETURNING node_id)
                 SELECT node_id FROM reused UNION ALL SELECT node_id FROM inserted";
    /// Used by `register_node`: other rows of the same address.
    delete_same_address = "DELETE FROM {s}kafka_nodes WHERE host = $1 AND port = $2 AND node_id <> $3";
    /// Used by `touch_node`.
    touch_node = "UPDATE {s}kafka_nodes SET last_seen = now() WHERE node_id = $1";
    /// Used by `deregister_node`.
    deregister_node = "UPDATE {s}kafka_nodes SET last_seen = '-infinity' WHERE node_id = $1";
    /// Used by `live_nodes`.
    live_nodes = "SELECT node_id, host, port, rack, listener FROM {s}kafka_nodes
                 WHERE last_seen >= now() - $1::bigint * interval '1 millisecond' ORDER BY node_id";
    /// Used by `register_waiter`.
    register_waiter = "INSERT INTO {s}waiters (partition_id, listener, until)
                 SELECT unnest($1::bigint[]), $2, now() + $3::bigint * interval '1 millisecond'
                 ON CONFLICT (partition_id, listener) DO UPDATE SET until = EXCLUDED.until";
    /// Used by `check_version`.
    check_version = "SELECT coalesce(max(version), 0) FROM {s}schema_migrations";
    /// Used by `load_topic_meta`.
    load_topic_meta = "SELECT t.segment_records, t.max_message_bytes,
                    coalesce(array_agg(p.id ORDER BY p.partition) FILTER (WHERE p.id IS NOT NULL), '{}'),
                    t.cleanup_policy <> 'delete'
             FROM {s}topics t LEFT JOIN {s}partitions p ON p.topic_id = t.id
             WHERE t.name = $1 GROUP BY t.id";
    }
}
