//! Secrets at rest and random values. TOTP keys and held-back upstream answers are sealed with an
//! AEAD (AES-256-GCM) under a configured key; the key id travels with each blob so keys can
//! rotate (`[secrets] previous_keys`). Codes are stored as keyed hashes (HMAC-SHA256).
//! Every random id, secret and code comes from the OS CSPRNG through [`random_bytes`].

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::config::SecretsConfig;

const VERSION: u8 = 1;

/// Fills a fresh array from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // getrandom fails only when the OS has no entropy source at all; then nothing here is safe
    // to hand out, and an all-zero id would be worse than stopping.
    if let Err(e) = getrandom::fill(&mut out) {
        tracing::error!(error = %e, "the OS random number generator failed");
        std::process::abort();
    }
    out
}

/// An opaque 256-bit token, URL-safe (session ids, pending-login ids, CSRF tokens).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// A uniformly random number below `bound` (rejection sampling; no modulo bias).
pub fn random_below(bound: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let n = u64::from_le_bytes(random_bytes::<8>());
        if n < zone {
            return n % bound;
        }
    }
}

struct Key {
    id: [u8; 4],
    aead: LessSafeKey,
    mac: hmac::Key,
}

impl Key {
    fn new(bytes: &[u8]) -> anyhow::Result<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| anyhow::anyhow!("encryption keys are 32 bytes"))?;
        let digest = digest::digest(&digest::SHA256, bytes);
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest.as_ref()[..4]);
        // A separate MAC key, so a hash never doubles as key material for the AEAD.
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let mac_seed = hmac::sign(&mac_key, b"twofa-proxy code hashing v1");
        Ok(Self {
            id,
            aead: LessSafeKey::new(unbound),
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac_seed.as_ref()),
        })
    }
}

/// Seals and opens data at rest; hashes codes.
pub struct Sealer {
    current: Key,
    previous: Vec<Key>,
}

impl Sealer {
    /// The configured key, or (memory store, nothing outlives the process) a random one.
    pub fn from_config(config: &SecretsConfig) -> anyhow::Result<Self> {
        let current = match &config.encryption_key {
            Some(k) => Key::new(k.expose())?,
            None => Key::new(&random_bytes::<32>())?,
        };
        let previous = config
            .previous_keys
            .iter()
            .map(|k| Key::new(k.expose()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { current, previous })
    }

    /// A sealer with a fresh random key (tests, benches).
    pub fn random() -> Self {
        Self {
            current: Key::new(&random_bytes::<32>()).unwrap_or_else(|_| unreachable_key()),
            previous: Vec::new(),
        }
    }

    /// Encrypts `plaintext`, bound to `purpose` and `context` (e.g. the user): a blob sealed for
    /// one user cannot be opened as another's.
    pub fn seal(&self, purpose: &str, context: &str, plaintext: &[u8]) -> String {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        let aad = aad(purpose, context);
        // Sealing fails only for inputs beyond AES-GCM's limits (~64 GiB); ours are tiny.
        if self
            .current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            buf.clear();
        }
        let mut blob = Vec::with_capacity(1 + 4 + NONCE_LEN + buf.len());
        blob.push(VERSION);
        blob.extend_from_slice(&self.current.id);
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(blob)
    }

    /// Opens a blob from [`Sealer::seal`]; `None` if it was tampered with, sealed for another
    /// purpose or context, or under a key we no longer have.
    pub fn open(&self, purpose: &str, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let blob = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if blob.len() < 1 + 4 + NONCE_LEN || blob[0] != VERSION {
            return None;
        }
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == blob[1..5])?;
        let nonce = Nonce::try_assume_unique_for_key(&blob[5..5 + NONCE_LEN]).ok()?;
        let mut buf = blob[5 + NONCE_LEN..].to_vec();
        let aad = aad(purpose, context);
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }

    /// A keyed hash (hex) of a code, for storing codes without storing them.
    pub fn hash_code(&self, purpose: &str, code: &str) -> String {
        hash_with(&self.current, purpose, code)
    }

    /// The hash under the current key, then under each previous one: stored hashes made before
    /// a key rotation still match.
    pub fn hash_candidates(&self, purpose: &str, code: &str) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| hash_with(k, purpose, code))
            .collect()
    }
}

fn hash_with(key: &Key, purpose: &str, code: &str) -> String {
    let mut ctx = hmac::Context::with_key(&key.mac);
    ctx.update(purpose.as_bytes());
    ctx.update(b"\0");
    ctx.update(code.as_bytes());
    hex(ctx.sign().as_ref())
}

fn aad(purpose: &str, context: &str) -> String {
    format!("twofa-proxy:{purpose}:{context}")
}

/// Lower-case hex. Not `format!` per byte: this runs on every authenticated request (the app
/// cookie binding check).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// 32 random bytes always make a valid AES-256 key.
fn unreachable_key() -> Key {
    std::process::abort()
}

/// Constant-time token comparison.
pub fn token_matches(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_purpose_and_context() {
        let s = Sealer::random();
        let blob = s.seal("totp", "alice", b"secret bytes");
        assert_eq!(s.open("totp", "alice", &blob).unwrap(), b"secret bytes");
        assert!(
            s.open("totp", "bob", &blob).is_none(),
            "swapped between users"
        );
        assert!(
            s.open("parked", "alice", &blob).is_none(),
            "swapped between purposes"
        );
        assert_ne!(
            blob,
            s.seal("totp", "alice", b"secret bytes"),
            "nonces repeat"
        );
    }

    #[test]
    fn tampering_is_detected() {
        let s = Sealer::random();
        let blob = s.seal("totp", "alice", b"secret bytes");
        let mut raw = URL_SAFE_NO_PAD.decode(&blob).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(
            s.open("totp", "alice", &URL_SAFE_NO_PAD.encode(&raw))
                .is_none()
        );
        assert!(s.open("totp", "alice", "").is_none());
        assert!(s.open("totp", "alice", "!!!").is_none());
    }

    #[test]
    fn previous_keys_still_open_old_blobs() {
        let old_key = [1u8; 32];
        let new_key = [2u8; 32];
        let secret = |k: &[u8; 32]| crate::config::KeyBytes::new(*k);
        let old = Sealer::from_config(&SecretsConfig {
            encryption_key: Some(secret(&old_key)),
            previous_keys: vec![],
            admin_token: None,
        })
        .unwrap();
        let blob = old.seal("totp", "alice", b"x");
        let rotated = Sealer::from_config(&SecretsConfig {
            encryption_key: Some(secret(&new_key)),
            previous_keys: vec![secret(&old_key)],
            admin_token: None,
        })
        .unwrap();
        assert_eq!(rotated.open("totp", "alice", &blob).unwrap(), b"x");
        let without = Sealer::from_config(&SecretsConfig {
            encryption_key: Some(secret(&new_key)),
            previous_keys: vec![],
            admin_token: None,
        })
        .unwrap();
        assert!(without.open("totp", "alice", &blob).is_none());
    }

    #[test]
    fn hashes_from_before_a_rotation_still_match() {
        let secret = |k: &[u8; 32]| crate::config::KeyBytes::new(*k);
        let old_key = [1u8; 32];
        let old = Sealer::from_config(&SecretsConfig {
            encryption_key: Some(secret(&old_key)),
            previous_keys: vec![],
            admin_token: None,
        })
        .unwrap();
        let rotated = Sealer::from_config(&SecretsConfig {
            encryption_key: Some(secret(&[2u8; 32])),
            previous_keys: vec![secret(&old_key)],
            admin_token: None,
        })
        .unwrap();
        let stored = old.hash_code("recovery", "abcd");
        assert_ne!(rotated.hash_code("recovery", "abcd"), stored);
        assert!(
            rotated
                .hash_candidates("recovery", "abcd")
                .contains(&stored)
        );
    }

    #[test]
    fn code_hashes_are_keyed_and_stable() {
        let s = Sealer::random();
        assert_eq!(s.hash_code("rc", "abcd"), s.hash_code("rc", "abcd"));
        assert_ne!(s.hash_code("rc", "abcd"), s.hash_code("rc", "abce"));
        assert_ne!(
            s.hash_code("rc", "abcd"),
            Sealer::random().hash_code("rc", "abcd")
        );
    }

    #[test]
    fn random_below_stays_in_range() {
        for _ in 0..1000 {
            assert!(random_below(1_000_000) < 1_000_000);
        }
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 43);
    }
}
