//! Output files written either directly or with a two-phase commit.
//!
//! Transactional mode: what arrives between two checkpoint barriers goes to an in-progress part in
//! the checkpoint directory. At a barrier the part is closed (synced) and becomes a pending part
//! (`pre-commit`); once the checkpoint that names it is stored, the coordinator appends it to the
//! target and deletes it (`commit`). A checkpoint records the target's committed length before
//! the append, so a commit interrupted by a crash is redone from scratch on restore and anything
//! appended by a later, lost checkpoint is cut off: the target holds every committed line once.
//!
//! The target never holds uncommitted output. A commit is atomic with respect to crashes (it is
//! redone on restore), not to a reader tailing the file while the part is appended.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::PendingCommit;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("{action} {}: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is {actual} bytes long but checkpoint data says at least {expected} were committed: it was changed outside waio; run with --fresh to start over", path.display())]
    Shortened {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CommitError + 'a {
    move |cause| CommitError::Io {
        action,
        path: path.to_path_buf(),
        cause,
    }
}

/// An output file. Created lazily when `lazy` (the dead-letter file of a clean run never appears).
pub struct OutputFile {
    target: PathBuf,
    lazy: bool,
    mode: Mode,
    writer: Option<BufWriter<File>>,
    /// Bytes written to the current part (transactional) or the target (direct).
    written: u64,
}

enum Mode {
    Direct,
    Transactional {
        /// Where parts live, and the prefix of their names.
        parts_dir: PathBuf,
        name: &'static str,
        /// The target's length once every pending part so far is committed.
        base_len: u64,
        /// Tells this run's parts from those of earlier runs (see `transactional`).
        run: u64,
    },
}

impl OutputFile {
    /// Writes straight to `target`, replacing what was there.
    pub fn direct(target: &Path, lazy: bool) -> Result<Self, CommitError> {
        let mut file = OutputFile {
            target: target.to_path_buf(),
            lazy,
            mode: Mode::Direct,
            writer: None,
            written: 0,
        };
        if lazy {
            remove_if_exists(target)?;
        } else {
            file.writer = Some(file.open_writer()?);
        }
        Ok(file)
    }

    /// Writes parts under `parts_dir` named after `name`; `target` is committed up to
    /// `committed_len` bytes (see `recover` and `start_fresh`).
    ///
    /// `run` goes into every part's name. It must differ from the `run` of every part a stored
    /// checkpoint names; the store's next checkpoint id at the start of the run does. Without it,
    /// a run killed before storing its first checkpoint could leave a part under the name that
    /// the resumed checkpoint names, and the next recovery would commit that part.
    pub fn transactional(
        target: &Path,
        lazy: bool,
        parts_dir: &Path,
        name: &'static str,
        committed_len: u64,
        run: u64,
    ) -> Self {
        OutputFile {
            target: target.to_path_buf(),
            lazy,
            mode: Mode::Transactional {
                parts_dir: parts_dir.to_path_buf(),
                name,
                base_len: committed_len,
                run,
            },
            writer: None,
            written: 0,
        }
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    fn write_path(&self) -> PathBuf {
        match &self.mode {
            Mode::Direct => self.target.clone(),
            Mode::Transactional {
                parts_dir, name, ..
            } => parts_dir.join(format!("{name}.inprogress")),
        }
    }

    fn open_writer(&self) -> Result<BufWriter<File>, CommitError> {
        let path = self.write_path();
        create_parent(&path)?;
        let file = File::create(&path).map_err(io_err("cannot create", &path))?;
        Ok(BufWriter::with_capacity(256 * 1024, file))
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), CommitError> {
        if self.writer.is_none() {
            self.writer = Some(self.open_writer()?);
        }
        if let Some(writer) = self.writer.as_mut() {
            writer
                .write_all(bytes)
                .map_err(io_err("cannot write", &self.target))?;
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), CommitError> {
        match self.writer.as_mut() {
            Some(writer) => writer.flush().map_err(io_err("cannot write", &self.target)),
            None => Ok(()),
        }
    }

    /// Closes the current part as this run's pending part number `part` (numbers must not
    /// repeat within a run) and starts a new one. Direct mode has nothing to commit: `None`.
    pub fn pre_commit(&mut self, part: u64) -> Result<Option<PendingCommit>, CommitError> {
        let Mode::Transactional {
            parts_dir,
            name,
            base_len,
            run,
        } = &mut self.mode
        else {
            return Ok(None);
        };
        let pending = parts_dir.join(format!("{name}.pending-{run}-{part}"));
        let inprogress = parts_dir.join(format!("{name}.inprogress"));
        if let Some(mut writer) = self.writer.take() {
            writer
                .flush()
                .map_err(io_err("cannot write", &inprogress))?;
            let file = writer
                .into_inner()
                .map_err(|e| io_err("cannot write", &inprogress)(e.into_error()))?;
            file.sync_data()
                .map_err(io_err("cannot sync", &inprogress))?;
            std::fs::rename(&inprogress, &pending).map_err(io_err("cannot rename", &inprogress))?;
        }
        let commit = PendingCommit {
            target: self.target.clone(),
            base_len: *base_len,
            pending,
            pending_len: self.written,
        };
        *base_len += self.written;
        self.written = 0;
        // The next part is opened on the next write; a lazy file with nothing to say stays absent.
        if !self.lazy {
            self.writer = Some(self.open_writer()?);
        }
        Ok(Some(commit))
    }
}

/// Appends a pending part to its target. Idempotent: redoing a commit that was done, or half
/// done when the process died, leaves the target as one complete commit would.
pub fn commit(pending: &PendingCommit) -> Result<(), CommitError> {
    let target = &pending.target;
    let committed = pending.base_len + pending.pending_len;
    if !pending.pending.exists() {
        // Done before (the part is deleted last); cut off whatever a lost later commit added.
        return truncate_to(target, committed);
    }
    if pending.pending_len == 0 {
        truncate_to(target, pending.base_len)?;
        return remove_if_exists(&pending.pending);
    }
    create_parent(target)?;
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(target)
        .map_err(io_err("cannot open", target))?;
    let len = out.metadata().map_err(io_err("cannot read", target))?.len();
    if len < pending.base_len {
        return Err(CommitError::Shortened {
            path: target.clone(),
            actual: len,
            expected: pending.base_len,
        });
    }
    out.set_len(pending.base_len)
        .map_err(io_err("cannot truncate", target))?;
    out.seek(SeekFrom::Start(pending.base_len))
        .map_err(io_err("cannot write", target))?;
    let mut part = File::open(&pending.pending).map_err(io_err("cannot open", &pending.pending))?;
    let copied = std::io::copy(&mut (&mut part).take(pending.pending_len), &mut out)
        .map_err(io_err("cannot append to", target))?;
    if copied != pending.pending_len {
        return Err(CommitError::Io {
            action: "cannot commit",
            path: pending.pending.clone(),
            cause: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "part holds {copied} bytes, the checkpoint says {}",
                    pending.pending_len
                ),
            ),
        });
    }
    out.sync_data().map_err(io_err("cannot sync", target))?;
    remove_if_exists(&pending.pending)
}

/// Before a run resumes from a checkpoint: redo its commit and remove parts of lost epochs.
/// Returns the target's committed length.
pub fn recover(pending: &PendingCommit, parts_dir: &Path, name: &str) -> Result<u64, CommitError> {
    commit(pending)?;
    remove_parts(parts_dir, name)?;
    Ok(pending.base_len + pending.pending_len)
}

/// Before a run that does not resume: the target starts empty (or absent) and stale parts go.
pub fn start_fresh(target: &Path, parts_dir: &Path, name: &str) -> Result<(), CommitError> {
    remove_if_exists(target)?;
    remove_parts(parts_dir, name)
}

fn remove_parts(parts_dir: &Path, name: &str) -> Result<(), CommitError> {
    let entries = match std::fs::read_dir(parts_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot list", parts_dir)(e)),
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

fn truncate_to(target: &Path, len: u64) -> Result<(), CommitError> {
    let actual = match std::fs::metadata(target) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err("cannot read", target)(e)),
    };
    if actual < len {
        return Err(CommitError::Shortened {
            path: target.to_path_buf(),
            actual,
            expected: len,
        });
    }
    if actual > len {
        let file = OpenOptions::new()
            .write(true)
            .open(target)
            .map_err(io_err("cannot open", target))?;
        file.set_len(len)
            .map_err(io_err("cannot truncate", target))?;
        file.sync_data().map_err(io_err("cannot sync", target))?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), CommitError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", path)(e)),
    }
}

fn create_parent(path: &Path) -> Result<(), CommitError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(io_err("cannot create directory", dir)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn parts_reach_the_target_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        let parts = dir.path().join("state/parts");
        start_fresh(&target, &parts, "output").unwrap();
        let mut file = OutputFile::transactional(&target, false, &parts, "output", 0, 1);
        file.write(b"a\n").unwrap();
        let first = file.pre_commit(1).unwrap().unwrap();
        file.write(b"b\n").unwrap();
        assert_eq!(read(&target), "", "nothing committed yet");
        commit(&first).unwrap();
        assert_eq!(read(&target), "a\n");
        let second = file.pre_commit(2).unwrap().unwrap();
        assert_eq!(second.base_len, 2);
        // Committing twice (a crash after the append, before the part was deleted) is harmless.
        commit(&second).unwrap();
        commit(&second).unwrap();
        assert_eq!(read(&target), "a\nb\n");
    }

    #[test]
    fn recovery_redoes_a_half_done_commit_and_drops_lost_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        let parts = dir.path().join("parts");
        let mut file = OutputFile::transactional(&target, false, &parts, "output", 0, 1);
        file.write(b"one\n").unwrap();
        let first = file.pre_commit(1).unwrap().unwrap();
        commit(&first).unwrap();
        file.write(b"two\n").unwrap();
        let second = file.pre_commit(2).unwrap().unwrap();
        // A crash halfway through appending part 2, with part 3 in progress.
        std::fs::write(&target, "one\ntw").unwrap();
        file.write(b"three\n").unwrap();
        file.flush().unwrap();
        assert_eq!(recover(&second, &parts, "output").unwrap(), 8);
        assert_eq!(read(&target), "one\ntwo\n");
        assert_eq!(
            std::fs::read_dir(&parts).unwrap().count(),
            0,
            "stale parts removed"
        );
        // Recovering from checkpoint 1 when 2 was committed but then lost cuts 2 off.
        assert_eq!(recover(&first, &parts, "output").unwrap(), 4);
        assert_eq!(read(&target), "one\n");
    }

    /// Run 1 stores a checkpoint naming its first part and commits it; run 2 resumes, writes its
    /// own first part and is killed before its checkpoint is stored; run 3 resumes from run 1's
    /// checkpoint again. It must commit nothing of run 2's (a CI run once found a half line of
    /// run 2's output in the target when both parts had the same name).
    #[test]
    fn a_part_of_a_run_killed_before_its_checkpoint_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        let parts = dir.path().join("parts");
        let mut run1 = OutputFile::transactional(&target, false, &parts, "output", 0, 1);
        run1.write(b"one\n").unwrap();
        let stored = run1.pre_commit(1).unwrap().unwrap();
        commit(&stored).unwrap();

        let committed = recover(&stored, &parts, "output").unwrap();
        let mut run2 = OutputFile::transactional(&target, false, &parts, "output", committed, 2);
        run2.write(b"two and more\n").unwrap();
        let _never_stored = run2.pre_commit(1).unwrap().unwrap();

        assert_eq!(recover(&stored, &parts, "output").unwrap(), 4);
        assert_eq!(read(&target), "one\n");
    }

    #[test]
    fn a_lazy_file_with_nothing_written_never_appears() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dead.jsonl");
        let parts = dir.path().join("parts");
        let mut file = OutputFile::transactional(&target, true, &parts, "dead-letters", 0, 1);
        let pending = file.pre_commit(1).unwrap().unwrap();
        commit(&pending).unwrap();
        assert!(!target.exists());
        let mut direct = OutputFile::direct(&target, true).unwrap();
        direct.flush().unwrap();
        assert!(!target.exists());
    }

    #[test]
    fn a_target_shorter_than_committed_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        std::fs::write(&target, "x").unwrap();
        let pending = PendingCommit {
            target: target.clone(),
            base_len: 10,
            pending: dir.path().join("gone"),
            pending_len: 5,
        };
        let err = commit(&pending).unwrap_err().to_string();
        assert!(err.contains("changed outside waio"), "{err}");
    }
}
