//! The result and request caches' storage: a key (a digest) to an entry (bytes the caller
//! encodes), each entry positive (an answer) or negative (a fatal failure), with its own time
//! to live; on the heap (moka) or in a RocksDB database of its own that outlives the process;
//! for the request cache also in a Redis server that several processes share ([`redis`], whose
//! API is asynchronous: it is not a [`Cache`]).
//!
//! What is cached and under which key is the caller's: the operator's result cache
//! (`operator::result_cache`) and the outbound stack's request cache
//! (`outbound::request_cache`). This module only keeps entries, bounds them, expires them and
//! counts what happens ([`CacheStats`]). Time is passed in (milliseconds since the Unix epoch),
//! so that expiry is tested with a fake clock and a RocksDB entry keeps its age across runs.
//!
//! A cache that cannot be read (a corrupt database, a directory it may not use) never fails a
//! run nor gives a wrong answer: it is reported once with its path and turns itself off (every
//! lookup a miss). Only a database locked by another process is an error at start: two runs
//! writing one cache is a mistake worth stopping for.

pub mod admin;
mod codec;
mod heap;
pub mod redis;
mod rocks;
mod stats;

use std::fmt;
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use codec::{Damaged, Reader, Writer};
pub use stats::CacheStats;

/// A cache key: the SHA-256 of what identifies the entry. Never the material itself, so a
/// key cannot hold a secret or a payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The digest of `parts`, each length-prefixed so that no two different lists of parts
    /// give the same bytes.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        CacheKey(hasher.finalize().into())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Hashes a [`CacheKey`] by taking 8 of its bytes: it is a SHA-256 digest already, so
/// hashing it again (SipHash) would only cost time on every admission.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// Where entries are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In this process only: moka, with TinyLFU admission (or LRU) and a bound on entries.
    Heap { eviction: Eviction },
    /// A RocksDB database in this directory, its own (not the checkpoint's): it survives
    /// restarts and crashes.
    RocksDb { path: PathBuf },
    /// A Redis server shared by several processes (request cache only: it is read
    /// asynchronously, see `outbound::request_cache`); keys are `prefix` + the key's hex digest.
    Redis { url: String, prefix: String },
}

/// Which entry a full heap cache gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// moka's default: a new entry is admitted only if it is likely to be used more often
    /// than the one it would evict (frequency sketch), which keeps one-off keys from
    /// flushing the cache.
    TinyLfu,
    /// The least recently used entry goes (predictable, for small caches and tests).
    Lru,
}

/// How a cache keeps its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    pub storage: Storage,
    /// How long a positive entry is served.
    pub ttl: Duration,
    /// How long a negative entry (a fatal failure) is served; zero: not cached.
    pub negative_ttl: Duration,
    pub max_entries: u64,
    /// RocksDB only: a bound on the bytes of keys and values too.
    pub max_bytes: Option<u64>,
}

impl fmt::Display for CacheOptions {
    /// As `waio check` shows it: "rocksdb in DIR, at most N entries, answers for 1day, failures for 10m".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.storage {
            Storage::Heap { eviction } => write!(
                f,
                "heap ({}), at most {} entries",
                match eviction {
                    Eviction::TinyLfu => "tiny_lfu",
                    Eviction::Lru => "lru",
                },
                self.max_entries
            )?,
            Storage::RocksDb { path } => {
                write!(
                    f,
                    "rocksdb in {}, at most {} entries",
                    path.display(),
                    self.max_entries
                )?;
                if let Some(bytes) = self.max_bytes {
                    write!(f, " and {bytes} bytes")?;
                }
            }
            Storage::Redis { url, prefix } => write!(
                f,
                "redis at {} (prefix {prefix:?}), shared by every process using it",
                crate::redis_url::host_port(url)
            )?,
        }
        write!(f, ", answers for {}", humantime::format_duration(self.ttl))?;
        if self.negative_ttl.is_zero() {
            f.write_str(", failures not kept")
        } else {
            write!(
                f,
                ", failures for {}",
                humantime::format_duration(self.negative_ttl)
            )
        }
    }
}

/// What a cache is for; a RocksDB directory remembers it, so that a result cache is never
/// read as a request cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    Result,
    Request,
}

impl CacheKind {
    pub fn name(self) -> &'static str {
        match self {
            CacheKind::Result => "result",
            CacheKind::Request => "request",
        }
    }
}

/// An entry as found (its bytes shared with the heap cache, not copied).
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// An answer: the bytes the caller stored.
    Hit(Bytes),
    /// A failure remembered for `negative_ttl`.
    Negative(Bytes),
    Miss,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache directory {} is in use by another process (RocksDB's lock is held); two runs cannot share one cache directory", dir.display())]
    InUse { dir: PathBuf },
    #[error("the cache directory {} holds a {found} cache, not a {wanted} cache; give each cache its own directory", dir.display())]
    WrongKind {
        dir: PathBuf,
        found: String,
        wanted: &'static str,
    },
    #[error("cannot open the cache in {}: {cause}", dir.display())]
    Open { dir: PathBuf, cause: String },
    #[error("{} holds no waio cache (no RocksDB database)", dir.display())]
    NoDatabase { dir: PathBuf },
    #[error("the cache in {} cannot be read: {cause}", dir.display())]
    Read { dir: PathBuf, cause: String },
    #[error("a {kind} cache cannot be kept in Redis: it is looked up synchronously")]
    NotShared { kind: &'static str },
    #[error("bad redis_url {url:?}: {cause}")]
    BadRedisUrl { url: String, cause: String },
}

/// The entries of one cache, wherever they are kept.
pub struct Cache {
    store: Store,
    options: CacheOptions,
    stats: Arc<CacheStats>,
}

enum Store {
    Heap(heap::HeapStore),
    Rocks(rocks::RocksStore),
    /// Could not be opened: every lookup misses, nothing is kept.
    Off,
}

impl Cache {
    /// Opens the cache `options` describe, counting in `stats`. A RocksDB directory that
    /// cannot be used is reported (with its path) and gives a cache that is off; one locked
    /// by another process is an error.
    pub fn open(
        options: CacheOptions,
        kind: CacheKind,
        stats: Arc<CacheStats>,
    ) -> Result<Self, CacheError> {
        let store = match &options.storage {
            Storage::Heap { eviction } => Store::Heap(heap::HeapStore::new(
                options.max_entries,
                *eviction,
                Arc::clone(&stats),
            )),
            Storage::RocksDb { path } => {
                match rocks::RocksStore::open(path, kind, &options, Arc::clone(&stats)) {
                    Ok(store) => Store::Rocks(store),
                    Err(e @ (CacheError::InUse { .. } | CacheError::WrongKind { .. })) => {
                        return Err(e)
                    }
                    Err(e) => {
                        tracing::warn!("{e}; the run goes on without this {} cache", kind.name());
                        stats.broken.set();
                        Store::Off
                    }
                }
            }
            Storage::Redis { .. } => return Err(CacheError::NotShared { kind: kind.name() }),
        };
        Ok(Cache {
            store,
            options,
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    /// The entry under `key` at `now_ms`, counting a hit, a negative hit or a miss.
    pub fn get(&self, key: &CacheKey, now_ms: u64) -> Lookup {
        let found = match &self.store {
            Store::Heap(heap) => heap.get(key, now_ms),
            Store::Rocks(rocks) => rocks.get(key, now_ms),
            Store::Off => Lookup::Miss,
        };
        match &found {
            Lookup::Hit(_) => self.stats.hits.inc(),
            Lookup::Negative(_) => self.stats.negative_hits.inc(),
            Lookup::Miss => self.stats.misses.inc(),
        }
        found
    }

    /// Keeps an answer under `key` for the cache's `ttl`.
    pub fn put(&self, key: &CacheKey, value: Vec<u8>, now_ms: u64) {
        self.insert(key, Entry::new(false, now_ms, self.options.ttl, value));
    }

    /// Keeps a failure under `key` for `negative_ttl`; nothing when that is zero.
    pub fn put_negative(&self, key: &CacheKey, value: Vec<u8>, now_ms: u64) {
        if !self.options.negative_ttl.is_zero() {
            self.insert(
                key,
                Entry::new(true, now_ms, self.options.negative_ttl, value),
            );
        }
    }

    fn insert(&self, key: &CacheKey, entry: Entry) {
        match &self.store {
            Store::Heap(heap) => heap.put(key, entry),
            Store::Rocks(rocks) => rocks.put(key, entry),
            Store::Off => {}
        }
    }

    /// Entries kept now (expired ones not yet purged included).
    pub fn entries(&self) -> u64 {
        match &self.store {
            Store::Heap(heap) => heap.entries(),
            Store::Rocks(rocks) => rocks.entries(),
            Store::Off => 0,
        }
    }

    /// Writes what is in memory to disk (RocksDB), so that the files hold every entry.
    pub fn flush(&self) {
        if let Store::Rocks(rocks) = &self.store {
            rocks.flush();
        }
    }
}

/// One entry with its times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub negative: bool,
    pub written_ms: u64,
    pub expires_ms: u64,
    pub value: Bytes,
}

impl Entry {
    fn new(negative: bool, now_ms: u64, ttl: Duration, value: Vec<u8>) -> Self {
        Entry {
            negative,
            written_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl.as_millis() as u64),
            value: Bytes::from(value),
        }
    }

    fn lookup(&self, now_ms: u64) -> Lookup {
        if self.expires_ms <= now_ms {
            Lookup::Miss
        } else if self.negative {
            Lookup::Negative(self.value.clone())
        } else {
            Lookup::Hit(self.value.clone())
        }
    }
}

/// Now, in milliseconds since the Unix epoch: the clock entries' ages are kept in.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
