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
