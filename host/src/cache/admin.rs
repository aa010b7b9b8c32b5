//! `waio cache stats DIR` and `waio cache clear DIR [--older-than D]`: what a RocksDB cache
//! directory holds, and emptying it (all of it, or the entries written before some age).

use std::path::Path;
use std::time::Duration;

use rocksdb::{IteratorMode, Options, WriteBatch, DB};

use super::rocks::{self, decode, index_key, KIND_KEY};
use super::CacheError;

/// What a cache directory holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DirStats {
    /// `result` or `request`.
    pub kind: String,
    /// Answers, failures and entries whose time is up (not purged yet).
    pub answers: u64,
    pub failures: u64,
    pub expired: u64,
    /// Entries that cannot be read.
    pub damaged: u64,
    /// Bytes of keys and entries.
    pub bytes: u64,
    /// When the oldest and newest entries were written, ms since the epoch.
    pub oldest_ms: Option<u64>,
    pub newest_ms: Option<u64>,
}

fn read_error(dir: &Path) -> impl Fn(rocksdb::Error) -> CacheError + '_ {
    move |e| CacheError::Read {
        dir: dir.to_path_buf(),
        cause: e.into_string(),
    }
}

fn check_dir(dir: &Path) -> Result<(), CacheError> {
    if !dir.join("CURRENT").is_file() {
        return Err(CacheError::NoDatabase {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Reads `dir` without taking its lock, so it works while a run uses the cache (the view is
/// the state at the time of opening).
pub fn stats(dir: &Path, now_ms: u64) -> Result<DirStats, CacheError> {
    check_dir(dir)?;
    let mut opts = Options::default();
    // A reader must not create an info log next to the writer's (see checkpoint::store).
    opts.set_db_log_dir(dir.join("CURRENT"));
    let db =
        DB::open_cf_for_read_only(&opts, dir, ["expiry"], false).map_err(|e| CacheError::Open {
            dir: dir.to_path_buf(),
            cause: e.into_string(),
        })?;
    let mut stats = DirStats::default();
    for item in db.iterator(IteratorMode::Start) {
        let (key, value) = item.map_err(read_error(dir))?;
        if &*key == KIND_KEY {
            stats.kind = String::from_utf8_lossy(&value).into_owned();
            continue;
        }
        if key.len() != 32 {
            continue;
        }
        stats.bytes += (key.len() + value.len()) as u64;
        let Ok(entry) = decode(&value) else {
            stats.damaged += 1;
            continue;
        };
        if entry.expires_ms <= now_ms {
            stats.expired += 1;
        } else if entry.negative {
            stats.failures += 1;
        } else {
            stats.answers += 1;
        }
        stats.oldest_ms = Some(
            stats
                .oldest_ms
                .map_or(entry.written_ms, |o| o.min(entry.written_ms)),
        );
        stats.newest_ms = Some(
            stats
                .newest_ms
                .map_or(entry.written_ms, |n| n.max(entry.written_ms)),
        );
    }
    Ok(stats)
}

/// Removes every entry of `dir`, or with `older_than` those written longer ago than that (and
/// those that cannot be read). Takes the cache's lock: not while a run uses it. Returns the
/// entries removed and those left.
pub fn clear(
    dir: &Path,
    older_than: Option<Duration>,
    now_ms: u64,
) -> Result<(u64, u64), CacheError> {
    check_dir(dir)?;
    let db = rocks::open_db(dir, false)?;
    let index = rocks::expiry_cf(&db).map_err(|cause| CacheError::Read {
        dir: dir.to_path_buf(),
        cause,
    })?;
    let cutoff = older_than.map(|age| now_ms.saturating_sub(age.as_millis() as u64));
    let (mut removed, mut left) = (0, 0);
    let mut batch = WriteBatch::default();
    for item in db.iterator(IteratorMode::Start) {
        let (key, value) = item.map_err(read_error(dir))?;
        if key.len() != 32 {
            continue;
        }
        let entry = decode(&value).ok();
        let remove = match (&entry, cutoff) {
            (None, _) | (Some(_), None) => true,
            (Some(e), Some(cutoff)) => e.written_ms < cutoff,
        };
        if !remove {
            left += 1;
            continue;
        }
        if let Some(e) = &entry {
            batch.delete_cf(index, index_key(e.expires_ms, &key));
        }
        batch.delete(&key);
        removed += 1;
    }
    db.write(batch).map_err(read_error(dir))?;
    // Index entries whose entry is gone (a damaged one) go too.
    let mut orphans = WriteBatch::default();
    for item in db.iterator_cf(index, IteratorMode::Start) {
        let (ikey, _) = item.map_err(read_error(dir))?;
        let key = ikey.get(8..).unwrap_or_default();
        if db.get_pinned(key).map_err(read_error(dir))?.is_none() {
            orphans.delete_cf(index, &ikey);
        }
    }
    db.write(orphans).map_err(read_error(dir))?;
    db.flush().map_err(read_error(dir))?;
    Ok((removed, left))
}

/// `waio cache stats DIR`.
pub fn stats_text(dir: &Path) -> Result<String, CacheError> {
    let now = super::now_ms();
    let s = stats(dir, now)?;
    let age = |at: Option<u64>| {
        at.map_or("-".to_string(), |ms| {
            let age = Duration::from_secs(now.saturating_sub(ms) / 1000);
            format!("{} ago", humantime::format_duration(age))
        })
    };
    let mut text = format!("cache {} ({} cache)\n", dir.display(), s.kind);
    text.push_str(&format!(
        "  entries: {} answers, {} remembered failures, {} expired (purged as the cache is used), {} damaged\n",
        s.answers, s.failures, s.expired, s.damaged
    ));
    text.push_str(&format!("  bytes: {}\n", s.bytes));
    text.push_str(&format!(
        "  written: oldest {}, newest {}\n",
        age(s.oldest_ms),
        age(s.newest_ms)
    ));
    Ok(text)
}

/// `waio cache clear DIR [--older-than AGE]`.
pub fn clear_text(dir: &Path, older_than: Option<Duration>) -> Result<String, CacheError> {
    let (removed, left) = clear(dir, older_than, super::now_ms())?;
    let which = match older_than {
        Some(age) => format!(" written more than {} ago", humantime::format_duration(age)),
        None => String::new(),
    };
    Ok(format!(
        "cache {}: removed {removed} entries{which}; {left} left\n",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::{Cache, CacheKey, CacheKind, CacheOptions, Lookup, Storage};

    fn cache(dir: &Path) -> Cache {
        let options = CacheOptions {
            storage: Storage::RocksDb {
                path: dir.to_path_buf(),
            },
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(60),
            max_entries: 100,
            max_bytes: None,
        };
        Cache::open(options, CacheKind::Request, Arc::default()).unwrap()
    }

    #[test]
    fn stats_count_what_is_kept_and_clear_removes_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let hour = 3_600_000;
        // In 2096, so that an open's purge on the real clock leaves the entries alone.
        let base = 4_000_000_000_000 + 20 * hour;
        {
            let cache = cache(dir.path());
            cache.put(&CacheKey::of(&[b"old"]), b"a".to_vec(), base - 10 * hour);
            cache.put(&CacheKey::of(&[b"new"]), b"b".to_vec(), base);
            cache.put_negative(&CacheKey::of(&[b"bad"]), b"c".to_vec(), base);
        }
        let s = stats(dir.path(), base).unwrap();
        assert_eq!(s.kind, "request");
        // The oldest answer lived an hour: its time is up.
        assert_eq!((s.answers, s.failures, s.expired), (1, 1, 1));
        assert_eq!(s.oldest_ms, Some(base - 10 * hour));
        // Entries written more than 5 hours before "now" go.
        assert_eq!(
            clear(dir.path(), Some(Duration::from_millis(5 * hour)), base).unwrap(),
            (1, 2)
        );
        let cache = cache(dir.path());
        assert_eq!(
            cache.get(&CacheKey::of(&[b"old"]), base - 10 * hour),
            Lookup::Miss
        );
        assert!(matches!(
            cache.get(&CacheKey::of(&[b"new"]), base),
            Lookup::Hit(_)
        ));
        assert_eq!(cache.entries(), 2);
        drop(cache);
        assert_eq!(clear(dir.path(), None, base).unwrap(), (2, 0));
        assert_eq!(cache_entries(dir.path()), 0);
    }

    fn cache_entries(dir: &Path) -> u64 {
        cache(dir).entries()
    }

    #[test]
    fn a_directory_without_a_cache_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let message = stats(dir.path(), 0).unwrap_err().to_string();
        assert!(message.contains("holds no waio cache"), "{message}");
        assert!(message.contains(&dir.path().display().to_string()));
    }
}
