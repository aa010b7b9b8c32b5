//! `batch.*` of an operator: how many records go to the plugin in one call
//! (`async-invoke-batch`), and how long the operator may hold records to fill a batch.

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
