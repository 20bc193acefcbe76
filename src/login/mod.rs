//! The login side of the proxy: the gate every request passes, and the interception of the
//! app's own password login.

pub mod account;
pub mod credentials;
pub mod gate;
pub mod held;
pub mod intercept;
pub mod media;
pub mod success;
