//! The binding of a proxy session to the app session it was issued with: a keyed hash of the
//! app's session cookie value, kept in the session record. A proxy session vouches only for
//! that app session (and the one before the app's last rotation); an app cookie from any other
//! login is refused at the gate. Also counts the requests in flight on each app session, so a
//! login on it waits for them.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use crate::login::held::HeldAnswer;
use crate::secrets::Sealer;
use crate::session::cookie;
use crate::store::SessionRecord;

/// The purpose under which app cookie values are hashed into session bindings.
const APP_COOKIE: &str = "app-cookie";

/// Bound on remembered app cookie hashes; the map starts over when full.
const APP_COOKIE_HASHES: usize = 16_384;

/// The map's own hasher for keys that already are keyed hashes: hashing them again would be a
/// third SipHash per request for nothing.
#[derive(Default)]
struct KeyedHash(u64);

impl Hasher for KeyedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

/// A request counted by [`AppBindings::enter`].
pub struct InFlight<'a> {
    bindings: &'a AppBindings,
    binding: Arc<str>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.bindings.in_flight.lock()
            && let Some(n) = counts.get_mut(&self.binding)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.binding);
            }
        }
    }
}

pub struct AppBindings {
    sealer: Arc<Sealer>,
    /// The app's session cookie (`app.success_cookie`).
    cookie_name: String,
    /// App cookie values already hashed under the current key: every authenticated request
    /// checks its binding, and an HMAC per request was 4% of the proxy's CPU. Keyed by a
    /// 128-bit SipHash of the value under two secret per-process keys, so an attacker's values
    /// cost 16 bytes each (never their size) and cannot be made to collide with another's.
    hashes: Mutex<HashMap<u128, Arc<str>, BuildHasherDefault<KeyedHash>>>,
    /// Requests this process is forwarding, counted by the binding of the app session they
    /// carry: a login on that app session waits for them (see [`AppBindings::quiet`]).
    in_flight: Mutex<HashMap<Arc<str>, usize>>,
    keys: (RandomState, RandomState),
}

impl AppBindings {
    pub fn new(sealer: Arc<Sealer>, cookie_name: String) -> Self {
        Self {
            sealer,
            cookie_name,
            hashes: Mutex::new(HashMap::default()),
            in_flight: Mutex::new(HashMap::new()),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// The binding of a session to the app's session cookie (a keyed hash of its value).
    pub fn hash(&self, value: &str) -> Arc<str> {
        let (a, b) = &self.keys;
        let key = (u128::from(a.hash_one(value)) << 64) | u128::from(b.hash_one(value));
        if let Ok(known) = self.hashes.lock()
            && let Some(hash) = known.get(&key)
        {
            return hash.clone();
        }
        let hash: Arc<str> = self.sealer.hash_code(APP_COOKIE, value).into();
        if let Ok(mut known) = self.hashes.lock() {
            if known.len() >= APP_COOKIE_HASHES {
                known.clear();
            }
            known.insert(key, hash.clone());
        }
        hash
    }

    /// Counts a request forwarded on the app session `binding` until the guard drops.
    pub fn enter(&self, binding: Arc<str>) -> InFlight<'_> {
        if let Ok(mut counts) = self.in_flight.lock() {
            *counts.entry(binding.clone()).or_insert(0) += 1;
        }
        InFlight {
            bindings: self,
            binding,
        }
    }

    /// Waits (up to `within`) until this process forwards no request on the app session
    /// `binding`; false if some are still under way. An app that keeps its session id across
    /// logins and reads its session only after a request's body (PHP behind a buffering
    /// server, Django's lazy sessions) would otherwise serve a request that passed the gate
    /// before a login as the newly logged-in user.
    pub async fn quiet(&self, binding: &str, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let busy = self
                .in_flight
                .lock()
                .map_or(true, |counts| counts.contains_key(binding));
            if !busy {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The bindings an app cookie value may have been given: under the current and every
    /// previous key.
    pub fn candidates(&self, value: &str) -> Vec<String> {
        self.sealer.hash_candidates(APP_COOKIE, value)
    }

    /// Whether a session vouches for this app cookie value: its binding, or the one before the
    /// app's last rotation, under the current or a previous key. A session without a binding
    /// vouches for none: it never saw an app session issued at its own login.
    pub fn vouches_for(&self, record: &SessionRecord, value: &str) -> bool {
        let Some(bound) = &record.app_cookie else {
            return false;
        };
        if value.len() > cookie::MAX_COOKIE_BYTES {
            return false;
        }
        let accepted = |h: &str| h == bound || record.app_cookie_prev.as_deref() == Some(h);
        // The current key first (every request pays this); older keys only on a mismatch.
        accepted(&self.hash(value))
            || self
                .sealer
                .hash_candidates(APP_COOKIE, value)
                .iter()
                .any(|h| accepted(h))
    }

    /// The binding for the app session a held-back login hands over.
    pub fn of_answer(&self, held: &HeldAnswer) -> Option<String> {
        held.cookie_value(&self.cookie_name)
            .map(|v| self.hash(&v).to_string())
    }
}
