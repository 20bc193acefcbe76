//! The state every worker shares: config, store, sealer, clock, sessions. Built once in
//! `app::start`; handlers borrow it.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::login::account::{self, NameRules};
use crate::login::gate::PathRules;
use crate::login::success::SuccessRules;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::records::AnyRecords;
use crate::secrets::Sealer;
use crate::session::Sessions;
use crate::session::binding::AppBindings;
use crate::store::AnyStore;
use crate::web::pages::Brand;
use crate::words::Words;

pub struct Core {
    pub config: Config,
    pub store: Arc<AnyStore>,
    /// The durable 2FA records.
    pub records: Arc<AnyRecords>,
    pub sealer: Arc<Sealer>,
    pub clock: SharedClock,
    pub sessions: Sessions,
    pub brand: Brand,
    pub metrics: Arc<Metrics>,
    pub rules: PathRules,
    /// What a successful login looks like (see [`crate::login::success`]).
    pub success_rules: SuccessRules,
    pub mailer: Arc<Mailer>,
    /// Which app session each proxy session vouches for.
    pub bindings: AppBindings,
}

impl Core {
    pub fn new(
        config: Config,
        store: Arc<AnyStore>,
        records: Arc<AnyRecords>,
        sealer: Sealer,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
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
            records,
            sealer,
            clock,
            sessions,
            brand,
            metrics,
            rules,
            success_rules,
            mailer,
            bindings,
        })
    }

    /// Whose session `id` is, for the audit log.
    pub async fn store_session_user(&self, id: &str) -> crate::store::StoreResult<Option<String>> {
        use crate::store::Store as _;
        Ok(self.store.session(id).await?.map(|s| s.user))
    }

    /// The words for a request: `[ui] language`, then its `Accept-Language`.
    pub fn words(&self, headers: &http::HeaderMap) -> &'static Words {
        self.config.ui.language.for_request(headers).words()
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
}
