//! The request cache's storage shared between processes: entries in a Redis server, under
//! `prefix` + the key's hex digest, each expiring with its time to live (PX), so that processes
//! using the same server and prefix (members of one consumer group, say) pay for a request once.
//!
//! Unlike [`Cache`](super::Cache), every call is asynchronous: it runs inside the request's own
//! future, never on the operator thread.
//!
//! Besides entries it keeps a lock per key (`KEY:lock`, holding its owner's id, expiring on its
//! own): the lookup that misses takes it in the same step ([`RedisStore::claim`]), so that of
//! several processes asking for one key at once exactly one sends; the others find the lock
//! taken and look again until the entry appears or the lock is gone. The owner frees its lock
//! only while it still owns it (compare-and-delete), and also when its request is dropped.
//!
//! Redis out of reach (at start or mid-run: a connection error, a call slower than
//! [`CALL_TIMEOUT`]) never fails a request: the lookup is a miss and the request is sent. The
//! outage is logged once with the URL, each lookup it costs is counted
//! ([`CacheStats::unreachable`]), and Redis is tried again at most every [`RETRY_EVERY`] (in
//! between, lookups do not wait for it).

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::ConnectionManager;

use super::{CacheError, CacheKey, CacheStats, Lookup, Reader, Writer};

/// The longest one Redis call (connecting included) may take before Redis counts as out of
/// reach: a lookup never holds a request up longer.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How often Redis is tried again while it is out of reach.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The first byte of every entry: another layout gets another number.
const FORMAT: u8 = 1;

/// What a [`RedisStore::claim`] found.
pub enum Claim {
    /// An entry (`Hit` or `Negative`), or `Miss` when it was damaged: no lock was taken.
    Entry(Lookup),
    /// No entry, and this process now holds the key's lock: it sends, keeps the answer and
    /// releases the lock.
    Owner(Lock),
    /// No entry, and another process holds the lock: its answer is on the way.
    Taken,
    /// Redis is out of reach: a miss, without a lock.
    Unreachable,
}

/// A request cache kept in Redis; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL as logged: any password hidden.
    url: String,
    prefix: String,
    client: redis::Client,
    /// Made on first use (it needs a running tokio runtime); reconnects by itself.
    connection: Mutex<Option<ConnectionManager>>,
    ttl: Duration,
    negative_ttl: Duration,
    stats: Arc<CacheStats>,
    link: Mutex<Link>,
    /// Random per store: lock owner ids of two processes never collide.
    owner_seed: u64,
    locks_taken: AtomicU64,
    claim: redis::Script,
    release: redis::Script,
}

/// Whether Redis is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Untried,
    Up,
    /// Out of reach since `since`; last tried at `tried`.
    Down {
        since: Instant,
        tried: Instant,
    },
}

impl RedisStore {
    /// A store at `url` under `prefix`; answers live `ttl`, failures `negative_ttl` (zero: not
    /// kept). A bad URL is an error; an unreachable server is not (lookups then miss).
    pub fn new(
        url: &str,
        prefix: &str,
        ttl: Duration,
        negative_ttl: Duration,
        stats: Arc<CacheStats>,
    ) -> Result<RedisStore, CacheError> {
        let shown = crate::redis_url::shown(url);
        let client = redis::Client::open(url).map_err(|e| CacheError::BadRedisUrl {
            url: shown.clone(),
            cause: e.to_string(),
        })?;
        let mut seed = RandomState::new().build_hasher();
        seed.write_u32(std::process::id());
        Ok(RedisStore {
            inner: Arc::new(Inner {
                url: shown,
                prefix: prefix.to_owned(),
                client,
                connection: Mutex::new(None),
                ttl,
                negative_ttl,
                stats,
                link: Mutex::new(Link::Untried),
                owner_seed: seed.finish(),
                locks_taken: AtomicU64::new(0),
                claim: redis::Script::new(include_str!("redis_claim.lua")),
                release: redis::Script::new(include_str!("redis_release.lua")),
            }),
        })
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.inner.stats
    }

    /// The entry under `key`; without one, the key's lock for `lock_ttl` if nobody holds it.
    /// Counts nothing but an unreachable Redis: what a claim means is the caller's.
    pub async fn claim(&self, key: &CacheKey, lock_ttl: Duration) -> Claim {
        let inner = &self.inner;
        if !inner.may_try() {
            inner.stats.unreachable.inc();
            return Claim::Unreachable;
        }
        let entry = inner.entry_key(key);
        let lock = format!("{entry}:lock");
        let owner = format!(
            "{:016x}-{}",
            inner.owner_seed,
            inner.locks_taken.fetch_add(1, Ordering::Relaxed)
        );
        let mut call = inner.claim.prepare_invoke();
        call.key(&entry)
            .key(&lock)
            .arg(&owner)
            .arg(millis(lock_ttl));
        let answer = inner
            .call(|mut c| async move { call.invoke_async::<redis::Value>(&mut c).await })
            .await;
        match answer {
            Some(redis::Value::BulkString(bytes)) => Claim::Entry(unpack(&bytes)),
            Some(redis::Value::Int(1)) => Claim::Owner(Lock {
                store: self.clone(),
                key: lock,
                owner,
                released: false,
            }),
            Some(redis::Value::Int(_)) => Claim::Taken,
            Some(other) => {
                inner.lost(&format!("unexpected answer to a lookup: {other:?}"));
                inner.stats.unreachable.inc();
                Claim::Unreachable
            }
            None => {
                inner.stats.unreachable.inc();
                Claim::Unreachable
            }
        }
    }

    /// Keeps `value` under `key`: an answer for `ttl`, a failure (`negative`) for
    /// `negative_ttl` (not at all when that is zero). Lost silently when Redis is out of reach.
    pub async fn put(&self, key: &CacheKey, value: &[u8], negative: bool) {
        let inner = &self.inner;
        let ttl = if negative {
            inner.negative_ttl
        } else {
            inner.ttl
        };
        if ttl.is_zero() || !inner.may_try() {
            return;
        }
        let entry = Writer::new()
            .u8(FORMAT)
            .u8(u8::from(negative))
            .bytes(value)
            .finish();
        let mut set = redis::cmd("SET");
        set.arg(inner.entry_key(key))
            .arg(entry)
            .arg("PX")
            .arg(millis(ttl));
        inner
            .call(|mut c| async move { set.query_async::<()>(&mut c).await })
            .await;
    }
}

impl Inner {
    /// The Redis key of an entry: the prefix and the digest in hex.
    fn entry_key(&self, key: &CacheKey) -> String {
        let mut text = String::with_capacity(self.prefix.len() + 64);
        text.push_str(&self.prefix);
        for b in key.0 {
            let _ = write!(text, "{b:02x}");
        }
        text
    }

    /// One call to Redis within [`CALL_TIMEOUT`]; `None` when it failed (logged as an outage).
    async fn call<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = match self.connection() {
            Ok(c) => c,
            Err(e) => {
                self.lost(&e.to_string());
                return None;
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call(connection)).await {
            Ok(Ok(value)) => {
                self.reached();
                Some(value)
            }
            Ok(Err(e)) => {
                self.lost(&e.to_string());
                None
            }
            Err(_) => {
                let waited = humantime::format_duration(CALL_TIMEOUT);
                self.lost(&format!("no answer within {waited}"));
                None
            }
        }
    }

    fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        crate::redis_url::lazy_connection(&self.connection, &self.client, CALL_TIMEOUT)
    }

    /// Whether to ask Redis now: always while it answers; while it is out of reach, one
    /// caller every [`RETRY_EVERY`] (the others do without, at once).
    fn may_try(&self) -> bool {
        let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *link {
            Link::Untried | Link::Up => true,
            Link::Down { tried, .. } => {
                if tried.elapsed() < RETRY_EVERY {
                    return false;
                }
                *tried = Instant::now();
                true
            }
        }
    }

    /// Redis answered: say so the first time, and when it comes back.
    fn reached(&self) {
        let before = {
            let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *link, Link::Up)
        };
        match before {
            Link::Up => {}
            Link::Untried => {
                tracing::info!(url = %self.url, prefix = %self.prefix, "request cache shared through Redis");
            }
            Link::Down { since, .. } => tracing::warn!(
                url = %self.url,
                "Redis answers again: the request cache is shared through it again after {:.1} s \
                 ({} lookups went without it so far)",
                since.elapsed().as_secs_f64(),
                self.stats.unreachable.get(),
            ),
        }
    }

    /// Redis failed: logged once per outage; lookups miss until it answers again.
    fn lost(&self, cause: &str) {
        {
            let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*link, Link::Down { .. }) {
                return;
            }
            let now = Instant::now();
            *link = Link::Down {
                since: now,
                tried: now,
            };
        }
        tracing::warn!(
            url = %self.url,
            "Redis is out of reach ({cause}): the request cache shared through it answers \
             nothing and every request is sent, until Redis answers again (tried every {})",
            humantime::format_duration(RETRY_EVERY),
        );
    }
}

/// An entry's bytes as kept: its format, whether it is a failure, and the caller's value.
fn unpack(bytes: &[u8]) -> Lookup {
    let mut r = Reader::new(bytes);
    let unpacked = (|| {
        if r.u8()? != FORMAT {
            return Err(super::Damaged("another format"));
        }
        let negative = r.u8()? != 0;
        let value = Bytes::copy_from_slice(r.bytes()?);
        r.end()?;
        Ok((negative, value))
    })();
    match unpacked {
        Ok((false, value)) => Lookup::Hit(value),
        Ok((true, value)) => Lookup::Negative(value),
        Err(_) => Lookup::Miss,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A key's lock held by this process. Released by [`Lock::release`], or, when dropped unreleased
/// (its request was given up), by a task of its own, so that the other processes need not wait
/// for it to expire.
pub struct Lock {
    store: RedisStore,
    key: String,
    owner: String,
    released: bool,
}

impl Lock {
    /// Frees the lock if this process still holds it.
    pub async fn release(mut self) {
        self.released = true;
        release(&self.store, &self.key, &self.owner).await;
    }
}

async fn release(store: &RedisStore, key: &str, owner: &str) {
    let inner = &store.inner;
    if !inner.may_try() {
        // It expires on its own.
        return;
    }
    let mut call = inner.release.prepare_invoke();
    call.key(key).arg(owner);
    inner
        .call(|mut c| async move { call.invoke_async::<i64>(&mut c).await })
        .await;
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, owner) = (
                self.store.clone(),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.owner),
            );
            runtime.spawn(async move { release(&store, &key, &owner).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_and_damaged_ones_are_misses() {
        let pack = |negative: bool, value: &[u8]| {
            Writer::new()
                .u8(FORMAT)
                .u8(u8::from(negative))
                .bytes(value)
                .finish()
        };
        assert_eq!(
            unpack(&pack(false, b"answer")),
            Lookup::Hit(Bytes::from_static(b"answer"))
        );
        assert_eq!(
            unpack(&pack(true, b"404")),
            Lookup::Negative(Bytes::from_static(b"404"))
        );
        let mut other = pack(false, b"x");
        other[0] = 9;
        assert_eq!(unpack(&other), Lookup::Miss);
        assert_eq!(unpack(b"\x01"), Lookup::Miss);
    }

    #[test]
    fn keys_are_the_prefix_and_the_digest_in_hex_and_a_bad_url_is_an_error() {
        let store = RedisStore::new(
            "redis://:pw@127.0.0.1:1/",
            "p:",
            Duration::from_secs(1),
            Duration::ZERO,
            Arc::default(),
        )
        .expect("a redis URL");
        let key = store.inner.entry_key(&CacheKey([0xab; 32]));
        assert_eq!(key, format!("p:{}", "ab".repeat(32)));
        assert_eq!(store.inner.url, "redis://:***@127.0.0.1:1/");
        let error = RedisStore::new(
            "http://x",
            "p:",
            Duration::from_secs(1),
            Duration::ZERO,
            Arc::default(),
        )
        .err()
        .expect("refused");
        assert!(error.to_string().contains("bad redis_url"), "{error}");
    }
}
