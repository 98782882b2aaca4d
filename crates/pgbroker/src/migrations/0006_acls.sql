-- What each user of the Kafka listener may do, enforced while SASL
-- authentication is on. A row grants one permission on one resource: a
-- topic or a group, named exactly ('literal') or by a name prefix
-- ('prefix'; the empty prefix matches every name). Rows go with their
-- user.
CREATE TABLE acls (
    user_name     text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    permission    text NOT NULL CHECK (permission IN ('produce', 'consume', 'group', 'admin')),
    resource_type text NOT NULL CHECK (resource_type IN ('topic', 'group')),
    pattern       text NOT NULL CHECK (pattern IN ('literal', 'prefix')),
    name          text NOT NULL CHECK (octet_length(name) <= 255),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_name, resource_type, pattern, name, permission),
    CHECK (pattern = 'prefix' OR octet_length(name) >= 1),
    CHECK (CASE permission
               WHEN 'group' THEN resource_type = 'group'
               WHEN 'admin' THEN true
               ELSE resource_type = 'topic'
           END)
);
