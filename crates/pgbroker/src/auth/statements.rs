//! The statements of users, access keys and ACLs (see [`crate::sql`]).

crate::sql::statements! {
    /// Users', access keys' and ACLs' statements, qualified with the broker's schema.
    Statements {
    /// Used by `grant`.
    grant = "WITH u AS (SELECT name FROM {s}users WHERE name = $1),
                 ins AS (
                    INSERT INTO {s}acls (user_name, permission, resource_type, pattern, name)
                    SELECT name, $2, $3, $4, $5 FROM u
                    ON CONFLICT DO NOTHING
                    RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM ins)";
    /// Used by `revoke`.
    revoke = "WITH u AS (SELECT name FROM {s}users WHERE name = $1),
                 del AS (
                    DELETE FROM {s}acls
                    WHERE user_name = $1 AND permission = $2 AND resource_type = $3
                      AND pattern = $4 AND name = $5
                    RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM del)";
    /// Used by `list_acls` and `list_access_keys`.
    user_exists = "SELECT 1 FROM {s}users WHERE name = $1";
    /// Used by `list_acls`.
    list_acls = "SELECT user_name, permission, resource_type, pattern, name FROM {s}acls
                 WHERE $1::text IS NULL OR user_name = $1
                 ORDER BY user_name, resource_type, pattern, name, permission";
    /// Used by `add_user`.
    add_user = "INSERT INTO {s}users (name, salt, iterations, stored_key, server_key)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE
                    SET salt = excluded.salt, iterations = excluded.iterations,
                        stored_key = excluded.stored_key, server_key = excluded.server_key,
                        updated_at = now()
                 RETURNING xmax = 0";
    /// Used by `remove_user`.
    remove_user = "DELETE FROM {s}users WHERE name = $1";
    /// Used by `list_users`.
    list_users = "SELECT name, iterations, created_at, updated_at FROM {s}users ORDER BY name";
    /// Used by `scram_credentials`.
    scram_credentials = "SELECT salt, iterations, stored_key, server_key FROM {s}users WHERE name = $1";
    /// Used by `create_access_key`.
    create_access_key = "WITH u AS (SELECT name FROM {s}users WHERE name = $1),
                 ins AS (
                    INSERT INTO {s}access_keys (key_id, user_name, secret)
                    SELECT $2, name, $3 FROM u
                    ON CONFLICT (key_id) DO NOTHING
                    RETURNING created_at)
                 SELECT EXISTS (SELECT 1 FROM u), (SELECT created_at FROM ins)";
    /// Used by `list_access_keys`.
    list_access_keys = "SELECT key_id, user_name, created_at, last_used_at FROM {s}access_keys
                 WHERE user_name = $1 ORDER BY created_at, key_id";
    /// Used by `delete_access_key`.
    delete_access_key = "DELETE FROM {s}access_keys WHERE key_id = $1";
    /// Used by `access_key_secret`.
    access_key_secret = "SELECT user_name, secret FROM {s}access_keys WHERE key_id = $1";
    /// Used by `touch_access_key`.
    touch_access_key = "UPDATE {s}access_keys SET last_used_at = now()
                 WHERE key_id = $1
                   AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')";
    }
}
