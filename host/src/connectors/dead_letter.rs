//! The dead-letter output: one JSON line per record that could not be processed, with the reason.
//!
//! The file is created on the first dead letter, so a clean run leaves none behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::record::Record;

/// One dead letter. `stage` is "source" or the operator's name.
pub struct DeadLetter<'a> {
    pub stage: &'a str,
    /// "parse", "failure", "timeout".
    pub reason: &'a str,
    pub error: &'a str,
    pub retriable: Option<bool>,
    pub record: &'a Record,
}

#[derive(Serialize)]
struct Line<'a> {
    stage: &'a str,
    reason: &'a str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retriable: Option<bool>,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    /// The record's payload as JSON when it is JSON, else as a string.
    payload: serde_json::Value,
}

/// A cheap-to-clone handle shared by the source and every operator.
#[derive(Clone)]
pub struct DeadLetters {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    file: Mutex<Option<BufWriter<File>>>,
    count: AtomicU64,
}

impl DeadLetters {
    pub fn new(path: &Path) -> Self {
        DeadLetters {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                file: Mutex::new(None),
                count: AtomicU64::new(0),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    pub fn write(&self, letter: &DeadLetter<'_>) -> std::io::Result<()> {
        let payload = serde_json::from_slice(&letter.record.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&letter.record.payload).into_owned())
        });
        let line = Line {
            stage: letter.stage,
            reason: letter.reason,
            error: letter.error,
            retriable: letter.retriable,
            line: letter.record.line,
            key: letter.record.key.as_deref(),
            timestamp: letter.record.timestamp,
            payload,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let mut guard = self
            .inner
            .file
            .lock()
            .map_err(|_| std::io::Error::other("dead-letter writer poisoned"))?;
        if guard.is_none() {
            if let Some(dir) = self
                .inner
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)?;
            }
            let file = File::create(&self.inner.path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", self.inner.path.display()),
                )
            })?;
            *guard = Some(BufWriter::new(file));
        }
        if let Some(file) = guard.as_mut() {
            file.write_all(&bytes)?;
        }
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes what was written; call at the end of the run.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut guard = self
            .inner
            .file
            .lock()
            .map_err(|_| std::io::Error::other("dead-letter writer poisoned"))?;
        match guard.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}
