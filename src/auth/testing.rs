//! A [`Core`] for the rules' unit tests: the in-memory store, a manual clock and the `log`
//! mailer, whose outbox the tests read codes from.

use std::sync::Arc;

use crate::auth::{enrollment, totp};
use crate::clock::ManualClock;
use crate::config::Config;
use crate::login::held::HeldAnswer;
use crate::mail::Mail;
use crate::metrics::Metrics;
use crate::records::AnyRecords;
use crate::records::sqlite::SqliteRecords;
use crate::secrets::Sealer;
use crate::session::Current;
use crate::state::Core;
use crate::store::memory::MemoryStore;
use crate::store::{AnyStore, PendingLogin, Store};
use crate::words::Language;

/// The language the rules' tests send their mails in.
pub const EN: Language = Language::English;

/// A start well inside one 30 s TOTP step, so a test's codes do not straddle two.
const START: u64 = 1_800_000_000;

pub struct Fixture {
    pub core: Core,
    pub clock: Arc<ManualClock>,
}

impl Fixture {
    /// The default config with `TWOFA_...` overrides.
    pub fn new(overrides: &[(&str, &str)]) -> Self {
        let mut env = vec![
            (
                "TWOFA_UPSTREAM__URL".to_owned(),
                "http://127.0.0.1:9".to_owned(),
            ),
            ("TWOFA_EMAIL__TRANSPORT".to_owned(), "log".to_owned()),
        ];
        env.extend(overrides.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let config = Config::from_toml("", env).unwrap_or_else(|e| panic!("test config: {e}"));
        let clock = ManualClock::new(START);
        let store = Arc::new(AnyStore::Memory(Box::new(MemoryStore::new(clock.clone()))));
        let records = SqliteRecords::open_here(std::path::Path::new(":memory:"))
            .unwrap_or_else(|e| panic!("test records: {e}"));
        let core = Core::new(
            config,
            store,
            Arc::new(AnyRecords::checked(records)),
            Sealer::random(),
            clock.clone(),
            Arc::new(Metrics::new()),
        )
        .unwrap_or_else(|e| panic!("test core: {e}"));
        Self { core, clock }
    }

    pub async fn session(&self, user: &str) -> Current {
        self.core
            .sessions
            .create(user, false, None, None, None)
            .await
            .unwrap()
    }

    /// Enrolls `user` with a new authenticator key; returns the key and the recovery codes.
    pub async fn enroll_totp(&self, user: &str) -> (Vec<u8>, Vec<String>) {
        let session = self.session(user).await;
        let secret = enrollment::enrollment_secret(&self.core, user)
            .await
            .unwrap();
        let code = totp::code_at(&secret, self.clock_now());
        match enrollment::enable_totp(&self.core, &session, &code, "", EN)
            .await
            .unwrap()
        {
            enrollment::Enabled::Done { codes, .. } => (secret, codes),
            _ => panic!("enrolling {user} failed"),
        }
    }

    /// A login the app accepted for `user`, held back as at sign-in.
    pub async fn held_login(&self, user: &str) -> String {
        let answer = HeldAnswer::new(
            http::StatusCode::FOUND,
            &http::HeaderMap::new(),
            &bytes::Bytes::new(),
        );
        let id = crate::secrets::random_token();
        let pending = PendingLogin {
            user: user.to_owned(),
            created: self.clock_now(),
            held: answer.seal(&self.core.sealer, user),
            csrf: crate::secrets::random_token(),
            json: false,
            email: None,
            client: Some("127.0.0.1".to_owned()),
        };
        let ttl = self.core.config.twofactor.challenge_ttl;
        self.core
            .store
            .hold_login(&id, &pending, ttl)
            .await
            .unwrap();
        id
    }

    pub fn clock_now(&self) -> u64 {
        crate::clock::Clock::now(&*self.clock)
    }

    /// The mails sent so far, newest first.
    pub fn mails(&self) -> Vec<Mail> {
        self.core
            .mailer
            .outbox()
            .map(|o| o.mails())
            .unwrap_or_default()
    }

    /// The code in the newest code mail (a run of digits of the configured length). Notices
    /// go out in the background and may land after it, so they are passed over.
    pub fn last_code(&self) -> String {
        let digits = usize::from(self.core.config.email.code_digits);
        self.mails()
            .iter()
            .filter(|m| m.kind != crate::mail::MailKind::Notice)
            .find_map(|m| {
                m.text
                    .split(|c: char| !c.is_ascii_digit())
                    .find(|w| w.len() == digits)
                    .map(str::to_owned)
            })
            .expect("a code mail was sent")
    }
}
