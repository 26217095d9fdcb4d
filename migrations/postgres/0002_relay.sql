-- What the relay keeps beside the original columns. On a database of the original Python
-- service this is the whole adoption: it runs in one transaction (sqlx applies each migration
-- in its own), so a failure leaves the original schema untouched, and it never runs twice.

-- Row ids and their sequence grow to 64 bits.
ALTER TABLE api_clients ALTER COLUMN id TYPE BIGINT;
ALTER SEQUENCE api_clients_id_seq AS BIGINT;

ALTER TABLE api_clients
    ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN updated_at TIMESTAMPTZ,
    -- Public id of the current key; api_key_hash then holds its SHA-256 (hex). A row without
    -- key_id holds an adopted bcrypt hash.
    ADD COLUMN key_id TEXT UNIQUE,
    -- The key replaced by a regeneration with a grace period, until prev_key_expires_at.
    ADD COLUMN prev_key_id TEXT UNIQUE,
    ADD COLUMN prev_key_hash TEXT,
    ADD COLUMN prev_key_expires_at TIMESTAMPTZ,
    -- SHA-256 (hex) of an adopted key, written after its first successful bcrypt check, so
    -- later checks are one index lookup on every node. NULL with key_id NULL: not yet seen.
    ADD COLUMN legacy_key_digest TEXT UNIQUE;

-- The original's columns default to NOW() but allow NULL; list order needs a creation time.
UPDATE api_clients SET created_at = NOW() WHERE created_at IS NULL;
UPDATE api_clients SET updated_at = created_at;
ALTER TABLE api_clients ALTER COLUMN updated_at SET NOT NULL;

-- Serves list order (newest first) and keyset pagination.
CREATE INDEX api_clients_created_at ON api_clients (created_at DESC, id DESC);

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    -- No foreign key: audit rows outlive the client they describe.
    client_id TEXT,
    changes JSONB NOT NULL
);

CREATE INDEX audit_events_client_id ON audit_events (client_id, id DESC);

-- Every write to a client records its id here; other processes poll it to drop cached entries.
CREATE TABLE client_changes (
    seq BIGSERIAL PRIMARY KEY,
    client_id TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);

-- Access tokens: the Ed25519 keys that sign them, shared by every node using this database,
-- and a per-client token generation that a disable or a regeneration without grace moves on,
-- so tokens issued before stop being accepted.
CREATE TABLE signing_keys (
    -- RFC 7638 thumbprint of the public key.
    kid TEXT PRIMARY KEY,
    -- The 32-byte Ed25519 seed. It leaves the database only into a server's memory.
    private_key BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    -- Set when a newer key replaces it; published until the tokens it signed have expired.
    retired_at TIMESTAMPTZ
);

ALTER TABLE api_clients ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
