-- What the relay keeps beside the original columns.

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
    ADD COLUMN prev_key_expires_at TIMESTAMPTZ;

UPDATE api_clients SET updated_at = COALESCE(created_at, NOW());
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
