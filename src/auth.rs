//! Client and route authorization: users, secrets (plain or bcrypt), permissions, and the
//! small blocking pool that checks bcrypt hashes off the reactor threads.
//!
//! Sans-IO except for [`AuthPool`], whose threads only compute bcrypt and post the verdict
//! to the owning reactor as [`Mail::AuthDone`].
//!
//! Permissions follow nats-server 2.x, not gnatsd 1.0 (spec §7.3, Appendix A 7–8):
//! - a PUB is allowed if its subject matches an `allow` pattern (or there is no allow list)
//!   and no `deny` pattern;
//! - a SUB is allowed if its subject (wildcards included) is a *subset* of an `allow`
//!   pattern: `foo.>` allows `SUB foo.bar.*`, `foo.*` does not allow `SUB foo.>`;
//!   a SUB is denied if it could receive a message on a denied subject (it overlaps a
//!   `deny` pattern: `SUB foo.*` with `deny: foo.bar`). 2.x accepts such a SUB and filters
//!   the denied messages at delivery; refusing it is stricter and never leaks;
//! - a direction that is not given at all allows everything (1.0 denied it).

use crate::cluster::ct_eq;
use crate::mailbox::{Mail, ReactorHandle};
use crate::proto::subject::subject_matches;
use ahash::AHashMap;
use sha2::{Digest, Sha256};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

/// One direction's rules (publish or subscribe).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `None`: everything not denied is allowed.
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

/// A user's permissions (`permissions { publish, subscribe }`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// `None`: the direction is not restricted.
    pub publish: Option<Rules>,
    pub subscribe: Option<Rules>,
}

impl Permissions {
    /// Whether a PUB to the literal `subject` is allowed.
    pub fn can_publish(&self, subject: &[u8]) -> bool {
        let Some(r) = &self.publish else { return true };
        let allowed = match &r.allow {
            None => true,
            Some(allow) => allow.iter().any(|p| subject_matches(p.as_bytes(), subject)),
        };
        allowed
            && !r
                .deny
                .iter()
                .any(|p| subject_matches(p.as_bytes(), subject))
    }

    /// Whether a SUB to `subject` (which may hold wildcards) is allowed.
    pub fn can_subscribe(&self, subject: &[u8]) -> bool {
        let Some(r) = &self.subscribe else {
            return true;
        };
        let allowed = match &r.allow {
            None => true,
            Some(allow) => allow.iter().any(|p| is_subset(subject, p.as_bytes())),
        };
        allowed && !r.deny.iter().any(|p| overlaps(subject, p.as_bytes()))
    }
}

/// Whether some subject is matched by both `a` and `b`.
pub fn overlaps(a: &[u8], b: &[u8]) -> bool {
    let mut at = a.split(|&c| c == b'.');
    let mut bt = b.split(|&c| c == b'.');
    loop {
        match (at.next(), bt.next()) {
            (None, None) => return true,
            (Some(b">"), Some(_)) | (Some(_), Some(b">")) => return true,
            (Some(x), Some(y)) if x == b"*" || y == b"*" || x == y => {}
            _ => return false,
        }
    }
}

/// Whether every subject that `sub` matches is also matched by `pattern` (2.x semantics:
/// only whole `*` / `>` tokens are wildcards).
pub fn is_subset(sub: &[u8], pattern: &[u8]) -> bool {
    let mut pt = pattern.split(|&b| b == b'.').peekable();
    let mut st = sub.split(|&b| b == b'.').peekable();
    while let Some(p) = pt.next() {
        if p == b">" && pt.peek().is_none() {
            // `>` covers one or more tokens of any kind.
            return st.next().is_some();
        }
        let Some(s) = st.next() else { return false };
        match (p, s) {
            (_, b">") => return false,
            (b"*", _) => {}
            (_, b"*") => return false,
            _ if p != s => return false,
            _ => {}
        }
    }
    st.next().is_none()
}

/// A configured password or token: compared in constant time, or a bcrypt hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Bcrypt(Arc<str>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain([REDACTED])"),
            Secret::Bcrypt(_) => f.write_str("Bcrypt([REDACTED])"),
        }
    }
}

impl Secret {
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`) is checked with bcrypt, anything
    /// else by exact comparison.
    pub fn new(configured: &str) -> Secret {
        if is_bcrypt(configured) {
            Secret::Bcrypt(configured.into())
        } else {
            Secret::Plain(configured.to_owned())
        }
    }
}

pub fn is_bcrypt(s: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// A user entry of `authorization { users = [...] }`, as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub user: String,
    pub pass: String,
    pub permissions: Option<Permissions>,
}

/// The password is never printed.
impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("user", &self.user)
            .field("pass", &"[REDACTED]")
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// A user ready for checks.
#[derive(Debug)]
pub struct User {
    pub name: String,
    pub pass: Secret,
    /// `None`: unrestricted.
    pub permissions: Option<Arc<Permissions>>,
}

/// The outcome of checking a CONNECT's credentials without bcrypt.
#[derive(Debug)]
pub enum Check {
    /// Accepted, with these permissions (`None`: unrestricted).
    Ok(Option<Arc<Permissions>>),
    Fail,
    /// The configured secret is a bcrypt hash: verify `given` against it off the reactor.
    Bcrypt {
        hash: Arc<str>,
        given: String,
        key: CacheKey,
        permissions: Option<Arc<Permissions>>,
    },
}

/// Compares `given` with `secret`: at once for a plain secret (constant time), through the
/// cache or a deferred [`Check::Bcrypt`] for a hash.
pub fn check_secret(
    secret: &Secret,
    user: &str,
    given: Option<&str>,
    cache: &VerifiedCache,
    permissions: Option<Arc<Permissions>>,
) -> Check {
    let given = given.unwrap_or("");
    match secret {
        Secret::Plain(p) => {
            if ct_eq(given.as_bytes(), p.as_bytes()) {
                Check::Ok(permissions)
            } else {
                Check::Fail
            }
        }
        Secret::Bcrypt(hash) => {
            let key = cache_key(user, hash, given);
            if cache.contains(&key) {
                return Check::Ok(permissions);
            }
            Check::Bcrypt {
                hash: Arc::clone(hash),
                given: given.to_owned(),
                key,
                permissions,
            }
        }
    }
}

pub type CacheKey = [u8; 32];

/// SHA-256 of the user, the configured hash and the given password: the cache never holds
/// a password.
pub fn cache_key(user: &str, hash: &str, given: &str) -> CacheKey {
    let mut h = Sha256::new();
    for part in [user, hash, given] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Successful bcrypt verifications, so a reconnect storm does not queue bcrypt work.
/// Bounded: when full it is emptied (the next connects verify again).
#[derive(Default)]
pub struct VerifiedCache {
    ok: Mutex<AHashMap<CacheKey, ()>>,
}

/// Entries kept at most.
pub const CACHE_MAX: usize = 4096;

impl VerifiedCache {
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    pub fn insert(&self, key: CacheKey) {
        let mut m = self.ok.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(key, ());
    }

    pub fn len(&self) -> usize {
        self.ok.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Threads of the bcrypt pool: half the cores, at least one. A storm of logins then takes
/// at most half the machine from the traffic (measured: two concurrent bcrypt logins on a
/// 2-core box with a 2-thread pool cut other clients' 1:1 rate to 0.56; one at a time, 0.90–1.00).
pub fn pool_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}
/// The pool's queue length.
pub const POOL_QUEUE: usize = 256;

/// One bcrypt verification; the verdict goes to `reactor` as `Mail::AuthDone { token }`.
pub struct Job {
    pub hash: Arc<str>,
    pub given: String,
    pub key: CacheKey,
    pub reactor: usize,
    pub token: u64,
}

/// A small bounded pool of threads that verify bcrypt hashes, so a CONNECT never runs
/// bcrypt (tens of ms) on a reactor thread.
#[derive(Default)]
pub struct AuthPool {
    tx: OnceLock<SyncSender<Job>>,
    /// The threads' end of the queue, kept here too so a pool without threads (tests) still
    /// queues.
    rx: OnceLock<Arc<Mutex<Receiver<Job>>>>,
    pub cache: Arc<VerifiedCache>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    Full,
    NotRunning,
}

impl AuthPool {
    /// Starts the threads (once); they post verdicts through `handles`.
    pub fn start(&self, handles: Arc<[ReactorHandle]>) {
        self.start_with(handles, pool_threads(), POOL_QUEUE);
    }

    /// [`start`](Self::start) with other sizes (tests: no threads, a tiny queue).
    pub fn start_with(&self, handles: Arc<[ReactorHandle]>, threads: usize, queue: usize) {
        let (tx, rx) = sync_channel::<Job>(queue);
        if self.tx.set(tx).is_err() {
            return;
        }
        let rx = Arc::new(Mutex::new(rx));
        let _ = self.rx.set(Arc::clone(&rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let handles = Arc::clone(&handles);
            let cache = Arc::clone(&self.cache);
            let spawned = std::thread::Builder::new()
                .name(format!("auth-bcrypt-{i}"))
                .spawn(move || worker(&rx, &handles, &cache));
            if let Err(e) = spawned {
                crate::error!("Cannot start a bcrypt verification thread: {e}");
            }
        }
    }

    /// Queues a verification; never blocks.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let tx = self.tx.get().ok_or(SubmitError::NotRunning)?;
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::NotRunning,
        })
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, handles: &[ReactorHandle], cache: &VerifiedCache) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => job,
                // The server (and the sender with it) is gone.
                Err(_) => return,
            }
        };
        let ok = bcrypt::verify(job.given.as_bytes(), &job.hash).unwrap_or(false);
        if ok {
            cache.insert(job.key);
        }
        if let Some(h) = handles.get(job.reactor) {
            h.post(&mut vec![Mail::AuthDone {
                token: job.token,
                ok,
            }]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Option<Rules> {
        Some(Rules {
            allow: Some(allow.iter().map(|s| s.to_string()).collect()),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn subset_follows_2x_wildcards() {
        assert!(is_subset(b"foo.bar.*", b"foo.>"));
        assert!(is_subset(b"foo.bar", b"foo.*"));
        assert!(is_subset(b"foo.*", b"foo.*"));
        assert!(is_subset(b"foo.>", b"foo.>"));
        assert!(is_subset(b"foo.*.baz", b"foo.>"));
        assert!(is_subset(b"a", b">"));
        assert!(!is_subset(b"foo.>", b"foo.*"), "1.0's loophole is closed");
        assert!(!is_subset(b"foo.*", b"foo.bar"));
        assert!(!is_subset(b"foo", b"foo.>"));
        assert!(!is_subset(b"foo.bar.baz", b"foo.*"));
        assert!(!is_subset(b">", b"foo.>"));
        assert!(
            !is_subset(b"foo.*bar", b"foo.x"),
            "`*bar` is a literal token"
        );
        assert!(is_subset(b"foo.*bar", b"foo.*"));
    }

    #[test]
    fn overlap() {
        assert!(overlaps(b"foo.*", b"foo.bar"));
        assert!(overlaps(b"foo.>", b"foo.bar.baz"));
        assert!(overlaps(b"*.bar", b"foo.*"));
        assert!(overlaps(b">", b"a"));
        assert!(!overlaps(b"foo.*", b"foo.bar.baz"));
        assert!(!overlaps(b"foo", b"bar"));
        assert!(!overlaps(b"foo", b"foo.>"));
    }

    #[test]
    fn publish_and_subscribe_rules() {
        let p = Permissions {
            publish: rules(&["req.*", "_INBOX.>"], &["req.secret"]),
            subscribe: rules(&["_INBOX.>", "PUBLIC.*"], &["PUBLIC.hidden"]),
        };
        assert!(p.can_publish(b"req.foo"));
        assert!(!p.can_publish(b"req.secret"));
        assert!(!p.can_publish(b"req.foo.bar"));
        assert!(p.can_publish(b"_INBOX.a.b"));
        assert!(p.can_subscribe(b"_INBOX.*"));
        assert!(p.can_subscribe(b"_INBOX.>"));
        assert!(p.can_subscribe(b"PUBLIC.x"));
        assert!(!p.can_subscribe(b"PUBLIC.>"));
        assert!(!p.can_subscribe(b"PUBLIC.hidden"));
        assert!(!p.can_subscribe(b"PUBLIC.*"), "overlaps a denied subject");
        assert!(!p.can_subscribe(b"foo"));
        let open = Permissions {
            publish: rules(&["a"], &[]),
            subscribe: None,
        };
        assert!(
            open.can_subscribe(b">"),
            "a missing direction is not restricted"
        );
        assert!(!open.can_publish(b"b"));
        let deny_only = Permissions {
            publish: Some(Rules {
                allow: None,
                deny: vec!["secret.>".into()],
            }),
            subscribe: None,
        };
        assert!(deny_only.can_publish(b"anything"));
        assert!(!deny_only.can_publish(b"secret.x"));
    }

    #[test]
    fn secrets() {
        assert!(is_bcrypt("$2a$11$abc"));
        assert!(is_bcrypt("$2y$04$abc"));
        assert!(!is_bcrypt("$2c$04$abc"));
        assert!(!is_bcrypt("plain"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Plain([REDACTED])");
        let u = UserConfig {
            user: "a".into(),
            pass: "hunter2".into(),
            permissions: None,
        };
        assert!(!format!("{u:?}").contains("hunter2"));
        let cache = VerifiedCache::default();
        assert!(matches!(
            check_secret(&Secret::new("pw"), "u", Some("pw"), &cache, None),
            Check::Ok(None)
        ));
        assert!(matches!(
            check_secret(&Secret::new("pw"), "u", Some("px"), &cache, None),
            Check::Fail
        ));
        let hash = bcrypt::hash("pw", 4).unwrap();
        let secret = Secret::new(&hash);
        let Check::Bcrypt { key, .. } = check_secret(&secret, "u", Some("pw"), &cache, None) else {
            panic!("bcrypt secret goes to the pool");
        };
        cache.insert(key);
        assert!(matches!(
            check_secret(&secret, "u", Some("pw"), &cache, None),
            Check::Ok(None)
        ));
        assert!(matches!(
            check_secret(&secret, "v", Some("pw"), &cache, None),
            Check::Bcrypt { .. }
        ));
    }

    #[test]
    fn cache_is_bounded() {
        let cache = VerifiedCache::default();
        for i in 0..CACHE_MAX + 10 {
            cache.insert(cache_key("u", "h", &i.to_string()));
        }
        assert!(cache.len() <= CACHE_MAX);
    }

    #[test]
    fn pool_posts_the_verdict_and_caches_success() {
        let handles: Arc<[ReactorHandle]> = vec![ReactorHandle::new().unwrap()].into();
        let pool = AuthPool::default();
        assert_eq!(
            pool.submit(Job {
                hash: "x".into(),
                given: String::new(),
                key: [0; 32],
                reactor: 0,
                token: 1
            }),
            Err(SubmitError::NotRunning)
        );
        pool.start(Arc::clone(&handles));
        let hash: Arc<str> = bcrypt::hash("pw", 4).unwrap().into();
        for (token, given) in [(1, "pw"), (2, "nope")] {
            let key = cache_key("u", &hash, given);
            let job = Job {
                hash: Arc::clone(&hash),
                given: given.into(),
                key,
                reactor: 0,
                token,
            };
            pool.submit(job).unwrap();
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 2 && std::time::Instant::now() < deadline {
            handles[0].drain(&mut got);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        got.sort_by_key(|m| match m {
            Mail::AuthDone { token, .. } => *token,
            _ => 0,
        });
        assert_eq!(
            got,
            vec![
                Mail::AuthDone { token: 1, ok: true },
                Mail::AuthDone {
                    token: 2,
                    ok: false
                }
            ]
        );
        assert!(pool.cache.contains(&cache_key("u", &hash, "pw")));
        assert!(!pool.cache.contains(&cache_key("u", &hash, "nope")));
    }
}
