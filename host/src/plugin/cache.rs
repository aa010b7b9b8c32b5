//! The compile cache: a compiled component is kept on disk so that the next start skips Cranelift
//! (seconds for a Python or JavaScript component, a fraction of a second for Rust).
//!
//! An entry is named by the SHA-256 of the component and wasmtime's own
//! `precompile_compatibility_hash` of the engine (wasmtime version and every setting that affects
//! compiled code), so a different wasmtime or engine configuration simply misses. Entries are
//! written to a temporary file and renamed, so a reader never sees half an entry; an entry that
//! still fails to load is compiled again and replaced.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// What the cache did for one load, for `waio check` and the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The cache is off (`WAIO_COMPILE_CACHE=off`) or has no directory.
    Disabled,
    /// Loaded the compiled component from disk.
    Hit,
    /// Compiled, and stored for next time.
    Miss,
    /// An entry existed but could not be loaded; compiled again and replaced.
    Replaced,
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheOutcome::Disabled => "compiled (cache off)",
            CacheOutcome::Hit => "loaded from the compile cache",
            CacheOutcome::Miss => "compiled and cached",
            CacheOutcome::Replaced => "compiled (bad cache entry replaced)",
        })
    }
}

#[derive(Clone, Debug)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// `$WAIO_CACHE_DIR/compiled`, else `$XDG_CACHE_HOME/waio/compiled`, else
    /// `$HOME/.cache/waio/compiled`; off when `WAIO_COMPILE_CACHE=off`.
    pub fn from_env() -> Self {
        if std::env::var("WAIO_COMPILE_CACHE").is_ok_and(|v| v == "off" || v == "0") {
            return CompileCache { dir: None };
        }
        let base = std::env::var_os("WAIO_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("waio")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/waio")));
        CompileCache {
            dir: base.map(|b| b.join("compiled")),
        }
    }

    pub fn at(dir: &Path) -> Self {
        CompileCache {
            dir: Some(dir.to_path_buf()),
        }
    }

    pub fn disabled() -> Self {
        CompileCache { dir: None }
    }

    /// The component for `bytes`, from the cache when possible.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((
                Component::from_binary(engine, bytes)?,
                CacheOutcome::Disabled,
            ));
        };
        let entry = dir.join(entry_name(engine, bytes));
        let mut outcome = CacheOutcome::Miss;
        if entry.exists() {
            // SAFETY: entries are only written by `store` below, from `Component::serialize` of an
            // engine with the same compatibility hash (part of the name), and appear by atomic
            // rename; wasmtime still checks the header and refuses a mismatching artifact.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(
                        "compile cache entry {} cannot be loaded ({error:#}); compiling again",
                        entry.display()
                    );
                    outcome = CacheOutcome::Replaced;
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(error) = store(&component, dir, &entry) {
            // A read-only or full disk costs start-up time, nothing else.
            tracing::warn!(
                "cannot write compile cache entry {}: {error}",
                entry.display()
            );
        }
        Ok((component, outcome))
    }
}

/// SHA-256 of a component's bytes, hex: its identity in cache entries and checkpoints.
pub fn component_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{}-{:016x}.cwasm", component_sha256(bytes), hasher.finish())
}

fn store(component: &Component, dir: &Path, entry: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, entry)
}
