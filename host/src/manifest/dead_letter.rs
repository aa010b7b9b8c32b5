//! `[dead_letter]`: the file failed records go to.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::kafka::KafkaDeadLetters;

const DEFAULT_DEAD_LETTER_FILE: &str = "dead-letters.jsonl";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterConfig {
    /// The file (unused when `kafka` is set).
    pub path: PathBuf,
    /// `kind = "kafka"`: dead letters go to a topic, in the sink's transactions.
    pub kafka: Option<KafkaDeadLetters>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadLetter {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    topic: Option<Spanned<String>>,
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Kafka,
}

/// Without the section (or its `path`), dead letters go beside the manifest.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    dead_letter: Option<Spanned<RawDeadLetter>>,
) -> Result<DeadLetterConfig, ManifestError> {
    let default_path = ctx.base_dir.join(DEFAULT_DEAD_LETTER_FILE);
    let Some(dead_letter) = dead_letter else {
        return Ok(DeadLetterConfig {
            path: default_path,
            kafka: None,
        });
    };
    let at = dead_letter.span().start;
    let raw = dead_letter.into_inner();
    let kind = match raw.kind.as_ref() {
        Some(k) => ctx.choose(
            k,
            "dead_letter.kind",
            &[("file", Kind::File), ("kafka", Kind::Kafka)],
        )?,
        None => Kind::File,
    };
    if let Kind::Kafka = kind {
        ctx.reject_for_kind(&raw.path, "dead_letter.path", "file dead letters")?;
        return Ok(DeadLetterConfig {
            path: default_path,
            kafka: Some(super::kafka::dead_letters(ctx, at, raw.topic)?),
        });
    }
    let what = "kafka dead letters (kind = \"kafka\")";
    ctx.reject_for_kind(&raw.topic, "dead_letter.topic", what)?;
    let path = match raw.path {
        Some(p) => ctx.path_value(&p, "dead_letter.path")?,
        None => default_path,
    };
    Ok(DeadLetterConfig { path, kafka: None })
}
