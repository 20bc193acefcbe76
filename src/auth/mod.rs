//! The 2FA rules, with no HTTP in their signatures: proving a factor (TOTP, email codes,
//! recovery codes) under the lockout rules, the challenge of a held-back login, enrollment and
//! every change to a user's 2FA, notices, and the admin reset. [`crate::web`] translates their
//! outcomes into pages and JSON.

pub mod email;
pub mod recovery;
pub mod totp;
pub mod verify;
