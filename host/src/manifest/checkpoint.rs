//! `[checkpoint]`: periodic checkpoints; without it a run keeps no state.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::values::{Count, DurationValue};

const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_CHECKPOINTS_RETAINED: usize = 3;

/// Periodic checkpoints (`[checkpoint]`); without it a run keeps no state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// RocksDB directory, resolved against the manifest's directory.
    pub dir: PathBuf,
    /// Time between checkpoints; greater than 0.
    pub interval: Duration,
    /// Complete checkpoints kept (older ones are deleted); at least 1.
    pub retained: usize,
}

impl CheckpointConfig {
    /// Checkpoints in `dir` with the default interval and retention.
    pub fn in_dir(dir: PathBuf) -> Self {
        CheckpointConfig {
            dir,
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            retained: DEFAULT_CHECKPOINTS_RETAINED,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheckpoint {
    dir: Option<Spanned<String>>,
    interval: Option<Spanned<DurationValue>>,
    retained: Option<Spanned<Count>>,
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    checkpoint: Spanned<RawCheckpoint>,
) -> Result<CheckpointConfig, ManifestError> {
    let span = checkpoint.span();
    let raw = checkpoint.into_inner();
    let Some(dir) = raw.dir else {
        return Err(ctx.invalid(
            span,
            "checkpoint.dir",
            "missing; checkpoints need a directory, e.g. `dir = \"state\"`",
        ));
    };
    let dir = ctx.path_value(&dir, "checkpoint.dir")?;
    let interval = ctx.setting(
        &raw.interval,
        "checkpoint.interval",
        DEFAULT_CHECKPOINT_INTERVAL,
        DurationValue::positive,
    )?;
    let retained = ctx.setting(
        &raw.retained,
        "checkpoint.retained",
        DEFAULT_CHECKPOINTS_RETAINED,
        |r| r.at_least_one(""),
    )?;
    Ok(CheckpointConfig {
        dir,
        interval,
        retained,
    })
}
