-- Usage analytics: counts per client, bucket and endpoint, a column per outcome. One table per
-- bucket size, filled by the same flush; client_id '*' rows hold every use together (those
-- naming no client included). bucket_start is Unix microseconds, aligned to UTC.
CREATE TABLE usage_minute (
    client_id TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    allowed INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    usage_exceeded INTEGER NOT NULL DEFAULT 0,
    forbidden INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    upstream_error INTEGER NOT NULL DEFAULT 0,
    invalid INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, bucket_start, endpoint)
);
-- Serves top-clients queries (a range across clients) and retention (oldest first).
CREATE INDEX usage_minute_bucket ON usage_minute (bucket_start);

CREATE TABLE usage_hour (
    client_id TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    allowed INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    usage_exceeded INTEGER NOT NULL DEFAULT 0,
    forbidden INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    upstream_error INTEGER NOT NULL DEFAULT 0,
    invalid INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, bucket_start, endpoint)
);
CREATE INDEX usage_hour_bucket ON usage_hour (bucket_start);

CREATE TABLE usage_day (
    client_id TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    allowed INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    usage_exceeded INTEGER NOT NULL DEFAULT 0,
    forbidden INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    upstream_error INTEGER NOT NULL DEFAULT 0,
    invalid INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, bucket_start, endpoint)
);
CREATE INDEX usage_day_bucket ON usage_day (bucket_start);

-- The id of every flush written lately, in the flush's own transaction: a flush retried after
-- an error that hid a commit is recognised and not counted twice.
CREATE TABLE usage_batches (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE INDEX usage_batches_at ON usage_batches (at);
