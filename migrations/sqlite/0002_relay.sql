-- Counterpart of postgres/0002_relay.sql, which extends the original service's table. A
-- SQLite database never held that table: 0001 already created everything, so nothing to do.
SELECT 1;
