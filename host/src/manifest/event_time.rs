//! `[event_time]`: event time read from a record field, with generated watermarks.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::values::DurationValue;

/// Flink's default `pipeline.auto-watermark-interval`.
const DEFAULT_WATERMARK_INTERVAL: Duration = Duration::from_millis(200);

/// Event time read from a record field, with generated watermarks (`[event_time]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTimeConfig {
    /// Top-level JSON field of each input record holding its event time.
    pub field: String,
    pub format: TimestampFormat,
    /// Watermark = largest timestamp seen - max_out_of_orderness - 1 ms (Flink's
    /// BoundedOutOfOrderness).
    pub max_out_of_orderness: Duration,
    /// Minimum wall-clock time between two generated watermarks (Flink's autoWatermarkInterval);
    /// zero emits whenever the watermark advances.
    pub watermark_interval: Duration,
}

/// How the event-time field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampFormat {
    /// An integer of milliseconds since the Unix epoch.
    EpochMillis,
    /// A number (integer or fraction) of seconds since the Unix epoch.
    EpochSeconds,
    /// A string such as `2026-11-22T10:00:00.123+02:00`.
    Rfc3339,
}

/// The aliases are listed in `syntax::ALIASES` too, so that setting both names is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEventTime {
    field: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    #[serde(alias = "out_of_orderness")]
    max_out_of_orderness: Option<Spanned<DurationValue>>,
    #[serde(alias = "auto_watermark_interval")]
    watermark_interval: Option<Spanned<DurationValue>>,
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    event_time: Spanned<RawEventTime>,
) -> Result<EventTimeConfig, ManifestError> {
    let span = event_time.span();
    let raw = event_time.into_inner();
    let Some(field) = ctx.non_empty_string(raw.field, "event_time.field")? else {
        return Err(ctx.invalid(
            span,
            "event_time.field",
            "missing; name the record field holding the event time, e.g. `field = \"ts\"`",
        ));
    };
    let format = match raw.format.as_ref() {
        None => TimestampFormat::EpochMillis,
        Some(f) => ctx.choose(
            f,
            "event_time.format",
            &[
                ("epoch_millis", TimestampFormat::EpochMillis),
                ("epoch_seconds", TimestampFormat::EpochSeconds),
                ("rfc3339", TimestampFormat::Rfc3339),
                ("iso8601", TimestampFormat::Rfc3339),
            ],
        )?,
    };
    let max_out_of_orderness = ctx.setting(
        &raw.max_out_of_orderness,
        "event_time.max_out_of_orderness",
        Duration::ZERO,
        DurationValue::duration,
    )?;
    let watermark_interval = ctx.setting(
        &raw.watermark_interval,
        "event_time.watermark_interval",
        DEFAULT_WATERMARK_INTERVAL,
        DurationValue::duration,
    )?;
    Ok(EventTimeConfig {
        field,
        format,
        max_out_of_orderness,
        watermark_interval,
    })
}
