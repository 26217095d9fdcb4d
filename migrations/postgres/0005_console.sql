-- Console sessions, shared by every node. The cookie holds a random token; only its SHA-256
-- is stored. A session names who signed in (the admin token or an admin client) and, for a
-- client, the key id it held then, so a regeneration ends the session.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    -- 'admin-token' or the admin client's id.
    actor TEXT NOT NULL,
    client_id TEXT,
    -- The client's key id at sign-in (NULL for an adopted key), or for the admin token 16 hex
    -- digits of its SHA-256, so a session ends when the server runs with another token.
    key_id TEXT,
    -- Per-session CSRF token, sent back in every form.
    csrf TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

-- The console's overview counts clients by state from this index alone.
CREATE INDEX api_clients_status ON api_clients (enabled, expires_at);
