-- Each broker node's security protocol, as Kafka names a listener's
-- (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL). A broker lists in Metadata
-- only the nodes a client of its own protocol can reach.
ALTER TABLE kafka_nodes
    ADD COLUMN listener text NOT NULL DEFAULT 'PLAINTEXT'
        CHECK (listener IN ('PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'));
