//! The 2FA rules, with no HTTP in their signatures. Each function takes the shared [`Core`]
//! (store, clock, sealer, policy), does one step of the product and returns an outcome enum;
//! [`crate::web`] turns outcomes into pages and JSON, and [`crate::login`] calls
//! [`sign_in::after_password`] once the app accepted a password.
//!
//! - [`verify`]: one factor checked for a user (TOTP step claimed once, email code, recovery
//!   code), under [`lockout`].
//! - [`challenge`]: the held-back login's challenge: attempt, resend, cancel, finish.
//! - [`enrollment`]: turning a method on, changing it, new recovery codes, turning 2FA off;
//!   every change is a privilege change.
//! - [`email`] (codes and their budgets), [`notices`] (security emails), [`totp`],
//!   [`recovery`], [`reset`] (the administrator's reset).
//!
//! [`Core`]: crate::state::Core

pub mod challenge;
pub mod email;
pub mod enrollment;
pub mod lockout;
pub mod notices;
pub mod recovery;
pub mod reset;
pub mod sign_in;
pub mod totp;
pub mod verify;

#[cfg(test)]
pub(crate) mod testing;

use serde::{Deserialize, Serialize};

/// A second factor a user can have: what operators offer (`[twofactor] methods`), what a 2FA
/// record holds, and how the product names it in metrics, audit events and the JSON API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecondFactor {
    /// RFC 6238 codes from an authenticator app.
    Totp,
    /// Codes mailed to a proven address.
    Email,
}

impl SecondFactor {
    /// Every factor, in the order the product offers them (the recommended one first).
    pub const ALL: [SecondFactor; 2] = [SecondFactor::Totp, SecondFactor::Email];

    /// The factor's name in config, metrics, audit events and the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::Email => "email",
        }
    }

    /// The factor a config or API name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for f in SecondFactor::ALL {
            assert_eq!(SecondFactor::from_name(f.as_str()), Some(f));
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
        }
        assert_eq!(SecondFactor::from_name("TOTP"), None);
        assert_eq!(SecondFactor::from_name("sms"), None);
    }
}
