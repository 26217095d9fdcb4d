-- Client policies. Credits: the balance not leased out to a node (NULL: unlimited), the
-- refill, the refill period the balance belongs to, and a generation that every set of the
-- balance (an admin's or a refill) moves on, so leases taken under an older one are void.
-- Networks: a JSON array of CIDR strings (empty: anywhere). Adding nullable columns and
-- columns with constant defaults rewrites no rows, also on an adopted database.
ALTER TABLE api_clients
    ADD COLUMN credits_remaining BIGINT,
    ADD COLUMN credits_refill_amount BIGINT,
    ADD COLUMN credits_refill_interval TEXT,
    ADD COLUMN credits_period TIMESTAMPTZ,
    ADD COLUMN credits_generation BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN allowed_networks JSONB NOT NULL DEFAULT '[]';
