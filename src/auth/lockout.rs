//! The brute-force rules of one account: failed codes are counted per account in the store
//! (shared by replicas, surviving restarts); `lockout_threshold` failures within
//! `lockout_window` lock it for `lockout_duration`, and never more than 100 failures in a row
//! are allowed whatever the window (NIST SP 800-63B 5.2.2). Every check first takes a
//! [`Reservation`], so parallel guesses cannot all pass the threshold together.

use std::time::Duration;

use crate::auth::notices;
use crate::auth::verify::Outcome;
use crate::mail::Notice;
use crate::state::Core;
use crate::store::{Reserved, Store, StoreResult};

/// The consecutive-failure counter's bucket: it only ever resets on a success or an
/// administrator's reset.
const CONSECUTIVE: u64 = u64::MAX;
/// NIST SP 800-63B 5.2.2: at most 100 consecutive failed attempts on one account.
const CONSECUTIVE_LIMIT: u32 = 100;
const CONSECUTIVE_TTL: Duration = Duration::from_secs(30 * 86_400);

/// An attempt counted before its code is checked; [`settle`] records how it went.
#[must_use]
pub struct Reservation {
    /// Failures in the current window, this attempt included.
    failures: u32,
}

fn bucket(core: &Core) -> u64 {
    core.clock.now() / core.config.twofactor.lockout_window.as_secs().max(1)
}

/// Seconds left on the user's lock, if locked now.
pub async fn locked_for(core: &Core, user: &str) -> StoreResult<Option<u64>> {
    let now = core.clock.now();
    Ok(core
        .store
        .locked_until(user)
        .await?
        .filter(|until| *until > now)
        .map(|until| until - now))
}

/// Counts an attempt before the code is checked. `Err(Locked)` if the account is locked or
/// this attempt is over a limit.
pub async fn reserve(core: &Core, user: &str) -> StoreResult<Result<Reservation, Outcome>> {
    let now = core.clock.now();
    let tf = &core.config.twofactor;
    // One round trip: a live lock refuses, an ended one starts the window over, else count.
    let (in_window, in_a_row) = match core
        .store
        .reserve_attempt(
            user,
            now,
            (bucket(core), tf.lockout_window),
            (CONSECUTIVE, CONSECUTIVE_TTL),
        )
        .await?
    {
        Reserved::Locked(until) => {
            return Ok(Err(Outcome::Locked {
                retry_after: until.saturating_sub(now),
            }));
        }
        Reserved::Counted {
            in_window,
            in_a_row,
        } => (in_window, in_a_row),
    };
    if in_window > tf.lockout_threshold || in_a_row > CONSECUTIVE_LIMIT {
        return Ok(Err(lock(core, user).await?));
    }
    Ok(Ok(Reservation {
        failures: in_window,
    }))
}

/// Records the result of a reserved attempt: a success clears the counts; a failure stays
/// counted and locks the account at the threshold.
pub async fn settle(
    core: &Core,
    user: &str,
    ok: bool,
    reservation: Reservation,
) -> StoreResult<Outcome> {
    let tf = &core.config.twofactor;
    if ok {
        core.store
            .clear_failures(user, &[bucket(core), CONSECUTIVE])
            .await?;
        return Ok(Outcome::Passed);
    }
    let failures = reservation.failures;
    tracing::info!(target: "audit", event = "second_factor_failed", user, failures);
    if failures >= tf.lockout_threshold {
        return lock(core, user).await;
    }
    Ok(Outcome::Failed {
        tries_left: tf.lockout_threshold - failures,
    })
}

async fn lock(core: &Core, user: &str) -> StoreResult<Outcome> {
    let tf = &core.config.twofactor;
    let now = core.clock.now();
    let until = now + tf.lockout_duration.as_secs();
    // Tell the user (and count it) once per lock, not for every refused guess; the window's
    // count is kept, so guesses already on their way are refused too.
    let already = locked_for(core, user).await?.is_some();
    // Kept past its end (until the window is over too), so the next attempt knows to start over.
    core.store
        .lock_account(user, until, tf.lockout_duration + tf.lockout_window)
        .await?;
    if !already {
        core.metrics.lockouts.inc();
        notices::notify_known(core, user, Notice::Locked).await?;
    }
    tracing::warn!(target: "audit", event = "account_locked", user, seconds = tf.lockout_duration.as_secs());
    Ok(Outcome::Locked {
        retry_after: until - now,
    })
}

/// Lifts the lock and clears the counts (the administrator's reset): past 100 failures in a
/// row nothing else clears them, and the window's count would lock again at the next slip.
pub async fn forgive(core: &Core, user: &str) -> StoreResult<()> {
    core.store.unlock_account(user).await?;
    core.store
        .clear_failures(user, &[bucket(core), CONSECUTIVE])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::Fixture;

    /// Threshold 3 in a 60 s window, locked for 120 s.
    fn fixture() -> Fixture {
        Fixture::new(&[
            ("TWOFA_TWOFACTOR__LOCKOUT_THRESHOLD", "3"),
            ("TWOFA_TWOFACTOR__LOCKOUT_WINDOW", "60s"),
            ("TWOFA_TWOFACTOR__LOCKOUT_DURATION", "120s"),
        ])
    }

    async fn fail(f: &Fixture, user: &str) -> Outcome {
        match reserve(&f.core, user).await.unwrap() {
            Ok(r) => settle(&f.core, user, false, r).await.unwrap(),
            Err(locked) => locked,
        }
    }

    async fn succeed(f: &Fixture, user: &str) -> Outcome {
        match reserve(&f.core, user).await.unwrap() {
            Ok(r) => settle(&f.core, user, true, r).await.unwrap(),
            Err(locked) => locked,
        }
    }

    #[tokio::test]
    async fn the_threshold_in_a_window_locks_for_the_duration_then_starts_over() {
        let f = fixture();
        assert_eq!(fail(&f, "ann").await, Outcome::Failed { tries_left: 2 });
        assert_eq!(fail(&f, "ann").await, Outcome::Failed { tries_left: 1 });
        assert_eq!(fail(&f, "ann").await, Outcome::Locked { retry_after: 120 });
        assert_eq!(f.core.metrics.lockouts.get(), 1);
        // Locked: even the right code is refused, and the lock is not extended by guesses.
        f.clock.advance(100);
        assert_eq!(
            succeed(&f, "ann").await,
            Outcome::Locked { retry_after: 20 }
        );
        assert_eq!(locked_for(&f.core, "ann").await.unwrap(), Some(20));
        assert_eq!(f.core.metrics.lockouts.get(), 1);
        // Another account is not affected.
        assert_eq!(succeed(&f, "bob").await, Outcome::Passed);
        f.clock.advance(20);
        assert_eq!(locked_for(&f.core, "ann").await.unwrap(), None);
        assert_eq!(fail(&f, "ann").await, Outcome::Failed { tries_left: 2 });
    }

    #[tokio::test]
    async fn failures_in_an_old_window_do_not_count_and_a_success_clears_the_window() {
        let f = fixture();
        fail(&f, "ann").await;
        fail(&f, "ann").await;
        f.clock.advance(60);
        assert_eq!(fail(&f, "ann").await, Outcome::Failed { tries_left: 2 });
        assert_eq!(succeed(&f, "ann").await, Outcome::Passed);
        assert_eq!(fail(&f, "ann").await, Outcome::Failed { tries_left: 2 });
    }

    /// NIST SP 800-63B 5.2.2: a guesser who stays under the window's threshold forever is still
    /// stopped after 100 failures in a row, and only a success or the admin's reset clears it.
    #[tokio::test]
    async fn one_hundred_failures_in_a_row_lock_whatever_the_window() {
        let f = fixture();
        let mut failures = 0;
        while failures < CONSECUTIVE_LIMIT {
            for _ in 0..2 {
                assert!(matches!(fail(&f, "ann").await, Outcome::Failed { .. }));
                failures += 1;
            }
            f.clock.advance(60);
        }
        assert_eq!(failures, CONSECUTIVE_LIMIT);
        assert!(matches!(fail(&f, "ann").await, Outcome::Locked { .. }));
        // The lock runs out, but the count in a row does not: the next attempt locks again.
        f.clock.advance(180);
        assert!(matches!(succeed(&f, "ann").await, Outcome::Locked { .. }));
        forgive(&f.core, "ann").await.unwrap();
        assert_eq!(succeed(&f, "ann").await, Outcome::Passed);
    }

    #[tokio::test]
    async fn a_success_clears_the_count_in_a_row() {
        let f = fixture();
        for _ in 0..60 {
            fail(&f, "ann").await;
            fail(&f, "ann").await;
            f.clock.advance(60);
        }
        // 120 failures, but the success after the first 60 windows starts the count over.
        assert!(matches!(fail(&f, "ann").await, Outcome::Locked { .. }));
        let g = fixture();
        for round in 0..60 {
            fail(&g, "ann").await;
            fail(&g, "ann").await;
            if round == 30 {
                assert_eq!(succeed(&g, "ann").await, Outcome::Passed);
            }
            g.clock.advance(60);
        }
        assert!(matches!(fail(&g, "ann").await, Outcome::Failed { .. }));
    }

    /// Parallel guesses each take a reservation first: no more than the threshold get a verdict
    /// of "wrong" before the lock, however many race.
    #[tokio::test]
    async fn parallel_guesses_cannot_pass_the_threshold_together() {
        let f = fixture();
        let reservations: Vec<_> =
            futures_util::future::join_all((0..10).map(|_| reserve(&f.core, "ann"))).await;
        let granted = reservations
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(_))))
            .count();
        assert_eq!(granted, 3);
    }
}
