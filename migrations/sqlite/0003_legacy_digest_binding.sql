-- Counterpart of postgres/0003_legacy_digest_binding.sql: an adopted key's digest counts only
-- while `legacy_key_digest_of` equals the row's `api_key_hash`.
ALTER TABLE api_clients ADD COLUMN legacy_key_digest_of TEXT;
UPDATE api_clients SET legacy_key_digest_of = api_key_hash WHERE legacy_key_digest IS NOT NULL;
