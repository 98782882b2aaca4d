-- Users of the Kafka listener's SASL authentication. Only SCRAM-SHA-256
-- credentials are kept (RFC 5802/7677): the salt, the iteration count,
-- StoredKey and ServerKey. The password itself is never stored; PLAIN
-- logins are checked by deriving StoredKey from the password given.
CREATE TABLE users (
    name       text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 255),
    salt       bytea NOT NULL CHECK (octet_length(salt) >= 16),
    iterations integer NOT NULL CHECK (iterations >= 4096),
    stored_key bytea NOT NULL CHECK (octet_length(stored_key) = 32),
    server_key bytea NOT NULL CHECK (octet_length(server_key) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
