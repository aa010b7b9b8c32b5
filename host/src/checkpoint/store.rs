//! Checkpoints in a RocksDB directory.
//!
//! # Key layout (stable: tools and tests read and damage checkpoints through it)
//!
//! All keys are ASCII; `{id:020}` is the checkpoint id as 20 zero-padded decimal digits, so
//! byte order is numeric order; `{index:04}` is the operator's position in the chain, 4 digits.
//!
//! | key                                       | value                                        |
//! |-------------------------------------------|----------------------------------------------|
//! | `checkpoint/{id:020}/meta`                | `codec::encode_meta` of the checkpoint       |
//! | `checkpoint/{id:020}/operator/{index:04}` | `codec::encode_elements` of operator `index` |
//! | `checkpoint/{id:020}/commit`              | commit marker (below)                        |
//!
//! A checkpoint's keys are written in one `WriteBatch` with `sync = true`, so a crash leaves
//! either all of them or none. The commit marker is 41 bytes: a version byte (1), the number of
//! data keys (every key of the checkpoint except `commit`) as a little-endian `u64`, and the
//! SHA-256 of those data keys and values in key order, each key and each value fed to the hash
//! as a little-endian `u64` length followed by its bytes.
//!
//! Reading a checkpoint: no `commit` key means [`StoredStatus::Partial`]; a malformed marker, a
//! different key count, a hash mismatch, a missing or unexpected key, or a value that does not
//! decode means [`StoredStatus::Corrupt`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use sha2::{Digest, Sha256};

use crate::checkpoint::codec::{self, CodecError};
use crate::checkpoint::Checkpoint;

const ROOT: &str = "checkpoint/";
const META: &str = "meta";
const COMMIT: &str = "commit";
const OPERATOR: &str = "operator/";
const MARKER_VERSION: u8 = 1;
const MARKER_LEN: usize = 1 + 8 + 32;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {} is in use by another waio process", dir.display())]
    InUse { dir: PathBuf },
    #[error("checkpoint directory {} does not exist", dir.display())]
    NotFound { dir: PathBuf },
    #[error("{} holds no checkpoint database", dir.display())]
    NoDatabase { dir: PathBuf },
    #[error("cannot create checkpoint directory {}: {cause}", dir.display())]
    CreateDir { dir: PathBuf, cause: std::io::Error },
    #[error("cannot open checkpoint directory {}: {cause}", dir.display())]
    Open { dir: PathBuf, cause: rocksdb::Error },
    #[error("cannot read checkpoints in {}: {cause}", dir.display())]
    Read { dir: PathBuf, cause: rocksdb::Error },
    #[error("cannot write checkpoint {id} to {}: {cause}", dir.display())]
    Write {
        dir: PathBuf,
        id: u64,
        cause: rocksdb::Error,
    },
    #[error("cannot delete old checkpoints in {}: {cause}", dir.display())]
    Prune { dir: PathBuf, cause: rocksdb::Error },
    #[error("checkpoint {id} already exists in {}", dir.display())]
    AlreadyExists { dir: PathBuf, id: u64 },
    #[error("checkpoint {id} does not exist in {}", dir.display())]
    Missing { dir: PathBuf, id: u64 },
    #[error("checkpoint {id} in {} is partial (no commit marker): it never completed", dir.display())]
    Partial { dir: PathBuf, id: u64 },
    #[error("checkpoint {id} in {} is corrupt: {why}", dir.display())]
    Corrupt { dir: PathBuf, id: u64, why: String },
    /// The checksum holds but a value does not decode: most likely written by another version.
    #[error("checkpoint {id} in {}: {part} cannot be decoded: {cause}", dir.display())]
    Codec {
        dir: PathBuf,
        id: u64,
        part: String,
        cause: CodecError,
    },
    /// Checkpoints exist but none is usable, and at least one was corrupt: starting over could
    /// repeat output that a lost checkpoint already committed.
    #[error("no usable checkpoint in {}: {details}", dir.display())]
    NoUsable { dir: PathBuf, details: String },
    /// `inspect` without an id on a store with no complete checkpoint.
    #[error("there is no complete checkpoint in {}", dir.display())]
    NoCheckpoint { dir: PathBuf },
    #[error("checkpoint ids in {} are exhausted", dir.display())]
    IdsExhausted { dir: PathBuf },
}

/// What is stored under one checkpoint id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredStatus {
    Complete,
    /// Data without a commit marker: the checkpoint never completed.
    Partial,
    /// Checksum or decode failure, with why.
    Corrupt(String),
}

/// One line of `list`. For a partial or corrupt checkpoint the fields come from its meta when
/// that still decodes (zero otherwise) and `in_flight` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSummary {
    pub id: u64,
    pub created_at_ms: i64,
    pub status: StoredStatus,
    pub finished: bool,
    pub source_lines: u64,
    pub source_offset: u64,
    /// Per operator name: records in flight.
    pub in_flight: Vec<(String, usize)>,
}

pub struct CheckpointStore {
    dir: PathBuf,
    db: DB,
}

/// The outcome of reading one checkpoint id.
enum Verdict {
    Complete(Checkpoint),
    Partial,
    Corrupt(String),
    /// Checksum fine, but `part` does not decode.
    Undecodable {
        part: String,
        source: CodecError,
    },
}

/// The keys and values of one checkpoint, in key order.
type RawEntries = Vec<(Vec<u8>, Vec<u8>)>;

struct Examined {
    verdict: Verdict,
    /// The meta, when it decodes, whatever the verdict: for `list`.
    meta: Option<Checkpoint>,
}

impl Verdict {
    fn status(&self) -> StoredStatus {
        match self {
            Verdict::Complete(_) => StoredStatus::Complete,
            Verdict::Partial => StoredStatus::Partial,
            Verdict::Corrupt(why) => StoredStatus::Corrupt(why.clone()),
            Verdict::Undecodable { part, source } => {
                StoredStatus::Corrupt(format!("{part} cannot be decoded: {source}"))
            }
        }
    }

    /// How `latest` describes a checkpoint it skips.
    fn describe(&self) -> String {
        match self {
            Verdict::Complete(_) => "complete".into(),
            Verdict::Partial => "partial (no commit marker)".into(),
            Verdict::Corrupt(why) => format!("corrupt ({why})"),
            Verdict::Undecodable { part, source } => {
                format!("corrupt ({part} cannot be decoded: {source})")
            }
        }
    }
}

fn prefix(id: u64) -> String {
    format!("{ROOT}{id:020}/")
}

fn meta_key(id: u64) -> String {
    format!("{}{META}", prefix(id))
}

fn operator_key(id: u64, index: usize) -> String {
    format!("{}{OPERATOR}{index:04}", prefix(id))
}

fn commit_key(id: u64) -> String {
    format!("{}{COMMIT}", prefix(id))
}

/// The id in a key of the layout, if it has one.
fn parse_id(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(ROOT.as_bytes())?;
    let digits = rest.get(..20)?;
    if rest.get(20) != Some(&b'/') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn data_hash<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (key, value) in entries {
        // Length framing so that moving bytes between a key and its value changes the hash.
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value);
    }
    hasher.finalize().into()
}

fn commit_marker(count: usize, hash: &[u8; 32]) -> Vec<u8> {
    let mut marker = Vec::with_capacity(MARKER_LEN);
    marker.push(MARKER_VERSION);
    marker.extend_from_slice(&(count as u64).to_le_bytes());
    marker.extend_from_slice(hash);
    marker
}

/// (data key count, hash), or `None` if the marker is malformed.
fn parse_marker(marker: &[u8]) -> Option<(u64, &[u8])> {
    if marker.len() != MARKER_LEN || marker.first() != Some(&MARKER_VERSION) {
        return None;
    }
    let count = u64::from_le_bytes(marker.get(1..9)?.try_into().ok()?);
    Some((count, marker.get(9..)?))
}

/// RocksDB reports a held lock as an I/O error on the `LOCK` file: "While lock file: …/LOCK:
/// Resource temporarily unavailable" from another process, "lock hold by current process" from
/// this one.
fn is_lock_error(e: &rocksdb::Error) -> bool {
    let msg = e.to_string();
    msg.contains("/LOCK") || msg.contains("lock file") || msg.contains("lock hold")
}

fn lossy(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl CheckpointStore {
    /// Opens (creating if needed) the store for a running pipeline, which takes RocksDB's lock.
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::CreateDir {
            dir: dir.to_path_buf(),
            cause: source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // The info log is only for debugging RocksDB itself: keep little of it.
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        let db = DB::open(&opts, dir).map_err(|source| {
            if is_lock_error(&source) {
                CheckpointError::InUse {
                    dir: dir.to_path_buf(),
                }
            } else {
                CheckpointError::Open {
                    dir: dir.to_path_buf(),
                    cause: source,
                }
            }
        })?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            db,
        })
    }

    /// Opens an existing store without its lock, so `list` and `inspect` work while a run holds
    /// it; the view is the state at the time of opening.
    pub fn open_read_only(dir: &Path) -> Result<Self, CheckpointError> {
        if !dir.exists() {
            return Err(CheckpointError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        // Checked here because RocksDB's own message for it ("No such file … CURRENT") is obscure.
        if !dir.join("CURRENT").is_file() {
            return Err(CheckpointError::NoDatabase {
                dir: dir.to_path_buf(),
            });
        }
        let mut opts = Options::default();
        // A reader that creates its info log renames the running writer's `LOG` out of the way.
        // A log directory below the `CURRENT` file can never be created, and RocksDB then runs
        // without an info log, which it allows.
        opts.set_db_log_dir(dir.join("CURRENT"));
        let db =
            DB::open_for_read_only(&opts, dir, false).map_err(|source| CheckpointError::Open {
                dir: dir.to_path_buf(),
                cause: source,
            })?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            db,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// For tests that damage checkpoints through the raw layout.
    #[cfg(test)]
    pub(crate) fn raw_db(&self) -> &DB {
        &self.db
    }

    /// Stores `cp` atomically and durably, then deletes the checkpoints older than the newest
    /// `retained` (at least 1) complete ones; returns the bytes written (keys and values). An
    /// error means `cp` was not stored; a failure to delete old checkpoints is only logged.
    pub fn save(&self, cp: &Checkpoint, retained: usize) -> Result<u64, CheckpointError> {
        let id = cp.id;
        // Refuse to overwrite: stale keys of an earlier checkpoint with the same id would mix in.
        if !self.read_raw(id)?.is_empty() {
            return Err(CheckpointError::AlreadyExists {
                dir: self.dir.clone(),
                id,
            });
        }
        let mut data: Vec<(String, Vec<u8>)> = Vec::with_capacity(cp.operators.len() + 1);
        data.push((meta_key(id), codec::encode_meta(cp)));
        for (index, op) in cp.operators.iter().enumerate() {
            data.push((
                operator_key(id, index),
                codec::encode_elements(&op.elements),
            ));
        }
        // The hash is over key order, which is RocksDB's (bytewise) iteration order.
        data.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let hash = data_hash(data.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())));
        let bytes = data
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        let mut batch = WriteBatch::default();
        for (key, value) in &data {
            batch.put(key, value);
        }
        batch.put(commit_key(id), commit_marker(data.len(), &hash));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|source| CheckpointError::Write {
                dir: self.dir.clone(),
                id,
                cause: source,
            })?;
        // The checkpoint is durable now; failing to delete old ones must not make it look
        // failed (the caller would not commit the sink), and the next save retries.
        if let Err(e) = self.prune(retained.max(1)) {
            tracing::warn!("{e}");
        }
        Ok(bytes)
    }

    /// The newest complete and valid checkpoint, with a warning for every newer one skipped.
    /// `None` if there is none and nothing was corrupt (an empty store, or only checkpoints that
    /// never completed); an error if a corrupt checkpoint leaves nothing usable.
    pub fn latest(&self) -> Result<Option<(Checkpoint, Vec<String>)>, CheckpointError> {
        let mut skipped: Vec<(u64, String)> = Vec::new();
        let mut any_corrupt = false;
        for id in self.ids()?.into_iter().rev() {
            let examined = self.examine(id)?;
            match examined.verdict {
                Verdict::Complete(cp) => {
                    let warnings = skipped
                        .into_iter()
                        .map(|(bad, what)| {
                            format!("checkpoint {bad} is {what}: using checkpoint {id}")
                        })
                        .collect();
                    return Ok(Some((cp, warnings)));
                }
                other => {
                    any_corrupt |= !matches!(other, Verdict::Partial);
                    skipped.push((id, other.describe()));
                }
            }
        }
        if any_corrupt {
            let details = skipped
                .iter()
                .map(|(id, what)| format!("checkpoint {id} is {what}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(CheckpointError::NoUsable {
                dir: self.dir.clone(),
                details,
            });
        }
        Ok(None)
    }

    /// Checkpoint `id`, which must be complete and valid.
    pub fn load(&self, id: u64) -> Result<Checkpoint, CheckpointError> {
        let dir = self.dir.clone();
        let raw = self.read_raw(id)?;
        if raw.is_empty() {
            return Err(CheckpointError::Missing { dir, id });
        }
        match judge(id, &raw).verdict {
            Verdict::Complete(cp) => Ok(cp),
            Verdict::Partial => Err(CheckpointError::Partial { dir, id }),
            Verdict::Corrupt(why) => Err(CheckpointError::Corrupt { dir, id, why }),
            Verdict::Undecodable { part, source } => Err(CheckpointError::Codec {
                dir,
                id,
                part,
                cause: source,
            }),
        }
    }

    /// Every checkpoint id present, ascending, with its status.
    pub fn list(&self) -> Result<Vec<CheckpointSummary>, CheckpointError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let examined = self.examine(id)?;
            let status = examined.verdict.status();
            let in_flight = match &examined.verdict {
                Verdict::Complete(cp) => cp
                    .operators
                    .iter()
                    .map(|op| (op.name.clone(), op.records_in_flight()))
                    .collect(),
                _ => Vec::new(),
            };
            let summary = match examined.meta {
                Some(meta) => CheckpointSummary {
                    id,
                    created_at_ms: meta.created_at_ms,
                    status,
                    finished: meta.finished,
                    source_lines: meta.source.lines,
                    source_offset: meta.source.offset,
                    in_flight,
                },
                None => CheckpointSummary {
                    id,
                    created_at_ms: 0,
                    status,
                    finished: false,
                    source_lines: 0,
                    source_offset: 0,
                    in_flight,
                },
            };
            out.push(summary);
        }
        Ok(out)
    }

    /// One more than the highest id present, whatever its status; 1 for an empty store.
    pub fn next_id(&self) -> Result<u64, CheckpointError> {
        match self.ids()?.last() {
            None => Ok(1),
            Some(id) => id
                .checked_add(1)
                .ok_or_else(|| CheckpointError::IdsExhausted {
                    dir: self.dir.clone(),
                }),
        }
    }

    fn read_error(&self, source: rocksdb::Error) -> CheckpointError {
        CheckpointError::Read {
            dir: self.dir.clone(),
            cause: source,
        }
    }

    /// The ids present, ascending. Reads keys only and jumps over each checkpoint's keys.
    fn ids(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids = Vec::new();
        let mut it = self.db.raw_iterator();
        it.seek(ROOT);
        while let Some(key) = it.key() {
            if !key.starts_with(ROOT.as_bytes()) {
                break;
            }
            match parse_id(key) {
                Some(id) => {
                    ids.push(id);
                    // '0' follows '/': the first key after every `checkpoint/{id:020}/…`.
                    it.seek(format!("{ROOT}{id:020}0"));
                }
                // Not of the layout (nothing writes such keys): step over it.
                None => it.next(),
            }
        }
        it.status().map_err(|e| self.read_error(e))?;
        Ok(ids)
    }

    /// All keys and values of checkpoint `id`, in key order.
    fn read_raw(&self, id: u64) -> Result<RawEntries, CheckpointError> {
        let prefix = prefix(id);
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator();
        it.seek(&prefix);
        while let Some((key, value)) = it.item() {
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
            it.next();
        }
        it.status().map_err(|e| self.read_error(e))?;
        Ok(out)
    }

    fn examine(&self, id: u64) -> Result<Examined, CheckpointError> {
        Ok(judge(id, &self.read_raw(id)?))
    }

    /// Deletes every checkpoint older than the `retained`-th newest complete one.
    fn prune(&self, retained: usize) -> Result<(), CheckpointError> {
        let mut complete = 0;
        let mut cutoff = None;
        for id in self.ids()?.into_iter().rev() {
            if matches!(self.examine(id)?.verdict, Verdict::Complete(_)) {
                complete += 1;
                if complete == retained {
                    cutoff = Some(id);
                    break;
                }
            }
        }
        let Some(cutoff) = cutoff else {
            return Ok(());
        };
        let end = prefix(cutoff);
        let mut batch = WriteBatch::default();
        let mut it = self.db.raw_iterator();
        it.seek(ROOT);
        while let Some(key) = it.key() {
            if key >= end.as_bytes() {
                break;
            }
            batch.delete(key);
            it.next();
        }
        it.status().map_err(|e| self.read_error(e))?;
        drop(it);
        if batch.is_empty() {
            return Ok(());
        }
        // Not synced: a prune lost in a crash is redone by the next save.
        self.db
            .write(batch)
            .map_err(|source| CheckpointError::Prune {
                dir: self.dir.clone(),
                cause: source,
            })
    }
}

/// Decides what the keys of checkpoint `id` hold.
fn judge(id: u64, raw: &[(Vec<u8>, Vec<u8>)]) -> Examined {
    let commit = commit_key(id);
    let meta_key = meta_key(id);
    let data: BTreeMap<&[u8], &[u8]> = raw
        .iter()
        .filter(|(k, _)| k.as_slice() != commit.as_bytes())
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let meta_result = data.get(meta_key.as_bytes()).map(|v| codec::decode_meta(v));
    let meta = match &meta_result {
        Some(Ok(meta)) => Some(meta.clone()),
        _ => None,
    };
    let verdict = judge_data(id, raw, &commit, &data, meta_result);
    Examined { verdict, meta }
}

fn judge_data(
    id: u64,
    raw: &[(Vec<u8>, Vec<u8>)],
    commit: &str,
    data: &BTreeMap<&[u8], &[u8]>,
    meta: Option<Result<Checkpoint, CodecError>>,
) -> Verdict {
    let Some((_, marker)) = raw.iter().find(|(k, _)| k.as_slice() == commit.as_bytes()) else {
        return Verdict::Partial;
    };
    let Some((count, hash)) = parse_marker(marker) else {
        return Verdict::Corrupt("malformed commit marker".into());
    };
    if count != data.len() as u64 {
        return Verdict::Corrupt(format!(
            "commit marker counts {count} data keys, found {}",
            data.len()
        ));
    }
    if data_hash(data.iter().map(|(k, v)| (*k, *v))) != hash {
        return Verdict::Corrupt("checksum mismatch".into());
    }
    let mut cp = match meta {
        None => return Verdict::Corrupt("meta is missing".into()),
        Some(Err(source)) => {
            return Verdict::Undecodable {
                part: "meta".into(),
                source,
            }
        }
        Some(Ok(cp)) => cp,
    };
    if cp.id != id {
        return Verdict::Corrupt(format!("its meta names checkpoint {}", cp.id));
    }
    for (index, op) in cp.operators.iter_mut().enumerate() {
        let Some(value) = data.get(operator_key(id, index).as_bytes()) else {
            return Verdict::Corrupt(format!("operator {index} ({}) is missing", op.name));
        };
        match codec::decode_elements(value) {
            Ok(elements) => op.elements = elements,
            Err(source) => {
                return Verdict::Undecodable {
                    part: format!("operator {index} ({})", op.name),
                    source,
                }
            }
        }
    }
    if data.len() != cp.operators.len() + 1 {
        let expected: Vec<String> = std::iter::once(meta_key(id))
            .chain((0..cp.operators.len()).map(|i| operator_key(id, i)))
            .collect();
        let extra = data
            .keys()
            .find(|k| !expected.iter().any(|e| e.as_bytes() == **k))
            .map(|k| lossy(k))
            .unwrap_or_default();
        return Verdict::Corrupt(format!("unexpected key {extra}"));
    }
    Verdict::Complete(cp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::codec::tests::sample;

    fn checkpoint(id: u64) -> Checkpoint {
        let mut cp = sample();
        cp.id = id;
        cp.created_at_ms += id as i64 * 1_000;
        cp.source.lines = id * 10;
        cp.source.offset = id * 100;
        cp
    }

    fn ids(store: &CheckpointStore) -> Vec<u64> {
        store.list().unwrap().iter().map(|s| s.id).collect()
    }

    #[test]
    fn save_latest_list_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/cp");
        let store = CheckpointStore::open(&dir).unwrap();
        assert_eq!(store.dir(), dir);
        assert_eq!(store.next_id().unwrap(), 1);
        assert!(store.latest().unwrap().is_none());
        assert!(store.list().unwrap().is_empty());

        for id in 1..=3 {
            store.save(&checkpoint(id), 5).unwrap();
        }
        assert_eq!(store.next_id().unwrap(), 4);
        let (cp, warnings) = store.latest().unwrap().unwrap();
        assert_eq!(cp, checkpoint(3));
        assert!(warnings.is_empty());
        assert_eq!(store.load(2).unwrap(), checkpoint(2));

        let list = store.list().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            list[1],
            CheckpointSummary {
                id: 2,
                created_at_ms: checkpoint(2).created_at_ms,
                status: StoredStatus::Complete,
                finished: false,
                source_lines: 20,
                source_offset: 200,
                in_flight: vec![("triage".into(), 2), ("answer".into(), 0)],
            }
        );

        assert!(matches!(
            store.save(&checkpoint(3), 5),
            Err(CheckpointError::AlreadyExists { id: 3, .. })
        ));
        assert!(matches!(
            store.load(9),
            Err(CheckpointError::Missing { id: 9, .. })
        ));

        // Survives reopening.
        drop(store);
        let store = CheckpointStore::open(&dir).unwrap();
        assert_eq!(store.load(3).unwrap(), checkpoint(3));
    }

    #[test]
    fn retention_prunes_older_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path()).unwrap();
        for id in 1..=5 {
            store.save(&checkpoint(id), 2).unwrap();
        }
        assert_eq!(ids(&store), vec![4, 5]);
        store.save(&checkpoint(6), 0).unwrap(); // 0 behaves as 1
        assert_eq!(ids(&store), vec![6]);
        assert_eq!(store.next_id().unwrap(), 7);
        // No stray keys remain of the pruned ones.
        let keys: Vec<_> = store
            .db
            .iterator(rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert!(keys.iter().all(|k| k.starts_with(prefix(6).as_bytes())));
        assert_eq!(keys.len(), 4); // commit, meta, 2 operators
    }

    #[test]
    fn partial_checkpoint_falls_back_with_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path()).unwrap();
        store.save(&checkpoint(11), 3).unwrap();
        store.save(&checkpoint(12), 3).unwrap();
        store.db.delete(commit_key(12)).unwrap();

        let list = store.list().unwrap();
        assert_eq!(list[1].status, StoredStatus::Partial);
        // Best effort from the meta.
        assert_eq!(list[1].source_lines, 120);
        let (cp, warnings) = store.latest().unwrap().unwrap();
        assert_eq!(cp.id, 11);
        assert_eq!(
            warnings,
            vec!["checkpoint 12 is partial (no commit marker): using checkpoint 11".to_string()]
        );
        let err = store.load(12).unwrap_err();
        assert!(matches!(err, CheckpointError::Partial { id: 12, .. }));
        assert!(err.to_string().contains("partial"), "{err}");
        assert_eq!(store.next_id().unwrap(), 13);

        // Only partial checkpoints: start over, nothing was ever committed.
        store.db.delete(commit_key(11)).unwrap();
        assert!(store.latest().unwrap().is_none());
    }

    #[test]
    fn corrupt_operator_and_meta_are_skipped_with_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path()).unwrap();
        for id in 1..=3 {
            store.save(&checkpoint(id), 5).unwrap();
        }
        store.db.put(operator_key(3, 0), b"garbage").unwrap();
        let mut meta = store.db.get(meta_key(2)).unwrap().unwrap();
        let last = meta.len() - 1;
        meta[last] ^= 1;
        store.db.put(meta_key(2), meta).unwrap();

        let list = store.list().unwrap();
        let statuses: Vec<_> = list.iter().map(|s| s.status.clone()).collect();
        assert_eq!(
            statuses,
            vec![
                StoredStatus::Complete,
                StoredStatus::Corrupt("checksum mismatch".into()),
                StoredStatus::Corrupt("checksum mismatch".into()),
            ]
        );
        let (cp, warnings) = store.latest().unwrap().unwrap();
        assert_eq!(cp.id, 1);
        assert_eq!(
            warnings,
            vec![
                "checkpoint 3 is corrupt (checksum mismatch): using checkpoint 1".to_string(),
                "checkpoint 2 is corrupt (checksum mismatch): using checkpoint 1".to_string(),
            ]
        );
        let err = store.load(3).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint 3") && err.contains("corrupt"),
            "{err}"
        );
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");

        // A missing operator key is corruption too.
        store.db.delete(operator_key(1, 1)).unwrap();
        assert!(matches!(
            store.list().unwrap()[0].status,
            StoredStatus::Corrupt(_)
        ));
        // Nothing usable left, and something was corrupt: an error, not a fresh start.
        let err = store.latest().unwrap_err();
        assert!(matches!(err, CheckpointError::NoUsable { .. }), "{err}");
        assert!(err.to_string().contains("checkpoint 1 is corrupt"), "{err}");
    }

    #[test]
    fn consistent_rewrite_that_does_not_decode_is_corrupt() {
        // A checkpoint whose checksum is right but whose meta has an unknown version, as a newer
        // waio might write.
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path()).unwrap();
        store.save(&checkpoint(1), 5).unwrap();
        let mut meta = store.db.get(meta_key(1)).unwrap().unwrap();
        meta[0] = 99;
        store.db.put(meta_key(1), &meta).unwrap();
        let raw = store.read_raw(1).unwrap();
        let data: Vec<_> = raw
            .iter()
            .filter(|(k, _)| k.as_slice() != commit_key(1).as_bytes())
            .collect();
        let hash = data_hash(data.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        store
            .db
            .put(commit_key(1), commit_marker(data.len(), &hash))
            .unwrap();
        let err = store.load(1).unwrap_err();
        assert!(matches!(err, CheckpointError::Codec { .. }), "{err}");
        assert!(err.to_string().contains("version 99"), "{err}");
        assert!(matches!(
            store.list().unwrap()[0].status,
            StoredStatus::Corrupt(_)
        ));
    }

    #[test]
    fn second_open_reports_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = CheckpointStore::open(tmp.path()).unwrap();
        let err = CheckpointStore::open(tmp.path()).err().unwrap();
        assert!(matches!(err, CheckpointError::InUse { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "checkpoint directory {} is in use by another waio process",
                tmp.path().display()
            )
        );
    }

    #[test]
    fn read_only_open_works_beside_a_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = CheckpointStore::open(tmp.path()).unwrap();
        writer.save(&checkpoint(1), 5).unwrap();
        writer.save(&checkpoint(2), 5).unwrap();
        let reader = CheckpointStore::open_read_only(tmp.path()).unwrap();
        assert_eq!(ids(&reader), vec![1, 2]);
        assert_eq!(reader.latest().unwrap().unwrap().0, checkpoint(2));
        // The writer carries on meanwhile.
        writer.save(&checkpoint(3), 5).unwrap();
        assert!(reader.save(&checkpoint(4), 5).is_err());
        // The reader left the writer's info log alone.
        let rotated = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("LOG.old")
            })
            .count();
        assert_eq!(rotated, 0);
    }

    #[test]
    fn read_only_open_needs_an_existing_database() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = CheckpointStore::open_read_only(&missing).err().unwrap();
        assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!missing.exists());
        let err = CheckpointStore::open_read_only(tmp.path()).err().unwrap();
        assert!(matches!(err, CheckpointError::NoDatabase { .. }), "{err}");
    }

    #[test]
    fn key_helpers_follow_the_layout() {
        assert_eq!(meta_key(7), "checkpoint/00000000000000000007/meta");
        assert_eq!(
            operator_key(7, 3),
            "checkpoint/00000000000000000007/operator/0003"
        );
        assert_eq!(commit_key(7), "checkpoint/00000000000000000007/commit");
        assert_eq!(parse_id(meta_key(u64::MAX).as_bytes()), Some(u64::MAX));
        assert_eq!(parse_id(b"checkpoint/7/meta"), None);
        assert_eq!(parse_id(b"checkpoint/99999999999999999999/meta"), None);
    }
}
