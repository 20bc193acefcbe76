//! The administrator's reset (a lost phone): the user's 2FA record, recovery codes, enrollment
//! in progress, lock and every session go; the next login is like a first one.

use crate::auth::{lockout, notices};
use crate::mail::Notice;
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
    let address = notices::known_address(core, user).await?;
    let had_2fa = core.store.remove_two_factor(user).await?;
    if had_2fa {
        notices::notify(core, user, address, Notice::ResetByAdmin);
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
