//! Proving the second factor: TOTP codes, recovery codes, and the counters that stop guessing.

pub mod email;
pub mod flow;
pub mod recovery;
pub mod totp;
pub mod verify;
