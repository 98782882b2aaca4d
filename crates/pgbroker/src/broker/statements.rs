//! The statements of the cluster's registry of nodes and of the broker's
//! own plumbing (see [`crate::sql`]).

crate::sql::statements! {
    /// The cluster's and the broker's statements, qualified with its schema.
    Statements {
    /// `register_node` (cluster.rs).
    register_node = "DELETE FROM {s}kafka_nodes WHERE last_seen < now() - $1::bigint * interval '1 second'";
    /// `register_node` (cluster.rs).
    register_node_insert = "INSERT INTO {s}kafka_nodes (host, port, rack) VALUES ($1, $2, $3) RETURNING node_id";
    /// `touch_node` (cluster.rs).
    touch_node = "UPDATE {s}kafka_nodes SET last_seen = now() WHERE node_id = $1";
    /// `deregister_node` (cluster.rs).
    deregister_node = "DELETE FROM {s}kafka_nodes WHERE node_id = $1";
    /// `live_nodes` (cluster.rs).
    live_nodes = "SELECT node_id, host, port, rack FROM {s}kafka_nodes
                 WHERE last_seen >= now() - $1::bigint * interval '1 millisecond' ORDER BY node_id";
    /// `register_waiter` (broker/notify.rs).
    register_waiter = "INSERT INTO {s}waiters (partition_id, listener, until)
                 SELECT unnest($1::bigint[]), $2, now() + $3::bigint * interval '1 millisecond'
                 ON CONFLICT (partition_id, listener) DO UPDATE SET until = EXCLUDED.until";
    /// `check_version` (broker/mod.rs).
    check_version = "SELECT coalesce(max(version), 0) FROM {s}schema_migrations";
    /// `load_topic_meta` (broker/mod.rs).
    load_topic_meta = "SELECT t.segment_records, t.max_message_bytes,
                    coalesce(array_agg(p.id ORDER BY p.partition) FILTER (WHERE p.id IS NOT NULL), '{}')
             FROM {s}topics t LEFT JOIN {s}partitions p ON p.topic_id = t.id
             WHERE t.name = $1 GROUP BY t.id";
    }
}
