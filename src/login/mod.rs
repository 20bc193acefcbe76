//! The login side of the proxy: the gate every request passes, and the interception of the
//! app's own password login.

pub mod gate;
pub mod intercept;
pub mod parked;
