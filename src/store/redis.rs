//! The shared store: Redis (or Valkey) standalone, behind Sentinel, or a Cluster
//! (`store/connection.rs` says how each is reached), so replicas see one set of
//! sessions, pending logins and counters. Every key starts with `[store] key_prefix`;
//! everything that expires carries a TTL. Records are JSON.
//!
//! Keys (`P` is the prefix, `H(x)` the unpadded base64url SHA-256 of a bearer id):
//! `Ps:H(id)` session, `Pus:user` set of the user's `H(id)`s, `Pab:hash` set of the `H(id)`s
//! bound to an app session, `Pp:H(id)` pending login, `Ppa:H(id)` its attempt count,
//! `Pe:user` enrollment, `Pec:H(key)` emailed code, `Pt:user` last TOTP step,
//! `Pf:user:bucket` failure count, `Pls:user:bucket` and `Pes:user:bucket` sign-in and email
//! counts, `Pl:user` lock end, `Precords-id` the records' identity and `Ptotp-floor` the TOTP
//! step up to which codes are refused since it was learned (both no TTL). Proxies before
//! [`crate::records`] kept `Pu:user` 2FA records and `Prc:user` recovery-code sets here: they
//! are imported into the records once, and left in place.
//!
//! On a Cluster the prefix becomes a hash tag, `{P}` (`twofa:` → `{twofa:}s:H(id)`): every key
//! of the deployment lives in one slot, so the scripts and MULTIs that touch several keys
//! (a session and its user's set, the end-all-sessions transactions, a pending login and its
//! count) run as on one server, with the same atomicity, instead of failing with CROSSSLOT.
//! Per-key slots cannot keep `PUT_SESSION` atomic: a session is looked up by its id alone, so
//! its key cannot carry the user's tag. The Cluster then gives failover, not sharding; the
//! store's working set (sessions, logins in flight, counters) is small. Standalone and Sentinel
//! keep the untagged names, so an existing deployment's keys still read.
//!
//! Session and pending-login ids are hashed before they become key names: key names show up in
//! `MONITOR`, `SLOWLOG`, keyspace notifications and dumps, and the raw id is the credential.

use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::{RedisError, Script};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::connection::{self, Conn};
use super::{
    EmailCode, Enrollment, LegacyRecord, PendingLogin, Reserved, SessionRecord, StepClaim, Store,
    StoreError, StoreResult,
};
use crate::config::{RedisMode, StoreBackend, StoreConfig};

/// Redis refuses expiries that overflow its clock; nothing here needs more than centuries.
const MAX_TTL_MS: u64 = 1 << 50;

/// Adds the session to the user's set and stretches the set's TTL to cover it (never shortens
/// it: another session of the user may live longer). No `PEXPIRE GT`: that needs Redis 7.
/// With a third key, also binds it to an app session (that set lives at least `ARGV[4]` ms):
/// a new sign-in's session in one round trip.
const PUT_SESSION: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if KEYS[3] then
  redis.call('SADD', KEYS[3], ARGV[3])
  if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
  end
end
return 1
";

/// Adds a member to a set that lives at least `ARGV[2]` ms.
const ADD_TO_SET: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// A counter that expires `ARGV[1]` ms after its first count.
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

/// Compare-and-set of the last TOTP step (KEYS[1]). Steps are compared as decimal strings
/// (length first) so u64 values beyond Lua's 2^53 doubles still compare exactly. No records
/// identity (KEYS[2]): the store was emptied since it learned it, and has forgotten which steps
/// were used: -1, refused until the identity is learned again. Steps up to the floor (KEYS[3]):
/// 2. A step used already: 0. Claimed: 1.
const CLAIM_STEP: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
local step = ARGV[1]
local function at_most(a, b)
  return #a < #b or (#a == #b and a <= b)
end
local floor = redis.call('GET', KEYS[3])
if floor and at_most(step, floor) then
  return 2
end
local last = redis.call('GET', KEYS[1])
if last and at_most(step, last) then
  return 0
end
redis.call('SET', KEYS[1], step, 'PX', ARGV[2])
return 1
";

/// The records identity (KEYS[1]) and the step floor (KEYS[2]), which only ever rises.
const REMEMBER_RECORDS: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
local floor = redis.call('GET', KEYS[2])
local new = ARGV[2]
if not floor or #floor < #new or (#floor == #new and floor < new) then
  redis.call('SET', KEYS[2], new)
end
return 1
";

/// The lockout rules' first step in one round trip (see `Store::reserve_attempt`): a live lock
/// answers `{1, until}` and counts nothing; an ended lock is lifted and the window's counter
/// starts over; then both counters count, each expiring `ARGV[i]` ms after its first count.
/// KEYS: lock, window counter, in-a-row counter. ARGV: now, their two TTLs. A lock that is not
/// plain digits is answered as a lock (the caller refuses it as corrupt), never lifted.
const RESERVE_ATTEMPT: &str = r"
local untl = redis.call('GET', KEYS[1])
if untl then
  if not string.match(untl, '^%d+$') or tonumber(untl) > tonumber(ARGV[1]) then
    return {1, untl}
  end
  redis.call('DEL', KEYS[1], KEYS[2])
end
local counts = {0}
for i = 2, 3 do
  counts[i] = redis.call('INCR', KEYS[i])
  if redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[i])
  end
end
return counts
";

/// Counts a sign-in of the user in its bucket (KEYS[1], expiring with the login) and holds it
/// back (KEYS[2]) only within the cap `ARGV[3]`: 1 held, 0 over the cap.
const HOLD_CAPPED: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if n > tonumber(ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
";

pub struct RedisStore {
    conn: Conn,
    /// `[store] key_prefix`, as a hash tag on a Cluster (see the module's doc).
    prefix: String,
    /// A Cluster: `SCAN` sees one node only, and no proxy before this one ran on a Cluster.
    cluster: bool,
    put_session: Script,
    add_to_set: Script,
    count: Script,
    claim_step: Script,
    reserve_attempt: Script,
    hold_capped: Script,
    remember_records: Script,
}

impl RedisStore {
    /// One standalone server at `url` (tests and benches).
    pub async fn connect(url: &str, prefix: &str) -> StoreResult<Self> {
        Self::open(&StoreConfig {
            backend: StoreBackend::Redis,
            url: url.to_owned(),
            key_prefix: prefix.to_owned(),
            mode: RedisMode::Standalone,
            username: None,
            password: None,
            tls: url.starts_with("rediss://"),
            ca_file: None,
        })
        .await
    }

    /// Connects as `[store]` says, once, to check addresses and credentials; later outages are
    /// retried per command.
    pub async fn open(config: &StoreConfig) -> StoreResult<Self> {
        let certs = config
            .ca_file
            .as_deref()
            .map(connection::read_ca_file)
            .transpose()?;
        // The URL and the errors about it may carry a password: report the error's kind only.
        let conn = Conn::open(config, certs)
            .await
            .map_err(|e| failure("connect", &e))?;
        let cluster = matches!(config.mode, RedisMode::Cluster { .. });
        Ok(Self {
            conn,
            prefix: if cluster {
                cluster_prefix(&config.key_prefix)
            } else {
                config.key_prefix.clone()
            },
            cluster,
            put_session: Script::new(PUT_SESSION),
            add_to_set: Script::new(ADD_TO_SET),
            count: Script::new(COUNT),
            claim_step: Script::new(CLAIM_STEP),
            reserve_attempt: Script::new(RESERVE_ATTEMPT),
            hold_capped: Script::new(HOLD_CAPPED),
            remember_records: Script::new(REMEMBER_RECORDS),
        })
    }

    /// A handle for one call; clones share the one multiplexed connection (per node).
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    fn failures_key(&self, user: &str, bucket: u64) -> String {
        format!("{}f:{user}:{bucket}", self.prefix)
    }

    async fn get(&self, key: &str, op: &'static str) -> StoreResult<Option<Vec<u8>>> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| failure(op, &e))
    }

    async fn set_px(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        op: &'static str,
    ) -> StoreResult<()> {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .exec_async(&mut self.conn())
            .await
            .map_err(|e| failure(op, &e))
    }

    async fn del(&self, key: &str, op: &'static str) -> StoreResult<()> {
        redis::cmd("DEL")
            .arg(key)
            .exec_async(&mut self.conn())
            .await
            .map_err(|e| failure(op, &e))
    }

    async fn count(&self, key: &str, ttl: Duration, op: &'static str) -> StoreResult<u32> {
        let n: i64 = self
            .count
            .key(key)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure(op, &e))?;
        // A count that does not fit (or went negative by hand) fails closed: treat as too many.
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// `P` → `{P}`: one hash tag for every key. Braces inside the prefix would end the tag early
/// (or leave it empty, which Redis reads as no tag), so they are dropped from it.
fn cluster_prefix(prefix: &str) -> String {
    let tag: String = prefix.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    let tag = if tag.is_empty() { "twofa" } else { &tag };
    format!("{{{tag}}}")
}

/// The name under which a bearer id (session, pending login) is stored.
fn token(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, id.as_bytes()).as_ref())
}

/// TTL in whole milliseconds, at least 1 (0 would be rejected, not "expire now").
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(MAX_TTL_MS)
        .clamp(1, MAX_TTL_MS)
}

/// Describes a Redis error by its kind only: the library's messages can quote replies, and
/// replies can be records.
fn failure(op: &str, e: &RedisError) -> StoreError {
    if e.code() == Some("WRONGTYPE") {
        return StoreError::Corrupt(format!("{op}: a key holds the wrong type"));
    }
    let why = if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_connection_dropped() {
        "connection lost"
    } else if let Some(code) = e.code() {
        code
    } else {
        e.category()
    };
    StoreError::Unavailable(format!("{op}: {why}"))
}

fn encode<T: Serialize>(what: &str, record: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(record)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {:?}", e.classify())))
}

/// serde_json's messages can quote the value they choke on; report only where it failed.
fn decode<T: DeserializeOwned>(what: &str, raw: Option<Vec<u8>>) -> StoreResult<Option<T>> {
    raw.map(|bytes| {
        serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Corrupt(format!(
                "{what}: {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    })
    .transpose()
}

impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        redis::cmd("PING")
            .exec_async(&mut self.conn())
            .await
            .map_err(|e| failure("ping", &e))
    }

    async fn records_identity(&self) -> StoreResult<Option<String>> {
        let raw = self
            .get(
                &format!("{}records-id", self.prefix),
                "read records identity",
            )
            .await?;
        raw.map(|b| {
            String::from_utf8(b).map_err(|_| StoreError::Corrupt("records identity".into()))
        })
        .transpose()
    }

    async fn legacy_two_factor(&self) -> StoreResult<Vec<LegacyRecord>> {
        // Old records were written by proxies that knew only a standalone server; on a Cluster
        // there are none to import (and SCAN would see one node's keys only). Under Sentinel
        // the SCAN below runs on the master, which holds every key.
        if self.cluster {
            return Ok(Vec::new());
        }
        // SCAN, not KEYS: it runs once at start, but must not stall a shared Redis either.
        let pattern = format!("{}u:*", self.prefix);
        // (`Pus:` keys are sets of sessions: the `:` right after `u` keeps them out.)
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| failure("scan old 2FA records", &e))?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out = Vec::new();
        let record_key = format!("{}u:", self.prefix);
        for key in keys {
            let Some(user) = key.strip_prefix(&record_key) else {
                continue;
            };
            let raw = self.get(&key, "read old 2FA record").await?;
            let Some(record) = decode("old 2FA record", raw)? else {
                continue;
            };
            let recovery_hashes: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.key("rc", user))
                .query_async(&mut self.conn())
                .await
                .map_err(|e| failure("read old recovery codes", &e))?;
            out.push(LegacyRecord {
                user: user.to_owned(),
                record,
                recovery_hashes,
            });
        }
        Ok(out)
    }

    async fn remember_records_identity(&self, id: &str, step_floor: u64) -> StoreResult<()> {
        self.remember_records
            .key(format!("{}records-id", self.prefix))
            .key(format!("{}totp-floor", self.prefix))
            .arg(id)
            .arg(step_floor.to_string())
            .invoke_async::<()>(&mut self.conn())
            .await
            .map_err(|e| failure("remember records identity", &e))
    }

    async fn put_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> StoreResult<()> {
        let tok = token(id);
        let json = encode("session", session)?;
        self.put_session
            .key(self.key("s", &tok))
            .key(self.key("us", &session.user))
            .arg(json)
            .arg(millis(ttl))
            .arg(&tok)
            .invoke_async::<()>(&mut self.conn())
            .await
            .map_err(|e| failure("put session", &e))
    }

    async fn put_bound_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
        app_hash: &str,
        bind_ttl: Duration,
    ) -> StoreResult<()> {
        let tok = token(id);
        let json = encode("session", session)?;
        self.put_session
            .key(self.key("s", &tok))
            .key(self.key("us", &session.user))
            .key(self.key("ab", app_hash))
            .arg(json)
            .arg(millis(ttl))
            .arg(&tok)
            .arg(millis(bind_ttl))
            .invoke_async::<()>(&mut self.conn())
            .await
            .map_err(|e| failure("put session", &e))
    }

    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let raw = self.get(&self.key("s", &token(id)), "read session").await?;
        decode("session", raw)
    }

    async fn refresh_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> StoreResult<()> {
        let json = encode("session", session)?;
        // XX: only if it still exists.
        redis::cmd("SET")
            .arg(self.key("s", &token(id)))
            .arg(json)
            .arg("PX")
            .arg(millis(ttl))
            .arg("XX")
            .exec_async(&mut self.conn())
            .await
            .map_err(|e| failure("refresh session", &e))
    }

    // The id stays in the user's set until it is pruned by `end_user_sessions` or the set
    // expires; the set may hold ended ids anyway (sessions also end by TTL).
    async fn delete_session(&self, id: &str) -> StoreResult<()> {
        self.del(&self.key("s", &token(id)), "delete session").await
    }

    async fn bind_app_session(&self, app_hash: &str, id: &str, ttl: Duration) -> StoreResult<()> {
        self.add_to_set
            .key(self.key("ab", app_hash))
            .arg(token(id))
            .arg(millis(ttl))
            .invoke_async::<()>(&mut self.conn())
            .await
            .map_err(|e| failure("bind app session", &e))
    }

    // The set may list sessions that ended or were rebound since: ending those again is
    // harmless, and a rebound one still vouched for this app session until its next rotation.
    async fn end_sessions_bound_to(&self, app_hash: &str) -> StoreResult<u32> {
        let set = self.key("ab", app_hash);
        let mut conn = self.conn();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("list bound sessions", &e))?;
        if members.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for m in &members {
            pipe.cmd("DEL").arg(self.key("s", m));
        }
        pipe.cmd("SREM").arg(&set).arg(&members).ignore();
        let deleted: Vec<i64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("end bound sessions", &e))?;
        Ok(u32::try_from(deleted.iter().filter(|&&n| n > 0).count()).unwrap_or(u32::MAX))
    }

    async fn end_user_sessions(&self, user: &str, keep: Option<&str>) -> StoreResult<u32> {
        let set = self.key("us", user);
        let mut conn = self.conn();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("list sessions", &e))?;
        let keep = keep.map(token);
        let doomed: Vec<String> = members
            .into_iter()
            .filter(|m| Some(m) != keep.as_ref())
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        // Removes exactly the ids it ended, so a session created meanwhile stays listed.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for m in &doomed {
            pipe.cmd("DEL").arg(self.key("s", m));
        }
        pipe.cmd("SREM").arg(&set).arg(&doomed).ignore();
        let deleted: Vec<i64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("end sessions", &e))?;
        let ended = deleted.iter().filter(|&&n| n > 0).count();
        Ok(u32::try_from(ended).unwrap_or(u32::MAX))
    }

    async fn hold_login(&self, id: &str, login: &PendingLogin, ttl: Duration) -> StoreResult<()> {
        let json = encode("pending login", login)?;
        self.set_px(&self.key("p", &token(id)), &json, ttl, "hold login")
            .await
    }

    async fn pending_login(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
        let raw = self
            .get(&self.key("p", &token(id)), "read pending login")
            .await?;
        decode("pending login", raw)
    }

    // GET and DEL in one MULTI: only the first transaction to run sees the value. (Same effect
    // as GETDEL, which needs Redis 6.2.)
    async fn take_login(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
        let tok = token(id);
        let (raw, _): (Option<Vec<u8>>, i64) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(self.key("p", &tok))
            .cmd("DEL")
            .arg(self.key("p", &tok))
            .arg(self.key("pa", &tok))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| failure("take pending login", &e))?;
        decode("pending login", raw)
    }

    async fn count_attempt(&self, id: &str, ttl: Duration) -> StoreResult<u32> {
        self.count(&self.key("pa", &token(id)), ttl, "count attempt")
            .await
    }

    // One MULTI, so no moment where old and new codes are both usable, or neither.
    async fn put_enrollment(
        &self,
        user: &str,
        enrollment: &Enrollment,
        ttl: Duration,
    ) -> StoreResult<()> {
        let json = encode("enrollment", enrollment)?;
        self.set_px(&self.key("e", user), &json, ttl, "save enrollment")
            .await
    }

    async fn enrollment(&self, user: &str) -> StoreResult<Option<Enrollment>> {
        let raw = self.get(&self.key("e", user), "read enrollment").await?;
        decode("enrollment", raw)
    }

    async fn delete_enrollment(&self, user: &str) -> StoreResult<()> {
        self.del(&self.key("e", user), "delete enrollment").await
    }

    // Email codes are keyed by pending-login id or user: hashed like other bearer ids.
    async fn put_email_code(&self, key: &str, code: &EmailCode, ttl: Duration) -> StoreResult<()> {
        let json = encode("email code", code)?;
        self.set_px(&self.key("ec", &token(key)), &json, ttl, "put email code")
            .await
    }

    async fn email_code(&self, key: &str) -> StoreResult<Option<EmailCode>> {
        let raw = self
            .get(&self.key("ec", &token(key)), "read email code")
            .await?;
        decode("email code", raw)
    }

    async fn take_email_code(&self, key: &str) -> StoreResult<Option<EmailCode>> {
        let k = self.key("ec", &token(key));
        let (raw, _): (Option<Vec<u8>>, i64) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(&k)
            .cmd("DEL")
            .arg(&k)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| failure("take email code", &e))?;
        decode("email code", raw)
    }

    async fn hold_login_capped(
        &self,
        id: &str,
        login: &PendingLogin,
        ttl: Duration,
        bucket: u64,
        cap: u32,
    ) -> StoreResult<bool> {
        let json = encode("pending login", login)?;
        let held: i64 = self
            .hold_capped
            .key(self.key("ls", &format!("{}:{bucket}", login.user)))
            .key(self.key("p", &token(id)))
            .arg(json)
            .arg(millis(ttl))
            .arg(cap)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("hold login", &e))?;
        Ok(held == 1)
    }

    async fn count_email_send(&self, user: &str, bucket: u64, ttl: Duration) -> StoreResult<u32> {
        self.count(
            &self.key("es", &format!("{user}:{bucket}")),
            ttl,
            "count email send",
        )
        .await
    }

    async fn claim_totp_step(
        &self,
        user: &str,
        step: u64,
        ttl: Duration,
    ) -> StoreResult<StepClaim> {
        let claimed: i64 = self
            .claim_step
            .key(self.key("t", user))
            .key(format!("{}records-id", self.prefix))
            .key(format!("{}totp-floor", self.prefix))
            .arg(step.to_string())
            .arg(millis(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("claim TOTP step", &e))?;
        match claimed {
            1 => Ok(StepClaim::Claimed),
            0 => Ok(StepClaim::AlreadyUsed),
            2 => Ok(StepClaim::BeforeFloor),
            -1 => Err(StoreError::Unavailable(
                "store emptied: the TOTP steps used before are unknown until the records \
                 identity is checked again"
                    .into(),
            )),
            _ => Err(StoreError::Corrupt(
                "claim TOTP step: unexpected reply".into(),
            )),
        }
    }

    async fn reserve_attempt(
        &self,
        user: &str,
        now: u64,
        window: (u64, Duration),
        in_a_row: (u64, Duration),
    ) -> StoreResult<Reserved> {
        let reply: Vec<redis::Value> = self
            .reserve_attempt
            .key(self.key("l", user))
            .key(self.failures_key(user, window.0))
            .key(self.failures_key(user, in_a_row.0))
            .arg(now)
            .arg(millis(window.1))
            .arg(millis(in_a_row.1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("reserve attempt", &e))?;
        let corrupt = || StoreError::Corrupt("reserve attempt: unexpected reply".into());
        let number = |v: &redis::Value| -> Option<i64> {
            match v {
                redis::Value::Int(n) => Some(*n),
                redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                _ => None,
            }
        };
        // A count that does not fit (or went negative by hand) fails closed: too many.
        let count = |v: &redis::Value| number(v).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        match reply.as_slice() {
            [flag, until] if number(flag) == Some(1) => {
                let until = number(until)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| StoreError::Corrupt("account lock: not a unix time".into()))?;
                Ok(Reserved::Locked(until))
            }
            [flag, in_window, in_a_row] if number(flag) == Some(0) => Ok(Reserved::Counted {
                in_window: count(in_window).ok_or_else(corrupt)?,
                in_a_row: count(in_a_row).ok_or_else(corrupt)?,
            }),
            _ => Err(corrupt()),
        }
    }

    async fn clear_failures(&self, user: &str, buckets: &[u64]) -> StoreResult<()> {
        if buckets.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("DEL");
        for bucket in buckets {
            del.arg(self.failures_key(user, *bucket));
        }
        del.exec_async(&mut self.conn())
            .await
            .map_err(|e| failure("clear failures", &e))
    }

    async fn lock_account(&self, user: &str, until: u64, ttl: Duration) -> StoreResult<()> {
        self.set_px(
            &self.key("l", user),
            until.to_string().as_bytes(),
            ttl,
            "lock account",
        )
        .await
    }

    async fn locked_until(&self, user: &str) -> StoreResult<Option<u64>> {
        let raw = self.get(&self.key("l", user), "read lock").await?;
        raw.map(|bytes| {
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Corrupt("account lock: not a unix time".into()))
        })
        .transpose()
    }

    async fn unlock_account(&self, user: &str) -> StoreResult<()> {
        self.del(&self.key("l", user), "unlock account").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_prefix_is_one_nonempty_hash_tag() {
        assert_eq!(cluster_prefix("twofa:"), "{twofa:}");
        // Braces would end the tag early or leave it empty (no tag: every key its own slot).
        assert_eq!(cluster_prefix("a{b}c:"), "{abc:}");
        assert_eq!(cluster_prefix("}"), "{twofa}");
        assert_eq!(cluster_prefix(""), "{twofa}");
    }
}
