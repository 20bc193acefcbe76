//! Time, injected: everything that expires or counts steps asks a [`Clock`], so tests move a
//! manual clock instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u64;
}

pub type SharedClock = Arc<dyn Clock>;

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        // A clock before 1970 is a broken host; treating it as 0 keeps us answering.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that only moves when told to.
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(start)))
    }

    /// Starts at the real current time, so codes from other TOTP implementations still match.
    pub fn at_now() -> Arc<Self> {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
