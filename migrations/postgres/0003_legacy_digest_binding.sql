-- An adopted key's SHA-256 digest stands for the bcrypt hash it was checked against, and for
-- nothing else: if `api_key_hash` is changed outside the relay (the original service, or an
-- operator re-keying a client by hand), the old key's digest must stop working. The digest
-- now counts only while `legacy_key_digest_of` equals `api_key_hash`. Digests recorded so far
-- were checked against the hash the row holds now.
ALTER TABLE api_clients ADD COLUMN legacy_key_digest_of TEXT;
UPDATE api_clients SET legacy_key_digest_of = api_key_hash WHERE legacy_key_digest IS NOT NULL;
