//! `[operator.async_retry]`: Flink's `AsyncRetryStrategy` for records. The plugin's
//! `async-invoke` is called again for a record whose attempt failed or came back empty
//! (FLINK-SEMANTICS 19-26); the operator's `retry` module makes the decisions.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::values::{Count, DurationValue};

const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_DELAY: Duration = Duration::from_millis(100);
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_MULTIPLIER: f64 = 2.0;

/// The resolved retry strategy of an operator; `strategy = None` means no retries (Flink's
/// `NO_RETRY_STRATEGY`).
#[derive(Clone, Debug, PartialEq)]
pub struct AsyncRetryConfig {
    pub strategy: RetryStrategy,
    /// Retries after the first call, as Flink counts: at most `max_attempts + 1` invocations.
    pub max_attempts: u32,
    /// Flink's result predicate: an attempt that completed with no values is retried.
    pub on_empty_result: bool,
    /// Flink's exception predicate: which failed attempts are retried.
    pub on_failure: RetryOnFailure,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RetryStrategy {
    None,
    /// The same wait before every retry.
    FixedDelay {
        delay: Duration,
    },
    /// `initial_delay`, then each wait `multiplier` times the one before, at most `max_delay`.
    Exponential {
        initial_delay: Duration,
        max_delay: Duration,
        multiplier: f64,
    },
}

/// Which failures (`complete-exceptionally`) are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOnFailure {
    /// Those the plugin marked retriable.
    Retriable,
    /// Every failure, fatal ones too.
    Any,
    /// None: only empty results are retried.
    None,
}

impl Default for AsyncRetryConfig {
    fn default() -> Self {
        AsyncRetryConfig {
            strategy: RetryStrategy::None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            on_empty_result: false,
            on_failure: RetryOnFailure::Retriable,
        }
    }
}

impl AsyncRetryConfig {
    /// Whether records are ever invoked again (resolution refuses a strategy that could not).
    pub fn is_active(&self) -> bool {
        self.strategy != RetryStrategy::None
    }
}

/// For `waio check`: e.g. `exponential 100ms x2 up to 5s, 3 retries, on retriable failures`.
impl std::fmt::Display for AsyncRetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: &Duration| humantime::format_duration(*d).to_string();
        match &self.strategy {
            RetryStrategy::None => return f.write_str("none"),
            RetryStrategy::FixedDelay { delay } => write!(f, "fixed delay {}", ms(delay))?,
            RetryStrategy::Exponential {
                initial_delay,
                max_delay,
                multiplier,
            } => write!(
                f,
                "exponential {} x{multiplier} up to {}",
                ms(initial_delay),
                ms(max_delay)
            )?,
        }
        write!(f, ", {} retries", self.max_attempts)?;
        let failures = match self.on_failure {
            RetryOnFailure::Retriable => Some("retriable failures"),
            RetryOnFailure::Any => Some("any failure"),
            RetryOnFailure::None => None,
        };
        let on: Vec<&str> = failures
            .into_iter()
            .chain(self.on_empty_result.then_some("empty results"))
            .collect();
        write!(f, ", on {}", on.join(" and "))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAsyncRetry {
    strategy: Option<Spanned<String>>,
    max_attempts: Option<Spanned<Count>>,
    delay: Option<Spanned<DurationValue>>,
    max_delay: Option<Spanned<DurationValue>>,
    multiplier: Option<Spanned<Multiplier>>,
    on_empty_result: Option<Spanned<bool>>,
    on_failure: Option<Spanned<String>>,
}

/// The exponential strategy's growth factor: a finite number above 1.
#[derive(Clone, Copy, Deserialize)]
#[serde(transparent)]
struct Multiplier(f64);

impl Multiplier {
    fn get(self) -> Result<f64, String> {
        let m = self.0;
        if !m.is_finite() || m <= 1.0 {
            return Err(format!(
                "must be a number greater than 1 (each delay is the one before times it), got {m}"
            ));
        }
        Ok(m)
    }
}

/// The operator's timeout as resolved, with its value as written (to point at it).
type Timeout<'a> = (Option<Duration>, &'a Option<Spanned<DurationValue>>);

/// Resolves `operator[N].async_retry`; `field` names a key of the operator.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    raw: Option<RawAsyncRetry>,
    timeout: Timeout<'_>,
) -> Result<AsyncRetryConfig, ManifestError> {
    let Some(raw) = raw else {
        return Ok(AsyncRetryConfig::default());
    };
    let key = |name: &str| field(&format!("async_retry.{name}"));
    let kinds = [("none", 0), ("fixed_delay", 1), ("exponential", 2)];
    let kind = match &raw.strategy {
        Some(s) => ctx.choose(s, &key("strategy"), &kinds)?,
        None => 0,
    };
    if kind == 0 {
        // Keys a disabled strategy would silently ignore are refused, like a typo'd kind.
        let applies = "a strategy (strategy = \"fixed_delay\" or \"exponential\")";
        ctx.reject_for_kind(&raw.max_attempts, &key("max_attempts"), applies)?;
        ctx.reject_for_kind(&raw.delay, &key("delay"), applies)?;
        ctx.reject_for_kind(&raw.max_delay, &key("max_delay"), applies)?;
        ctx.reject_for_kind(&raw.multiplier, &key("multiplier"), applies)?;
        ctx.reject_for_kind(&raw.on_empty_result, &key("on_empty_result"), applies)?;
        ctx.reject_for_kind(&raw.on_failure, &key("on_failure"), applies)?;
        return Ok(AsyncRetryConfig::default());
    }
    let strategy = if kind == 1 {
        fixed_delay(ctx, &key, &raw)?
    } else {
        exponential(ctx, &key, &raw)?
    };
    let max_attempts = ctx.setting(
        &raw.max_attempts,
        &key("max_attempts"),
        DEFAULT_MAX_ATTEMPTS,
        |n| n.at_least_one(" (retries after the first call; leave the strategy out for none)"),
    )?;
    let on_empty_result = raw.on_empty_result.as_ref().is_some_and(|b| *b.get_ref());
    let on_failure = match &raw.on_failure {
        Some(v) => ctx.choose(
            v,
            &key("on_failure"),
            &[
                ("retriable", RetryOnFailure::Retriable),
                ("any", RetryOnFailure::Any),
                ("none", RetryOnFailure::None),
            ],
        )?,
        None => RetryOnFailure::Retriable,
    };
    // FLINK-SEMANTICS 19: without a predicate nothing would ever be retried; an error says so
    // rather than a strategy that silently does nothing.
    if !on_empty_result && on_failure == RetryOnFailure::None {
        let at = raw
            .on_failure
            .as_ref()
            .map(Spanned::span)
            .or_else(|| raw.strategy.as_ref().map(Spanned::span))
            .unwrap_or_default();
        return Err(ctx.invalid(
            at,
            key("on_failure"),
            "with on_failure = \"none\" and on_empty_result off nothing is ever retried; set on_empty_result = true, another on_failure, or strategy = \"none\"",
        ));
    }
    // FLINK-SEMANTICS 16: one timeout covers every attempt, so with retries there must be one.
    if timeout.0.is_none() {
        let at = timeout.1.as_ref().map(Spanned::span).unwrap_or_default();
        return Err(ctx.invalid(
            at,
            field("timeout"),
            "must be greater than 0 when [operator.async_retry] has a strategy: one timeout covers all attempts of a record (as in Flink)",
        ));
    }
    Ok(AsyncRetryConfig {
        strategy,
        max_attempts,
        on_empty_result,
        on_failure,
    })
}

fn fixed_delay(
    ctx: &Ctx<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawAsyncRetry,
) -> Result<RetryStrategy, ManifestError> {
    let applies = "strategy = \"exponential\"";
    ctx.reject_for_kind(&raw.max_delay, &key("max_delay"), applies)?;
    ctx.reject_for_kind(&raw.multiplier, &key("multiplier"), applies)?;
    // Zero is allowed: retry at once.
    let delay = ctx.setting(
        &raw.delay,
        &key("delay"),
        DEFAULT_DELAY,
        DurationValue::duration,
    )?;
    Ok(RetryStrategy::FixedDelay { delay })
}

fn exponential(
    ctx: &Ctx<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawAsyncRetry,
) -> Result<RetryStrategy, ManifestError> {
    let initial_delay = ctx.setting(
        &raw.delay,
        &key("delay"),
        DEFAULT_DELAY,
        DurationValue::positive,
    )?;
    let max_delay = ctx.setting(
        &raw.max_delay,
        &key("max_delay"),
        DEFAULT_MAX_DELAY,
        DurationValue::positive,
    )?;
    let multiplier = ctx.setting(
        &raw.multiplier,
        &key("multiplier"),
        DEFAULT_MULTIPLIER,
        |m| m.get(),
    )?;
    if initial_delay > max_delay {
        let (at, field, message) = match (&raw.max_delay, &raw.delay) {
            (Some(m), _) => (
                m.span(),
                key("max_delay"),
                format!(
                    "must not be below delay ({})",
                    humantime::format_duration(initial_delay)
                ),
            ),
            (None, Some(d)) => (
                d.span(),
                key("delay"),
                format!(
                    "is above max_delay (default {}); set max_delay too",
                    humantime::format_duration(DEFAULT_MAX_DELAY)
                ),
            ),
            (None, None) => (0..0, key("delay"), "is above max_delay".to_owned()),
        };
        return Err(ctx.invalid(at, field, message));
    }
    Ok(RetryStrategy::Exponential {
        initial_delay,
        max_delay,
        multiplier,
    })
}
