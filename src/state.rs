//! The state every worker shares: config, store, sealer, clock, sessions. Built once in
//! `app::start`; handlers borrow it.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::login::account::{self, NameRules};
use crate::login::gate::PathRules;
use crate::login::success::SuccessRules;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::session::binding::AppBindings;
use crate::session::{Sessions, cookie};
use crate::store::AnyStore;
use crate::web::pages::Brand;

pub struct Core {
    pub config: Config,
    pub store: Arc<AnyStore>,
    pub sealer: Arc<Sealer>,
    pub clock: SharedClock,
    pub sessions: Sessions,
    pub brand: Brand,
    pub metrics: Arc<Metrics>,
    pub rules: PathRules,
    /// What a successful login looks like (see [`crate::login::success`]).
    pub success_rules: SuccessRules,
    pub identity_header: HeaderName,
    pub mailer: Arc<Mailer>,
    /// Which app session each proxy session vouches for.
    pub bindings: AppBindings,
}

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
        let sealer = Arc::new(sealer);
        let bindings = AppBindings::new(sealer.clone(), config.app.success_cookie.clone());
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
            bindings,
        })
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
