//! `batch.*` of an operator: how many records go to the plugin in one call (`invoke-columns`, or
//! `async-invoke-batch` for a plugin of 0.3.0 or 0.4.0), and how long the operator may hold
//! records to fill a batch.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::values::{Count, DurationValue};

/// Records per call when the manifest says nothing: enough to make the call's own cost small
/// per record, small enough that one call stays far under `call_time_limit`.
pub const DEFAULT_MAX_SIZE: usize = 64;
const MAX_MAX_SIZE: i64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// At most this many records per call (1: one `async-invoke` per record).
    pub max_size: usize,
    /// How long a record may wait for others to fill its batch. Zero (the default): the
    /// operator hands over what is waiting when it is ready to invoke, and adds no latency.
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_size: DEFAULT_MAX_SIZE,
            max_wait: Duration::ZERO,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    max_size: Option<Spanned<Count>>,
    max_wait: Option<Spanned<DurationValue>>,
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    raw: Option<RawBatch>,
    timeout: Option<Duration>,
) -> Result<BatchConfig, ManifestError> {
    let Some(raw) = raw else {
        return Ok(BatchConfig::default());
    };
    let max_size = ctx.setting(
        &raw.max_size,
        &field("batch.max_size"),
        DEFAULT_MAX_SIZE,
        |n| n.between(1, MAX_MAX_SIZE),
    )?;
    let max_wait = ctx.setting(
        &raw.max_wait,
        &field("batch.max_wait"),
        Duration::ZERO,
        DurationValue::duration,
    )?;
    if let (Some(timeout), Some(value)) = (timeout, &raw.max_wait) {
        if max_wait >= timeout {
            return Err(ctx.invalid(
                value.span(),
                field("batch.max_wait"),
                format!(
                    "must be shorter than the operator's timeout ({timeout:?}): a record would time out waiting for its batch"
                ),
            ));
        }
    }
    Ok(BatchConfig { max_size, max_wait })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::{parse_with_env, ManifestError};

    /// The `batch.*` of a manifest whose only operator has `lines` in its table (line 6 on).
    fn batch_of(lines: &str) -> Result<BatchConfig, ManifestError> {
        let text = format!(
            "[source]\nkind = \"stdin\"\n\n[[operator]]\nplugin = \"p.wasm\"\n{lines}\n[sink]\nkind = \"stdout\"\n"
        );
        parse_with_env(&text, Path::new("pipeline.toml"), &|_| {
            Err(std::env::VarError::NotPresent)
        })
        .map(|m| m.operators[0].batch)
    }

    /// (line, field, message) of the error.
    fn refused(lines: &str) -> (usize, String, String) {
        match batch_of(lines) {
            Err(ManifestError::Invalid { at, field, message }) => (at.line, field, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn batches_of_64_without_waiting_unless_the_manifest_says_otherwise() {
        assert_eq!(batch_of("").unwrap(), BatchConfig::default());
        assert_eq!(
            batch_of("").unwrap(),
            BatchConfig {
                max_size: 64,
                max_wait: Duration::ZERO
            }
        );
        assert_eq!(
            batch_of("batch.max_size = 100\nbatch.max_wait = \"50ms\"").unwrap(),
            BatchConfig {
                max_size: 100,
                max_wait: Duration::from_millis(50)
            }
        );
        // The table form is the same keys.
        let table = "capacity = 10\n[operator.batch]\nmax_size = 1";
        assert_eq!(batch_of(table).unwrap().max_size, 1);
    }

    #[test]
    fn a_bad_batch_setting_names_its_line_and_field() {
        let (line, field, message) = refused("batch.max_size = 0");
        assert_eq!((line, field.as_str()), (6, "operator[0].batch.max_size"));
        assert!(message.contains("between 1 and 10000"), "{message}");
        let (line, field, message) = refused("timeout = \"1s\"\nbatch.max_wait = \"2s\"");
        assert_eq!((line, field.as_str()), (7, "operator[0].batch.max_wait"));
        assert!(
            message.contains("shorter than the operator's timeout"),
            "{message}"
        );
        let (_, field, _) = refused("batch.max_wait = \"soon\"");
        assert_eq!(field, "operator[0].batch.max_wait");
        let unknown = batch_of("batch.size = 3").unwrap_err().to_string();
        assert!(unknown.contains("size"), "{unknown}");
    }
}
