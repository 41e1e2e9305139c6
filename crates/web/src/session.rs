//! Sessions and login throttling, in memory: a restart logs everyone out.
//!
//! A session id is 32 random bytes (hex) from the operating system; the
//! cookie holding it is `HttpOnly`, `SameSite=Strict`, `Path=/`, and
//! `Secure` when the site is served over TLS. Each session has its own
//! CSRF token, required (header `X-CSRF-Token`, or the form field `csrf`)
//! on every state-changing request. A session ends after `idle` without a
//! request, after `absolute` whatever happens, or at logout.

use crate::identity::Identity;
use rand_core::{OsRng, RngCore};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie's name.
pub const COOKIE: &str = "mailkeep_session";

/// At most this many sessions at once; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;

/// 32 random bytes as 64 hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty()
        && a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub identity: Identity,
    /// The token state-changing requests must carry.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    /// A session for one request made with an API token: no cookie, no
    /// CSRF token (a token is never sent by a browser on its own).
    pub fn for_token(identity: Identity) -> Session {
        let now = Instant::now();
        Session {
            identity,
            csrf: String::new(),
            created: now,
            last_seen: now,
        }
    }
}

/// The open sessions.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    absolute: Duration,
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Sessions that end after `idle` without use or `absolute` in all.
    pub fn new(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            idle,
            absolute,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.absolute
    }

    /// Opens a session; returns its id.
    pub fn open(&self, identity: Identity) -> (String, Session) {
        let now = Instant::now();
        let id = random_token();
        let session = Session {
            identity,
            csrf: random_token(),
            created: now,
            last_seen: now,
        };
        let mut open = self.lock();
        open.retain(|_, s| self.alive(s, now));
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                open.remove(&oldest);
            }
        }
        open.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of this id, its idle time restarted.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut open = self.lock();
        let alive = open.get(id).map(|s| self.alive(s, now))?;
        if !alive {
            open.remove(id);
            return None;
        }
        let s = open.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends a session; whether it was open.
    pub fn close(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Ends every session of `name` (the account was removed or changed).
    pub fn close_all_of(&self, name: &str) {
        self.lock().retain(|_, s| s.identity.name != name);
    }
}

/// Failed logins per user name and per client address: after `FREE`
/// failures in a row, each further attempt waits for a delay that doubles
/// with every failure (1 s, 2 s, 4 s ... at most 15 minutes), refused until
/// then, whatever the password. A success clears the user's count.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<ThrottleKey, (u32, Instant)>>,
}

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// A login name (lowercased).
    User(String),
    /// A client address.
    Client(IpAddr),
}

/// Failures allowed before the delays start.
pub const FREE: u32 = 5;
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// How many keys are remembered at most.
const MAX_KEYS: usize = 100_000;

impl Throttle {
    fn delay(count: u32) -> Duration {
        if count < FREE {
            return Duration::ZERO;
        }
        let exp = (count - FREE).min(20);
        Duration::from_secs(1u64 << exp).min(MAX_DELAY)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThrottleKey, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long an attempt on these keys must still wait (zero: go on).
    pub fn wait(&self, keys: &[ThrottleKey]) -> Duration {
        let now = Instant::now();
        let map = self.lock();
        keys.iter()
            .filter_map(|k| map.get(k))
            .map(|(count, last)| {
                let until = *last + Self::delay(*count);
                until.saturating_duration_since(now)
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Counts a failure against each key; returns the largest count.
    pub fn failed(&self, keys: &[ThrottleKey]) -> u32 {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            map.retain(|_, (count, last)| {
                now.duration_since(*last) < Self::delay(*count).max(MAX_DELAY)
            });
        }
        keys.iter()
            .map(|k| {
                let e = map.entry(k.clone()).or_insert((0, now));
                // A quiet quarter of an hour forgives the past.
                if now.duration_since(e.1) > MAX_DELAY {
                    e.0 = 0;
                }
                e.0 = e.0.saturating_add(1);
                e.1 = now;
                e.0
            })
            .max()
            .unwrap_or(0)
    }

    /// A success: the user's failures are forgotten (the address's stay,
    /// so one good account does not unlock guessing at others).
    pub fn succeeded(&self, user: &ThrottleKey) {
        self.lock().remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Role;

    fn who() -> Identity {
        Identity {
            name: "bob".into(),
            role: Role::User,
            addresses: vec![],
            backend: "local",
        }
    }

    #[test]
    fn a_session_ends_when_idle_and_at_logout() {
        let s = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let (id, opened) = s.open(who());
        assert_eq!(s.get(&id).map(|x| x.csrf), Some(opened.csrf));
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&id).is_none(), "idle session still open");
        let (id, _) = s.open(who());
        assert!(s.close(&id));
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn a_session_ends_at_its_absolute_limit_even_in_use() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_millis(60));
        let (id, _) = s.open(who());
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(15));
            assert!(s.get(&id).is_some());
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn throttle_delays_after_the_free_failures() {
        let t = Throttle::default();
        let keys = [ThrottleKey::User("bob".into())];
        for _ in 0..FREE - 1 {
            t.failed(&keys);
            assert_eq!(t.wait(&keys), Duration::ZERO);
        }
        t.failed(&keys);
        assert!(t.wait(&keys) > Duration::from_millis(500));
        t.succeeded(&keys[0]);
        assert_eq!(t.wait(&keys), Duration::ZERO);
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &a[..63]));
    }
}
