-- Client policies. Credits: the balance not leased out to a node (NULL: unlimited), the
-- refill, the refill period the balance belongs to (Unix microseconds), and a generation
-- that every set of the balance (an admin's or a refill) moves on, so leases taken under an
-- older one are void. Networks: a JSON array of CIDR strings (empty: anywhere).
ALTER TABLE api_clients ADD COLUMN credits_remaining INTEGER;
ALTER TABLE api_clients ADD COLUMN credits_refill_amount INTEGER;
ALTER TABLE api_clients ADD COLUMN credits_refill_interval TEXT;
ALTER TABLE api_clients ADD COLUMN credits_period INTEGER;
ALTER TABLE api_clients ADD COLUMN credits_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_clients ADD COLUMN allowed_networks TEXT NOT NULL DEFAULT '[]';
