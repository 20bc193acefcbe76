//! The state every worker shares: config, store, sealer, clock, sessions. Built once in
//! `app::start`; handlers borrow it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::login::account::{self, NameRules};
use crate::login::gate::PathRules;
use crate::login::success::SuccessRules;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::session::{Sessions, cookie};
use crate::store::AnyStore;
use crate::web::pages::Brand;

pub struct Core {
    pub config: Config,
    pub store: Arc<AnyStore>,
    pub sealer: Sealer,
    pub clock: SharedClock,
    pub sessions: Sessions,
    pub brand: Brand,
    pub metrics: Arc<Metrics>,
    pub rules: PathRules,
    /// What a successful login looks like (see [`crate::login::success`]).
    pub success_rules: SuccessRules,
    pub identity_header: HeaderName,
    pub mailer: Arc<Mailer>,
    /// App cookie values already hashed under the current key: every authenticated request
    /// checks its binding, and an HMAC per request was 4% of the proxy's CPU. Keyed by a
    /// 128-bit SipHash of the value under two secret per-process keys, so an attacker's values
    /// cost 16 bytes each (never their size) and cannot be made to collide with another's.
    app_cookie_hashes: Mutex<HashMap<u128, Arc<str>, BuildHasherDefault<KeyedHash>>>,
    /// Requests this process is forwarding, counted by the binding of the app session they
    /// carry: a login on that app session waits for them (see [`Core::app_session_quiet`]).
    in_flight: Mutex<HashMap<Arc<str>, usize>>,
    cache_keys: (RandomState, RandomState),
}

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

/// A request counted by [`Core::enter_app_session`].
pub struct InFlight<'a> {
    core: &'a Core,
    binding: Arc<str>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.core.in_flight.lock()
            && let Some(n) = counts.get_mut(&self.binding)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.binding);
            }
        }
    }
}

/// The purpose under which app cookie values are hashed into session bindings.
const APP_COOKIE: &str = "app-cookie";

/// Bound on remembered app cookie hashes; the map starts over when full.
const APP_COOKIE_HASHES: usize = 16_384;

impl Core {
    pub fn new(
        config: Config,
        store: Arc<AnyStore>,
        sealer: Sealer,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let identity_header = HeaderName::try_from(config.app.identity_header.as_str())
            .map_err(|_| anyhow::anyhow!("app.identity_header is not a header name"))?;
        let sessions = Sessions::new(store.clone(), clock.clone(), &config.session);
        let brand = Brand {
            app_name: config.app.name.clone(),
            assets: format!("{}/assets", config.twofactor.prefix),
        };
        let rules = PathRules::new(
            config.twofactor.prefix.clone(),
            config.app.login_paths.clone(),
            config.app.logout_paths.clone(),
            config.app.public_paths.clone(),
            config.app.login_page.clone(),
        );
        let success_rules = SuccessRules {
            statuses: config.app.success_status.clone(),
            cookie: config.app.success_cookie.clone(),
            user_header: config.app.user_header.clone(),
            locations: config.app.success_location.clone(),
        };
        let mailer = Arc::new(Mailer::from_config(&config.email)?);
        Ok(Self {
            config,
            store,
            sealer,
            clock,
            sessions,
            brand,
            metrics,
            rules,
            success_rules,
            identity_header,
            mailer,
            app_cookie_hashes: Mutex::new(HashMap::default()),
            cache_keys: (RandomState::new(), RandomState::new()),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// The binding of a session to the app's session cookie (a keyed hash of its value).
    pub fn app_cookie_hash(&self, value: &str) -> Arc<str> {
        let (a, b) = &self.cache_keys;
        let key = (u128::from(a.hash_one(value)) << 64) | u128::from(b.hash_one(value));
        if let Ok(known) = self.app_cookie_hashes.lock()
            && let Some(hash) = known.get(&key)
        {
            return hash.clone();
        }
        let hash: Arc<str> = self.sealer.hash_code(APP_COOKIE, value).into();
        if let Ok(mut known) = self.app_cookie_hashes.lock() {
            if known.len() >= APP_COOKIE_HASHES {
                known.clear();
            }
            known.insert(key, hash.clone());
        }
        hash
    }

    /// Counts a request forwarded on the app session `binding` until the guard drops.
    pub fn enter_app_session(&self, binding: Arc<str>) -> InFlight<'_> {
        if let Ok(mut counts) = self.in_flight.lock() {
            *counts.entry(binding.clone()).or_insert(0) += 1;
        }
        InFlight {
            core: self,
            binding,
        }
    }

    /// Waits (up to `within`) until this process forwards no request on the app session
    /// `binding`; false if some are still under way. An app that keeps its session id across
    /// logins and reads its session only after a request's body (PHP behind a buffering
    /// server, Django's lazy sessions) would otherwise serve a request that passed the gate
    /// before a login as the newly logged-in user.
    pub async fn app_session_quiet(&self, binding: &str, within: std::time::Duration) -> bool {
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
    pub fn app_cookie_hashes(&self, value: &str) -> Vec<String> {
        self.sealer.hash_candidates(APP_COOKIE, value)
    }

    /// Whether a session vouches for this app cookie value: its binding, or the one before the
    /// app's last rotation, under the current or a previous key. A session without a binding
    /// vouches for none: it never saw an app session issued at its own login.
    pub fn vouches_for(&self, record: &crate::store::SessionRecord, value: &str) -> bool {
        let Some(bound) = &record.app_cookie else {
            return false;
        };
        if value.len() > cookie::MAX_COOKIE_BYTES {
            return false;
        }
        let accepted = |h: &str| h == bound || record.app_cookie_prev.as_deref() == Some(h);
        // The current key first (every request pays this); older keys only on a mismatch.
        accepted(&self.app_cookie_hash(value))
            || self
                .sealer
                .hash_candidates(APP_COOKIE, value)
                .iter()
                .any(|h| accepted(h))
    }

    /// The binding for the app session a held-back login hands over.
    pub fn app_cookie_of(&self, held: &crate::login::held::HeldAnswer) -> Option<String> {
        held.cookie_value(&self.config.app.success_cookie)
            .map(|v| self.app_cookie_hash(&v).to_string())
    }

    /// Whose session `id` is, for the audit log.
    pub async fn store_session_user(&self, id: &str) -> crate::store::StoreResult<Option<String>> {
        use crate::store::Store as _;
        Ok(self.store.session(id).await?.map(|s| s.user))
    }

    pub fn prefix(&self) -> &str {
        &self.config.twofactor.prefix
    }

    /// The account name as it keys everything (see [`crate::login::account`]): `None` when the
    /// name cannot key an account safely.
    pub fn canonical_user(&self, raw: &str) -> Option<String> {
        let rules = NameRules {
            case_sensitive: self.config.app.username_case_sensitive,
            unicode: self.config.app.username_unicode,
        };
        account::canonical(raw, rules).ok()
    }

    /// The client a request comes from: the peer, or, when the peer is a trusted proxy, the
    /// nearest address in `X-Forwarded-For` that is not one (a client can prepend anything).
    pub fn client_addr(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let trusted = |ip: &IpAddr| {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
                v4 => *v4,
            };
            self.config
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&ip))
        };
        if !trusted(&peer) {
            return peer;
        }
        let chain: Vec<Option<IpAddr>> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(|a| a.trim().parse().ok())
            .collect();
        for hop in chain.iter().rev() {
            match hop {
                Some(ip) if trusted(ip) => {}
                Some(ip) => return *ip,
                // An entry that is no address: nothing to its left can be believed.
                None => break,
            }
        }
        peer
    }

    /// Readies headers for the upstream: the proxy's cookies and every client copy of the
    /// identity header (any case, `_` or `-`) removed, then the verified identity set.
    pub fn prepare_upstream_headers(&self, headers: &mut HeaderMap, identity: Option<&str>) {
        cookie::strip_ours(headers, &self.sessions.names);
        // HeaderName is already lower case; only `_` versus `-` is left to fold. Checked
        // without allocating: this runs on every forwarded request.
        let wanted = self.identity_header.as_str();
        let is_variant = |name: &HeaderName| crate::upstream::same_name(name.as_str(), wanted);
        if headers.keys().any(is_variant) {
            let doomed: Vec<HeaderName> =
                headers.keys().filter(|k| is_variant(k)).cloned().collect();
            for name in doomed {
                headers.remove(name);
            }
        }
        if let Some(user) = identity
            && let Ok(v) = HeaderValue::from_str(user)
        {
            headers.insert(self.identity_header.clone(), v);
        }
    }
}
