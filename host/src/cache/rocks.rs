//! Entries in a RocksDB database of their own: they survive the process (a restart, a
//! SIGKILL), so a replayed record is answered without paying the provider again.
//!
//! Layout: the default column family maps a key (32 bytes) to an entry (`W`, format 1,
//! negative flag, written and expiry times in ms, the value); an `expiry` column family
//! indexes the entries by expiry time (8 bytes big-endian, then the key) with the entry's size,
//! so that the entries that expire first are found (and given up first) without a scan, and
//! the count and size are known at open by reading the index alone. A key of another length
//! in the default family is metadata: `waio-cache:kind` says what the cache is for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB};

use super::codec::{Damaged, Reader, Writer};
use super::{CacheError, CacheKey, CacheKind, CacheOptions, CacheStats, Entry, Lookup};

const EXPIRY: &str = "expiry";
pub(super) const KIND_KEY: &[u8] = b"waio-cache:kind";
const FORMAT: u8 = 1;
/// Every this many puts, entries whose time is up are purged from the front of the index.
const PURGE_EVERY: u64 = 512;

pub(super) struct RocksStore {
    db: DB,
    dir: PathBuf,
    max_entries: u64,
    max_bytes: u64,
    tally: Mutex<Tally>,
    /// Turned off after a read or write failed: the cache answers nothing more.
    off: AtomicBool,
    stats: Arc<CacheStats>,
}

/// The entries kept and their bytes, kept in step with the index.
#[derive(Default)]
struct Tally {
    entries: u64,
    bytes: u64,
    puts: u64,
}

/// RocksDB reports a held lock as an I/O error on the `LOCK` file.
fn is_lock_error(e: &rocksdb::Error) -> bool {
    let msg = e.to_string();
    msg.contains("/LOCK") || msg.contains("lock file") || msg.contains("lock hold")
}

/// Opens the database in `dir` with its column families (creating it when `create`).
pub(super) fn open_db(dir: &Path, create: bool) -> Result<DB, CacheError> {
    let mut opts = Options::default();
    opts.create_if_missing(create);
    opts.create_missing_column_families(create);
    opts.set_keep_log_file_num(2);
    opts.set_max_log_file_size(1 << 20);
    let families = vec![ColumnFamilyDescriptor::new(EXPIRY, Options::default())];
    DB::open_cf_descriptors(&opts, dir, families).map_err(|cause| {
        if is_lock_error(&cause) {
            CacheError::InUse {
                dir: dir.to_path_buf(),
            }
        } else {
            CacheError::Open {
                dir: dir.to_path_buf(),
                cause: cause.into_string(),
            }
        }
    })
}

pub(super) fn expiry_cf(db: &DB) -> Result<&ColumnFamily, String> {
    db.cf_handle(EXPIRY)
        .ok_or_else(|| "its expiry index is missing".to_string())
}

pub(super) fn encode(entry: &Entry) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(b'W')
        .u8(FORMAT)
        .u8(entry.negative as u8)
        .u64(entry.written_ms)
        .u64(entry.expires_ms)
        .bytes(&entry.value);
    w.finish()
}

pub(super) fn decode(bytes: &[u8]) -> Result<Entry, Damaged> {
    let mut r = Reader::new(bytes);
    if r.u8()? != b'W' || r.u8()? != FORMAT {
        return Err(Damaged("it is not in waio's cache format"));
    }
    let negative = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(Damaged("its kind is neither an answer nor a failure")),
    };
    let written_ms = r.u64()?;
    let expires_ms = r.u64()?;
    let value = r.bytes()?.to_vec().into();
    r.end()?;
    Ok(Entry {
        negative,
        written_ms,
        expires_ms,
        value,
    })
}

pub(super) fn index_key(expires_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// An index entry's expiry time, key and size.
pub(super) fn read_index(key: &[u8], value: &[u8]) -> Option<(u64, [u8; 32], u64)> {
    let expires = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let entry_key: [u8; 32] = key.get(8..)?.try_into().ok()?;
    let size = u32::from_le_bytes(value.try_into().ok()?);
    Some((expires, entry_key, u64::from(size)))
}

impl RocksStore {
    pub(super) fn open(
        dir: &Path,
        kind: CacheKind,
        options: &CacheOptions,
        stats: Arc<CacheStats>,
    ) -> Result<Self, CacheError> {
        let open_error = |cause: String| CacheError::Open {
            dir: dir.to_path_buf(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = open_db(dir, true)?;
        match db.get(KIND_KEY).map_err(|e| open_error(e.into_string()))? {
            None => db
                .put(KIND_KEY, kind.name())
                .map_err(|e| open_error(e.into_string()))?,
            Some(found) if found == kind.name().as_bytes() => {}
            Some(found) => {
                return Err(CacheError::WrongKind {
                    dir: dir.to_path_buf(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    wanted: kind.name(),
                })
            }
        }
        let mut tally = Tally::default();
        {
            let index = expiry_cf(&db).map_err(open_error)?;
            for item in db.iterator_cf(index, IteratorMode::Start) {
                let (key, value) = item.map_err(|e| open_error(e.into_string()))?;
                let (_, _, size) = read_index(&key, &value)
                    .ok_or_else(|| open_error("a damaged expiry index entry".into()))?;
                tally.entries += 1;
                tally.bytes += size;
            }
        }
        stats.entries.set(tally.entries as i64);
        let store = RocksStore {
            db,
            dir: dir.to_path_buf(),
            max_entries: options.max_entries,
            max_bytes: options.max_bytes.unwrap_or(u64::MAX),
            tally: Mutex::new(tally),
            off: AtomicBool::new(false),
            stats,
        };
        store.make_room(super::now_ms(), true);
        Ok(store)
    }

    /// Reports a failure once and turns the cache off.
    fn broken(&self, cause: &str) {
        if !self.off.swap(true, Ordering::Relaxed) {
            self.stats.broken.set();
            tracing::warn!(
                "the cache in {} cannot be read ({cause}); the run goes on without it",
                self.dir.display()
            );
        }
    }

    pub(super) fn get(&self, key: &CacheKey, now_ms: u64) -> Lookup {
        if self.off.load(Ordering::Relaxed) {
            return Lookup::Miss;
        }
        match self.db.get_pinned(key.0) {
            Ok(None) => Lookup::Miss,
            Ok(Some(bytes)) => match decode(&bytes) {
                Ok(entry) => entry.lookup(now_ms),
                Err(damaged) => {
                    self.broken(&damaged.to_string());
                    Lookup::Miss
                }
            },
            Err(e) => {
                self.broken(&e.into_string());
                Lookup::Miss
            }
        }
    }

    pub(super) fn put(&self, key: &CacheKey, entry: Entry) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let Ok(index) = expiry_cf(&self.db) else {
            return self.broken("its expiry index is missing");
        };
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::default();
        // An entry written again (it had expired) leaves the index at its old time.
        match self.db.get_pinned(key.0) {
            Ok(Some(old)) => {
                if let Ok(entry) = decode(&old) {
                    batch.delete_cf(index, index_key(entry.expires_ms, &key.0));
                    tally.entries = tally.entries.saturating_sub(1);
                    tally.bytes = tally.bytes.saturating_sub((32 + old.len()) as u64);
                }
            }
            Ok(None) => {}
            Err(e) => return self.broken(&e.into_string()),
        }
        let value = encode(&entry);
        let size = (32 + value.len()) as u64;
        batch.put(key.0, &value);
        batch.put_cf(
            index,
            index_key(entry.expires_ms, &key.0),
            (size as u32).to_le_bytes(),
        );
        if let Err(e) = self.db.write(batch) {
            return self.broken(&e.into_string());
        }
        tally.entries += 1;
        tally.bytes += size;
        tally.puts += 1;
        let purge = tally.puts.is_multiple_of(PURGE_EVERY);
        drop(tally);
        self.make_room(entry.written_ms, purge);
    }

    /// Gives up entries from the front of the index (the first to expire) while the cache is
    /// over its bound, and, with `purge`, those whose time is up.
    fn make_room(&self, now_ms: u64, purge: bool) {
        let Ok(index) = expiry_cf(&self.db) else {
            return;
        };
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let over = |t: &Tally| t.entries > self.max_entries || t.bytes > self.max_bytes;
        if !over(&tally) && !purge {
            self.stats.entries.set(tally.entries as i64);
            return;
        }
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(index, IteratorMode::Start) {
            let Ok((ikey, ivalue)) = item else { break };
            let Some((expires, key, size)) = read_index(&ikey, &ivalue) else {
                break;
            };
            let evict = over(&tally);
            if !(evict || purge && expires <= now_ms) {
                break;
            }
            if evict && expires > now_ms {
                self.stats.evictions.inc();
            }
            batch.delete_cf(index, &ikey);
            batch.delete(key);
            tally.entries = tally.entries.saturating_sub(1);
            tally.bytes = tally.bytes.saturating_sub(size);
        }
        if let Err(e) = self.db.write(batch) {
            self.broken(&e.into_string());
        }
        self.stats.entries.set(tally.entries as i64);
    }

    pub(super) fn entries(&self) -> u64 {
        self.tally.lock().map_or(0, |t| t.entries)
    }

    pub(super) fn flush(&self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!("cannot flush the cache in {}: {e}", self.dir.display());
        }
    }
}

impl Drop for RocksStore {
    /// The entries go to table files at the end of a run (not only the write-ahead log), so
    /// that `waio cache stats` and the next run read them without replaying the log.
    fn drop(&mut self) {
        if !self.off.load(Ordering::Relaxed) {
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::Storage;

    fn options(dir: &Path, max_entries: u64, max_bytes: Option<u64>) -> CacheOptions {
        CacheOptions {
            storage: Storage::RocksDb {
                path: dir.to_path_buf(),
            },
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_entries,
            max_bytes,
        }
    }

    /// Test times are after this (in 2096): an open purges entries whose time is up on the
    /// real clock, which must not touch them.
    const BASE: u64 = 4_000_000_000_000;

    fn entry(written_ms: u64, ttl_ms: u64, value: &[u8]) -> Entry {
        Entry {
            negative: false,
            written_ms: BASE + written_ms,
            expires_ms: BASE + written_ms + ttl_ms,
            value: value.to_vec().into(),
        }
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::of(&[&[n]])
    }

    fn open(dir: &Path, max_entries: u64) -> RocksStore {
        RocksStore::open(
            dir,
            CacheKind::Result,
            &options(dir, max_entries, None),
            Arc::default(),
        )
        .expect("open")
    }

    #[test]
    fn entries_survive_a_reopen_with_their_times() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), 10);
            store.put(&key(1), entry(1_000, 60_000, b"kept"));
            store.put(&key(2), entry(1_000, 10, b"short"));
        }
        let store = open(dir.path(), 10);
        assert_eq!(
            store.get(&key(1), BASE + 2_000),
            Lookup::Hit(b"kept".to_vec().into())
        );
        assert_eq!(store.get(&key(1), BASE + 61_000), Lookup::Miss);
        assert_eq!(store.get(&key(2), BASE + 1_010), Lookup::Miss);
    }

    #[test]
    fn the_bound_gives_up_the_entries_that_expire_first_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(CacheStats::default());
        let store = RocksStore::open(
            dir.path(),
            CacheKind::Result,
            &options(dir.path(), 2, None),
            Arc::clone(&stats),
        )
        .unwrap();
        for n in 1..=4u8 {
            store.put(&key(n), entry(u64::from(n) * 10, 60_000, &[n]));
        }
        assert_eq!(store.entries(), 2);
        assert_eq!(stats.evictions.get(), 2);
        assert_eq!(store.get(&key(1), BASE + 100), Lookup::Miss);
        assert_eq!(store.get(&key(2), BASE + 100), Lookup::Miss);
        assert_eq!(store.get(&key(4), BASE + 100), Lookup::Hit(vec![4].into()));
        // Writing a key again replaces its entry: still two.
        store.put(&key(4), entry(200, 60_000, b"again"));
        assert_eq!(store.entries(), 2);
        assert_eq!(store.get(&key(3), BASE + 300), Lookup::Hit(vec![3].into()));
    }

    #[test]
    fn a_bound_in_bytes_holds_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(
            dir.path(),
            CacheKind::Result,
            &options(dir.path(), 1000, Some(400)),
            Arc::default(),
        )
        .unwrap();
        for n in 0..10u8 {
            store.put(&key(n), entry(u64::from(n), 60_000, &[n; 100]));
        }
        assert!(store.entries() <= 2, "{}", store.entries());
        assert!(matches!(store.get(&key(9), BASE + 20), Lookup::Hit(_)));
    }

    #[test]
    fn a_directory_of_the_other_kind_or_locked_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10);
        let locked = RocksStore::open(
            dir.path(),
            CacheKind::Result,
            &options(dir.path(), 10, None),
            Arc::default(),
        );
        assert!(
            matches!(locked, Err(CacheError::InUse { .. })),
            "{:?}",
            locked.err()
        );
        drop(store);
        let other = RocksStore::open(
            dir.path(),
            CacheKind::Request,
            &options(dir.path(), 10, None),
            Arc::default(),
        );
        let message = other.err().expect("refused").to_string();
        assert!(
            message.contains("holds a result cache, not a request cache"),
            "{message}"
        );
    }

    #[test]
    fn a_damaged_value_turns_the_cache_off_instead_of_answering() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(CacheStats::default());
        let store = RocksStore::open(
            dir.path(),
            CacheKind::Result,
            &options(dir.path(), 10, None),
            Arc::clone(&stats),
        )
        .unwrap();
        store.put(&key(1), entry(0, 60_000, b"good"));
        store.db.put(key(2).0, b"Wgarbage").unwrap();
        assert_eq!(store.get(&key(2), BASE + 1), Lookup::Miss);
        assert!(stats.broken.get());
        // Off: even the good entry is not served, and nothing more is written.
        assert_eq!(store.get(&key(1), BASE + 1), Lookup::Miss);
    }
}
