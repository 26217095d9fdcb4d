//! API keys: `eg_` + 10-char key id + 32-char secret + 6-char checksum, all base62.
//!
//! The key id is public and indexed, so a lookup is one index probe; the stored hash is the
//! SHA-256 of the whole key, compared in constant time. The checksum (CRC-32 of the text
//! before it) lets a typo or a forged string be turned away before any database access.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "eg_";
const KEY_ID_LEN: usize = 10;
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BODY_LEN: usize = KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN;
/// Length of a whole key: `eg_` and 48 base62 characters.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The public identifier inside a key; `eg_` + it is the key's `key_prefix`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    pub fn as_str(&self) -> &str {
        // Only ever built from base62 ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; KEY_ID_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(KeyId(bytes))
    }

    /// The non-secret start of a key, shown in lists so an operator can recognise it.
    pub fn key_prefix(&self) -> String {
        format!("{PREFIX}{}", self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

/// A key as shown to its owner exactly once. Its `Debug` never prints it.
pub struct PlainKey(String);

impl PlainKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainKey(<redacted>)")
    }
}

/// SHA-256 of a whole key: what the database keeps instead of the key.
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        super::hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(KeyHash(out))
    }

    /// The digest itself, as a lookup key (a hash of a hash: comparing it reveals nothing).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Constant-time comparison, so timing reveals nothing about how much of a guess matched.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

/// A well-formed key presented by a caller, reduced to what a lookup needs.
#[derive(Debug, Clone, Copy)]
pub struct PresentedKey {
    pub key_id: KeyId,
    pub hash: KeyHash,
}

/// A freshly generated key with its stored parts.
#[derive(Debug)]
pub struct NewKey {
    pub plain: PlainKey,
    pub key_id: KeyId,
    pub hash: KeyHash,
}

/// Generates a key from the operating system's CSPRNG.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut body = [0u8; KEY_ID_LEN + SECRET_LEN];
    fill_base62(&mut body)?;
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(PREFIX);
    key.push_str(std::str::from_utf8(&body).unwrap_or_default());
    let checksum = checksum(key.as_bytes());
    key.push_str(std::str::from_utf8(&checksum).unwrap_or_default());
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&body[..KEY_ID_LEN]);
    Ok(NewKey {
        hash: KeyHash::of(&key),
        key_id: KeyId(id),
        plain: PlainKey(key),
    })
}

/// Parses a presented key; `None` when it is not of this service's format or its checksum is
/// wrong, so nothing malformed ever reaches the database.
pub fn parse(key: &str) -> Option<PresentedKey> {
    let bytes = key.as_bytes();
    if bytes.len() != KEY_LEN || !key.starts_with(PREFIX) {
        return None;
    }
    let body = &bytes[PREFIX.len()..];
    if !body.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let (signed, given) = bytes.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(signed) != given {
        return None;
    }
    let key_id = KeyId(body[..KEY_ID_LEN].try_into().ok()?);
    Some(PresentedKey {
        key_id,
        hash: KeyHash::of(key),
    })
}

/// Length of a key issued by the original Python service: `eg_` + 40 lowercase hex.
const LEGACY_LEN: usize = PREFIX.len() + 40;

/// Whether `key` has the original service's format. Such keys are checked against the
/// adopted bcrypt hashes once, then found by their SHA-256 (`KeyHash::of`).
pub fn is_legacy_format(key: &str) -> bool {
    key.len() == LEGACY_LEN
        && key.starts_with(PREFIX)
        && key.as_bytes()[PREFIX.len()..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// CRC-32 (IEEE) of `signed`, in base62, most significant digit first, padded to 6.
fn checksum(signed: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(signed);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Fills `out` with uniformly random base62 characters (rejection sampling keeps it unbiased).
fn fill_base62(out: &mut [u8]) -> Result<(), getrandom::Error> {
    let mut filled = 0;
    let mut buf = [0u8; 64];
    while filled < out.len() {
        getrandom::fill(&mut buf)?;
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would favour the first characters.
            if b < 248 && filled < out.len() {
                out[filled] = BASE62[usize::from(b % 62)];
                filled += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_has_the_documented_shape_and_parses() {
        let key = generate().unwrap();
        let text = key.plain.expose();
        assert_eq!(text.len(), 51);
        assert!(text.starts_with("eg_"));
        assert!(text[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.key_id, key.key_id);
        assert!(parsed.hash.matches(&key.hash));
        assert_eq!(key.key_id.key_prefix(), &text[..13]);
    }

    #[test]
    fn checksum_is_crc32_in_padded_base62() {
        // Computed independently with Python's zlib.crc32: 969733920, in base62 "13cu5g".
        let signed = format!("eg_{}", "a".repeat(42));
        assert_eq!(crc32fast::hash(signed.as_bytes()), 969_733_920);
        assert_eq!(&checksum(signed.as_bytes()), b"13cu5g");
        assert!(parse(&format!("{signed}13cu5g")).is_some());
    }

    #[test]
    fn small_checksums_are_left_padded_with_zero() {
        assert_eq!(&checksum(b""), b"000000");
    }

    #[test]
    fn any_changed_character_fails_the_checksum() {
        let key = generate().unwrap();
        let text = key.plain.expose();
        for i in 3..text.len() {
            let mut bytes = text.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
            let altered = String::from_utf8(bytes).unwrap();
            assert!(parse(&altered).is_none(), "altered at {i} still parses");
        }
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "eg_",
            "xx_0123456789",
            &format!("eg_{}", "-".repeat(48)),
            "eg_é",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn legacy_keys_are_recognised_by_shape() {
        assert!(is_legacy_format(&format!("eg_{}", "0a".repeat(20))));
        assert!(!is_legacy_format(&format!("eg_{}", "0A".repeat(20))));
        assert!(!is_legacy_format(&format!("eg_{}", "0a".repeat(21))));
        assert!(!is_legacy_format(generate().unwrap().plain.expose()));
    }

    #[test]
    fn hash_hex_round_trips() {
        let h = KeyHash::of("eg_x");
        let back = KeyHash::from_hex(&h.to_hex()).unwrap();
        assert!(back.matches(&h));
        assert!(KeyHash::from_hex("zz").is_none());
    }

    #[test]
    fn debug_never_prints_secrets() {
        let key = generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.plain.expose()[13..]));
    }
}
