-- Clients, their audit log and a change log other processes poll to drop cached entries.
-- Column names follow the original service's `api_clients` table; timestamps are Unix
-- microseconds (INTEGER) so they sort and compare exactly.
CREATE TABLE api_clients (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    -- SHA-256 (hex) of the current key; never the key itself.
    api_key_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    -- JSON array of scope names.
    scopes TEXT NOT NULL,
    rate_limit INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    updated_at INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    -- Public id of the current key: lookups go through this index, never a scan.
    key_id TEXT UNIQUE,
    -- The key replaced by a regeneration with a grace period, until prev_key_expires_at.
    prev_key_id TEXT UNIQUE,
    prev_key_hash TEXT,
    prev_key_expires_at INTEGER
);

-- Serves list order (newest first) and keyset pagination.
CREATE INDEX api_clients_created_at ON api_clients (created_at DESC, id DESC);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    -- No foreign key: audit rows outlive the client they describe.
    client_id TEXT,
    changes TEXT NOT NULL
);

CREATE INDEX audit_events_client_id ON audit_events (client_id, id DESC);

CREATE TABLE client_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
