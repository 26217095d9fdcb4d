-- The original service's table, exactly as it created it, so that pointing the relay at that
-- service's database finds its table in place (IF NOT EXISTS) and the next migration extends
-- it without another redesign.
CREATE TABLE IF NOT EXISTS api_clients (
    id SERIAL PRIMARY KEY,
    client_id VARCHAR(64) UNIQUE NOT NULL,
    api_key_hash VARCHAR(128) NOT NULL,
    name VARCHAR(255),
    scopes TEXT[] DEFAULT ARRAY['chat', 'history'],
    rate_limit INT DEFAULT 100,
    enabled BOOLEAN DEFAULT TRUE,
    expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    last_used_at TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS idx_api_clients_client_id ON api_clients (client_id);
CREATE INDEX IF NOT EXISTS idx_api_clients_enabled ON api_clients (enabled);
