-- Counterpart of postgres/0002_relay.sql, which extends the original service's table. A
-- SQLite database never held that table; 0001 created the clients table, this adds the rest.

-- Access tokens: the Ed25519 keys that sign them, shared by every process using this database,
-- and a per-client token generation that a disable or a regeneration without grace moves on,
-- so tokens issued before stop being accepted.
CREATE TABLE signing_keys (
    -- RFC 7638 thumbprint of the public key.
    kid TEXT PRIMARY KEY,
    -- The 32-byte Ed25519 seed. It leaves the database only into a server's memory.
    private_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    -- Set when a newer key replaces it; published until the tokens it signed have expired.
    retired_at INTEGER
);

ALTER TABLE api_clients ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;

-- Kept in step with PostgreSQL, where adopted keys of the original service get a SHA-256
-- digest after their first bcrypt check. A SQLite database never holds such keys.
ALTER TABLE api_clients ADD COLUMN legacy_key_digest TEXT;
CREATE UNIQUE INDEX api_clients_legacy_key_digest ON api_clients (legacy_key_digest);
