-- Access keys of the SQS listener: AWS Signature Version 4 credentials
-- that belong to a user. SigV4 is an HMAC keyed by the secret itself, so
-- the verifier needs the secret: it is stored as given, not hashed (see
-- SECURITY.md). Keys go with their user.
CREATE TABLE access_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[A-Z0-9]{16,128}$'),
    user_name    text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    secret       text NOT NULL CHECK (octet_length(secret) BETWEEN 16 AND 128),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX access_keys_user ON access_keys (user_name);

-- Queues become ACL resources: produce (send) and consume (receive,
-- delete, change visibility) apply to topics and queues, admin to all.
ALTER TABLE acls DROP CONSTRAINT acls_resource_type_check;
ALTER TABLE acls ADD CONSTRAINT acls_resource_type_check
    CHECK (resource_type IN ('topic', 'group', 'queue'));
ALTER TABLE acls DROP CONSTRAINT acls_check1;
ALTER TABLE acls ADD CONSTRAINT acls_permission_fits_resource
    CHECK (CASE permission
               WHEN 'group' THEN resource_type = 'group'
               WHEN 'admin' THEN true
               ELSE resource_type IN ('topic', 'queue')
           END);
