//! `[dead_letter]`: the file failed records go to.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;

const DEFAULT_DEAD_LETTER_FILE: &str = "dead-letters.jsonl";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterConfig {
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadLetter {
    path: Option<Spanned<String>>,
}

/// Without the section (or its `path`), dead letters go beside the manifest.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    dead_letter: Option<Spanned<RawDeadLetter>>,
) -> Result<DeadLetterConfig, ManifestError> {
    let path = match dead_letter.map(Spanned::into_inner).and_then(|d| d.path) {
        Some(p) => ctx.path_value(&p, "dead_letter.path")?,
        None => ctx.base_dir.join(DEFAULT_DEAD_LETTER_FILE),
    };
    Ok(DeadLetterConfig { path })
}
