//! A bounded load on a proxy while something breaks behind it: clients signing in with the
//! password of an enrolled user and browsing with a verified session, for a fixed time. Every
//! answer is classed; anything but the challenge, the app's page or a clean 503 is wrong.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use twofa_proxy::clock::ManualClock;

use super::agent::Agent;
use super::site::{answer_totp_challenge, enroll_totp_over_api, password_login};

/// What the clients saw.
#[derive(Default, Debug)]
pub struct Tally {
    pub challenged: u64,
    pub browsed: u64,
    pub refused_503: u64,
    /// A sign-in that skipped the challenge, a page that was not the app's, another status.
    pub wrong: Vec<String>,
    /// When the last 503 of each kind came, and when each answer of each kind was served.
    last_signin_503: Option<Instant>,
    last_browse_503: Option<Instant>,
    challenged_at: Vec<Instant>,
    browsed_at: Vec<Instant>,
}

impl Tally {
    /// When both kinds were served again after their last 503: the first challenge after the
    /// last refused sign-in, and (if browsing was refused too) the first page after the last
    /// refused one. None if the outage was not seen, or either kind never came back.
    pub fn back_at(&self) -> Option<Instant> {
        let after = |last: Option<Instant>, served: &[Instant]| match last {
            None => Some(None),
            Some(last) => served.iter().copied().find(|at| *at > last).map(Some),
        };
        self.last_signin_503.or(self.last_browse_503)?;
        let signin = after(self.last_signin_503, &self.challenged_at)?;
        let browse = after(self.last_browse_503, &self.browsed_at)?;
        signin.max(browse)
    }

    /// Fails on anything wrong and when the outage was not seen or never ended.
    pub fn assert_fail_closed(&self) {
        assert!(
            self.wrong.is_empty(),
            "{:?}",
            &self.wrong[..self.wrong.len().min(10)]
        );
        assert!(self.refused_503 > 0, "the outage was not seen: {self:?}");
        assert!(self.challenged > 0 && self.browsed > 0, "{self:?}");
        assert!(self.back_at().is_some(), "nothing served after the outage");
    }
}

/// Enrolls alice (an authenticator app) on the proxy at `addr` and returns a browser signed in
/// with her second factor: the browsing side of [`run`].
pub async fn enrolled_browser(addr: SocketAddr, clock: &ManualClock) -> Agent {
    let mut alice = Agent::new(addr);
    password_login(&mut alice, "alice", "wonderland").await;
    let secret = enroll_totp_over_api(&mut alice, clock).await;
    clock.advance(30);
    let mut browser = Agent::new(addr);
    let res = password_login(&mut browser, "alice", "wonderland").await;
    let passed = answer_totp_challenge(&mut browser, &res, &secret, clock).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    browser
}

/// Runs 4 sign-in and 4 browsing clients against `addr` for `length` while `disrupt` runs.
/// `cookies` are a signed-in browser's. The manual clock moves on 10 s every 100 ms so the cap
/// on held-back sign-ins per window (start the proxy with `challenge_ttl = "10s"` and
/// `max_pending_logins = 100`) is never what answers.
pub async fn run<F: std::future::Future<Output = ()>>(
    addr: SocketAddr,
    cookies: std::collections::BTreeMap<String, String>,
    clock: Arc<ManualClock>,
    length: Duration,
    disrupt: F,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let end = Instant::now() + length;
    let ticker = tokio::spawn(async move {
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            clock.advance(10);
        }
    });
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (tally, cookies) = (tally.clone(), cookies.clone());
            tokio::spawn(async move {
                for _ in 0..10_000 {
                    if Instant::now() > end {
                        break;
                    }
                    if i % 2 == 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        let mut fresh = Agent::new(addr);
                        let res = password_login(&mut fresh, "alice", "wonderland").await;
                        let mut t = tally.lock().unwrap();
                        match (res.status.as_u16(), res.header("location")) {
                            (303, Some("/_2fa/challenge")) => {
                                t.challenged += 1;
                                t.challenged_at.push(Instant::now());
                            }
                            (503, _) => {
                                t.refused_503 += 1;
                                t.last_signin_503 = Some(Instant::now());
                            }
                            (s, l) => t.wrong.push(format!("sign-in: {s} {l:?}")),
                        }
                    } else {
                        let mut signed_in = Agent::new(addr);
                        signed_in.cookies = cookies.clone();
                        let res = signed_in.get("/").await;
                        let mut t = tally.lock().unwrap();
                        match res.status.as_u16() {
                            200 => {
                                t.browsed += 1;
                                t.browsed_at.push(Instant::now());
                            }
                            503 => {
                                t.refused_503 += 1;
                                t.last_browse_503 = Some(Instant::now());
                            }
                            s => t.wrong.push(format!("browse: {s}")),
                        }
                    }
                }
            })
        })
        .collect();
    disrupt.await;
    for c in clients {
        c.await.unwrap();
    }
    ticker.await.unwrap();
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

/// The overrides that keep the cap on held-back sign-ins out of the way (see [`run`]).
pub const WINDOWS: [(&str, &str); 2] = [
    ("TWOFA_TWOFACTOR__CHALLENGE_TTL", "10s"),
    ("TWOFA_TWOFACTOR__MAX_PENDING_LOGINS", "100"),
];
