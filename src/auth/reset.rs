//! The administrator's reset (a lost phone): the user's 2FA record, recovery codes, enrollment
//! in progress, lock and every session go; the next login is like a first one.

use crate::auth::{lockout, notices};
use crate::mail::Notice;
use crate::records::Records;
use crate::state::Core;
use crate::store::{Store, StoreResult};

/// What a reset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// The user had 2FA on (else only the lock and sessions were cleared).
    pub had_2fa: bool,
    pub sessions_ended: u32,
}

/// Resets `user` (a canonical account name); audited, and the user is told where an address is
/// known.
pub async fn reset(core: &Core, user: &str) -> StoreResult<Reset> {
    let to = notices::recipient(core, user).await?;
    let had_2fa = core.records.remove_two_factor(user).await?;
    if had_2fa {
        notices::notify(core, user, to, Notice::ResetByAdmin);
    }
    core.store.delete_enrollment(user).await?;
    lockout::forgive(core, user).await?;
    let sessions_ended = core.sessions.end_others(user, None).await?;
    tracing::warn!(target: "audit", event = "second_factor_reset", user, by = "admin", had_2fa, sessions_ended);
    if had_2fa {
        core.metrics.enrollment("reset", "any");
    }
    Ok(Reset {
        had_2fa,
        sessions_ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::Fixture;
    use crate::auth::verify::Outcome;
    use crate::mail::MailKind;

    #[tokio::test]
    async fn a_reset_clears_the_factor_codes_lock_and_sessions_and_tells_the_user() {
        let f = Fixture::new(&[
            ("TWOFA_TWOFACTOR__LOCKOUT_THRESHOLD", "2"),
            ("TWOFA_EMAIL__ADDRESS_SOURCE", "username"),
        ]);
        let user = "ann@example.com";
        f.enroll_totp(user).await;
        let ann = f.session(user).await;
        let bob = f.session("bob").await;
        for _ in 0..2 {
            crate::auth::verify::verify_recovery(&f.core, user, "not-a-code")
                .await
                .unwrap();
        }
        assert!(lockout::locked_for(&f.core, user).await.unwrap().is_some());

        let done = reset(&f.core, user).await.unwrap();
        // The enrollment's fresh session and the one started after it.
        assert_eq!(
            done,
            Reset {
                had_2fa: true,
                sessions_ended: 2
            }
        );
        assert!(f.core.records.two_factor(user).await.unwrap().is_none());
        assert_eq!(f.core.records.recovery_codes_left(user).await.unwrap(), 0);
        assert_eq!(lockout::locked_for(&f.core, user).await.unwrap(), None);
        assert_eq!(
            crate::auth::verify::verify_recovery(&f.core, user, "not-a-code")
                .await
                .unwrap(),
            Outcome::Failed { tries_left: 1 }
        );
        assert!(f.core.store.session(&ann.id).await.unwrap().is_none());
        // Another user's session is untouched.
        assert!(f.core.store.session(&bob.id).await.unwrap().is_some());
        // The notice is sent in the background.
        let mut told = false;
        for _ in 0..100 {
            told = f
                .mails()
                .iter()
                .any(|m| m.kind == MailKind::Notice && m.to == user);
            if told {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(told, "no reset notice was mailed");

        // A second reset finds nothing to remove and sends nothing more.
        let again = reset(&f.core, user).await.unwrap();
        assert!(!again.had_2fa);
    }
}
