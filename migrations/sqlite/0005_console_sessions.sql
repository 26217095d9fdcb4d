-- Console sessions, shared by every node. The cookie holds a random token; only its SHA-256
-- is stored. A session names who signed in (the admin token or an admin client) and, for a
-- client, the key id it held then, so a regeneration ends the session.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    -- 'admin-token' or the admin client's id.
    actor TEXT NOT NULL,
    client_id TEXT,
    -- The client's key id at sign-in (NULL for the admin token or an adopted key).
    key_id TEXT,
    -- Per-session CSRF token, sent back in every form.
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
