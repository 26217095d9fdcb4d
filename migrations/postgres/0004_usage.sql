-- Usage analytics: counts per client, bucket and endpoint, a column per outcome. One table per
-- bucket size, filled by the same flush; client_id '*' rows hold every use together (those
-- naming no client included). Each table is partitioned by time (minutes by day, hours by
-- month, days by year): retention drops whole partitions, so old counts leave no dead rows.
-- The relay creates partitions ahead of time (and for any bucket a flush needs).
CREATE TABLE usage_minute (
    client_id TEXT NOT NULL,
    bucket_start TIMESTAMPTZ NOT NULL,
    endpoint TEXT NOT NULL,
    allowed BIGINT NOT NULL DEFAULT 0,
    rate_limited BIGINT NOT NULL DEFAULT 0,
    usage_exceeded BIGINT NOT NULL DEFAULT 0,
    forbidden BIGINT NOT NULL DEFAULT 0,
    disabled BIGINT NOT NULL DEFAULT 0,
    expired BIGINT NOT NULL DEFAULT 0,
    upstream_error BIGINT NOT NULL DEFAULT 0,
    invalid BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, bucket_start, endpoint)
) PARTITION BY RANGE (bucket_start);
-- Serves top-clients queries (a range across clients).
CREATE INDEX usage_minute_bucket ON usage_minute (bucket_start);

CREATE TABLE usage_hour (LIKE usage_minute INCLUDING DEFAULTS, PRIMARY KEY (client_id, bucket_start, endpoint))
    PARTITION BY RANGE (bucket_start);
CREATE INDEX usage_hour_bucket ON usage_hour (bucket_start);

CREATE TABLE usage_day (LIKE usage_minute INCLUDING DEFAULTS, PRIMARY KEY (client_id, bucket_start, endpoint))
    PARTITION BY RANGE (bucket_start);
CREATE INDEX usage_day_bucket ON usage_day (bucket_start);

-- The id of every flush written lately, in the flush's own transaction: a flush retried after
-- an error that hid a commit is recognised and not counted twice.
CREATE TABLE usage_batches (
    id TEXT PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX usage_batches_at ON usage_batches (at);
