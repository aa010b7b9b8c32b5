//! An operator's request retries (`max_retries`, `[operator.retry]`) and circuit breaker
//! (`[operator.circuit_breaker]`): how its requests survive a failing or rate-limiting server.
//! The names are those of Flink's ML_PREDICT model options and Confluent's docs.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::values::{Count, DurationValue, Fraction};

/// More retries than this only multiply the load on a server that keeps failing.
const MAX_RETRIES: i64 = 100;

/// Request retries; with `max_retries = 0` (the default) each request is sent once. The
/// outbound stack's own options, so that fields and defaults are written once.
pub type RetryConfig = crate::outbound::RetryOptions;

/// A circuit breaker per endpoint the operator sends to (the outbound stack's options).
pub type CircuitBreakerConfig = crate::outbound::BreakerOptions;

/// For `waio check`: e.g. `3 (100ms, exponential up to 5s, budget 0.2)`.
impl fmt::Display for RetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| humantime::format_duration(d).to_string();
        let schedule = if self.exponential_backoff {
            format!("exponential up to {}", ms(self.max_delay))
        } else {
            "fixed".to_string()
        };
        write!(
            f,
            "{} ({}, {schedule}, budget {})",
            self.max_retries,
            ms(self.initial_delay),
            self.budget_ratio
        )
    }
}

/// For `waio check`: e.g. `opens at 50% of >= 20 calls in 1m, open 30s, 3 probes`.
impl fmt::Display for CircuitBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| humantime::format_duration(d).to_string();
        write!(
            f,
            "opens at {}% of >= {} calls in {}, open {}, {} probes",
            self.failure_threshold * 100.0,
            self.minimum_calls,
            ms(self.window),
            ms(self.open_duration),
            self.half_open_calls
        )?;
        if let Some(slow) = self.slow_call {
            write!(f, ", calls slower than {} fail", ms(slow))?;
        }
        Ok(())
    }
}

/// `[operator.retry]`. Not `Spanned` itself: toml 0.8 cannot read a `Spanned` table written
/// with dotted keys (`retry.max_delay = "5s"`), the form the issue's examples use.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    initial_delay: Option<Spanned<DurationValue>>,
    max_delay: Option<Spanned<DurationValue>>,
    exponential_backoff: Option<Spanned<bool>>,
    budget_ratio: Option<Spanned<Fraction>>,
}

/// `[operator.circuit_breaker]` (not `Spanned`, as `RawRetry`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCircuitBreaker {
    failure_threshold: Option<Spanned<Rate>>,
    window: Option<Spanned<DurationValue>>,
    minimum_calls: Option<Spanned<Count>>,
    open_duration: Option<Spanned<DurationValue>>,
    half_open_calls: Option<Spanned<Count>>,
    slow_call: Option<Spanned<DurationValue>>,
}

/// The keys of an operator that say how its requests survive failures, as read.
pub(super) struct RawResilience<'a> {
    /// Where the operator stands, for a complaint about a table without a key of its own.
    pub(super) operator: Range<usize>,
    pub(super) max_retries: &'a Option<Spanned<Count>>,
    pub(super) retry: &'a Option<RawRetry>,
    pub(super) circuit_breaker: &'a Option<RawCircuitBreaker>,
}

/// The retries and breaker of an operator; `field` names its keys (`operator[N].KEY`).
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    raw: RawResilience<'_>,
) -> Result<(RetryConfig, Option<CircuitBreakerConfig>), ManifestError> {
    let retry = resolve_retry(ctx, field, &raw)?;
    let breaker = match raw.circuit_breaker {
        None => None,
        Some(table) => Some(resolve_breaker(ctx, field, table)?),
    };
    Ok((retry, breaker))
}

fn resolve_retry(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    given: &RawResilience<'_>,
) -> Result<RetryConfig, ManifestError> {
    let RawResilience {
        max_retries, retry, ..
    } = given;
    let defaults = RetryConfig::default();
    let max_retries_given = max_retries;
    let max_retries = ctx.setting(max_retries, &field("max_retries"), 0, |n| {
        n.between(0, MAX_RETRIES)
    })?;
    let Some(table) = retry else {
        return Ok(RetryConfig {
            max_retries,
            ..defaults
        });
    };
    let key = |name: &str| field(&format!("retry.{name}"));
    // The table alone retries nothing: say so rather than let the user believe it does.
    if max_retries_given.is_none() {
        return Err(ctx.invalid(
            table.first_key().unwrap_or(given.operator.clone()),
            field("retry"),
            "has no effect without max_retries, which is 0 (each request sent once) unless \
             set; add e.g. `max_retries = 3` to the operator",
        ));
    }
    let raw = table;
    let initial_delay = ctx.setting(
        &raw.initial_delay,
        &key("initial_delay"),
        defaults.initial_delay,
        DurationValue::positive,
    )?;
    let max_delay = ctx.setting(
        &raw.max_delay,
        &key("max_delay"),
        defaults.max_delay,
        DurationValue::positive,
    )?;
    if max_delay < initial_delay {
        let (span, name, message) = match &raw.max_delay {
            Some(max) => (
                max.span(),
                "max_delay",
                format!(
                    "is shorter than initial_delay ({})",
                    humantime::format_duration(initial_delay)
                ),
            ),
            // Only initial_delay was given (it was checked above), longer than the default.
            None => (
                raw.initial_delay
                    .as_ref()
                    .map_or(given.operator.clone(), Spanned::span),
                "initial_delay",
                format!(
                    "is longer than max_delay ({}, the default); set retry.max_delay too",
                    humantime::format_duration(max_delay)
                ),
            ),
        };
        return Err(ctx.invalid(span, key(name), message));
    }
    let exponential_backoff = raw
        .exponential_backoff
        .as_ref()
        .map_or(defaults.exponential_backoff, |b| *b.get_ref());
    let budget_ratio = ctx.setting(
        &raw.budget_ratio,
        &key("budget_ratio"),
        defaults.budget_ratio,
        |r| r.get(),
    )?;
    Ok(RetryConfig {
        max_retries,
        initial_delay,
        max_delay,
        exponential_backoff,
        budget_ratio,
        ..defaults
    })
}

impl RawRetry {
    /// Where the first key of the table that is set stands.
    fn first_key(&self) -> Option<Range<usize>> {
        let spans = [
            self.initial_delay.as_ref().map(Spanned::span),
            self.max_delay.as_ref().map(Spanned::span),
            self.exponential_backoff.as_ref().map(Spanned::span),
            self.budget_ratio.as_ref().map(Spanned::span),
        ];
        spans.into_iter().flatten().min_by_key(|s| s.start)
    }
}

fn resolve_breaker(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    raw: &RawCircuitBreaker,
) -> Result<CircuitBreakerConfig, ManifestError> {
    let defaults = CircuitBreakerConfig::default();
    let key = |name: &str| field(&format!("circuit_breaker.{name}"));
    Ok(CircuitBreakerConfig {
        failure_threshold: ctx.setting(
            &raw.failure_threshold,
            &key("failure_threshold"),
            defaults.failure_threshold,
            Rate::fraction,
        )?,
        window: ctx.setting(
            &raw.window,
            &key("window"),
            defaults.window,
            DurationValue::positive,
        )?,
        minimum_calls: ctx.setting(
            &raw.minimum_calls,
            &key("minimum_calls"),
            defaults.minimum_calls,
            |n| n.at_least_one(""),
        )?,
        open_duration: ctx.setting(
            &raw.open_duration,
            &key("open_duration"),
            defaults.open_duration,
            DurationValue::positive,
        )?,
        half_open_calls: ctx.setting(
            &raw.half_open_calls,
            &key("half_open_calls"),
            defaults.half_open_calls,
            |n| n.at_least_one(""),
        )?,
        slow_call: ctx.setting(&raw.slow_call, &key("slow_call"), None, |d| {
            d.positive().map(Some)
        })?,
    })
}

/// A failure rate as written: `"50%"`, or a number from 0 to 1 (`0.5`, `1`).
pub(super) enum Rate {
    Text(String),
    Number(f64),
}

impl Rate {
    /// The rate as a fraction: more than 0 (a breaker that opens on no failure would never
    /// close), at most 1.
    fn fraction(&self) -> Result<f64, String> {
        let usage = "write a percentage such as \"50%\" or a fraction such as 0.5";
        let rate = match self {
            Rate::Number(n) => *n,
            Rate::Text(t) => {
                let t = t.trim();
                let percent = t
                    .strip_suffix('%')
                    .ok_or_else(|| format!("invalid rate {t:?}; {usage}"))?;
                let n: f64 = percent
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid rate {t:?}; {usage}"))?;
                n / 100.0
            }
        };
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(format!(
                "must be more than 0% and at most 100%, got {}; {usage}",
                match self {
                    Rate::Text(t) => t.clone(),
                    Rate::Number(n) => n.to_string(),
                }
            ));
        }
        Ok(rate)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as \"50%\" or 0.5")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                Ok(Rate::Text(v.to_owned()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rate, E> {
                Ok(Rate::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                Ok(Rate::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rate, E> {
                Ok(Rate::Number(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_with_env, Manifest, ManifestError, OperatorConfig};
    use super::*;

    const FILE: &str = "/pipelines/demo/pipeline.toml";

    /// A manifest with `extra` in its only operator.
    fn with_operator(extra: &str) -> String {
        format!(
            "[source]\nkind = \"stdin\"\n\n[[operator]]\nplugin = \"p.wasm\"\n{extra}\n\n[sink]\nkind = \"stdout\"\n"
        )
    }

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        parse_with_env(text, Path::new(FILE), &|_| {
            Err(std::env::VarError::NotPresent)
        })
    }

    fn operator(extra: &str) -> OperatorConfig {
        let mut manifest = parse(&with_operator(extra)).unwrap();
        manifest.operators.remove(0)
    }

    /// (line, field, message) of the error `extra` makes.
    fn refused(extra: &str) -> (usize, String, String) {
        match parse(&with_operator(extra)) {
            Err(ManifestError::Invalid { at, field, message }) => {
                assert_eq!(at.file, Path::new(FILE));
                (at.line, field, message)
            }
            Err(ManifestError::Syntax { at, message }) => (at.line, String::new(), message),
            other => panic!("expected an error for {extra:?}, got {other:?}"),
        }
    }

    /// The line of the manifest `with_operator` makes on which `extra`'s line `n` (1-based)
    /// stands.
    const fn line(n: usize) -> usize {
        5 + n
    }

    #[test]
    fn without_the_keys_nothing_is_retried_and_there_is_no_breaker() {
        let op = operator("");
        assert_eq!(op.retry, RetryConfig::default());
        assert_eq!(op.retry.max_retries, 0);
        assert_eq!(op.circuit_breaker, None);
    }

    #[test]
    fn the_issue_example_reads_as_written() {
        let op = operator(
            "max_retries = 3\n\
             retry.initial_delay = \"100ms\"\n\
             retry.max_delay = \"5s\"\n\
             retry.exponential_backoff = true\n\
             circuit_breaker.failure_threshold = \"50%\"\n\
             circuit_breaker.window = \"1m\"\n\
             circuit_breaker.minimum_calls = 20\n\
             circuit_breaker.open_duration = \"30s\"\n\
             circuit_breaker.half_open_calls = 3\n\
             circuit_breaker.slow_call = \"10s\"",
        );
        assert_eq!(
            op.retry,
            RetryConfig {
                max_retries: 3,
                ..RetryConfig::default()
            }
        );
        assert_eq!(
            op.circuit_breaker,
            Some(CircuitBreakerConfig {
                slow_call: Some(Duration::from_secs(10)),
                ..CircuitBreakerConfig::default()
            })
        );
    }

    #[test]
    fn tables_set_every_value() {
        let op = operator(
            "max_retries = 5\n\
             [operator.retry]\n\
             initial_delay = 250\n\
             max_delay = \"2s\"\n\
             exponential_backoff = false\n\
             budget_ratio = 0.5\n\
             [operator.circuit_breaker]\n\
             failure_threshold = 0.25\n\
             window = \"10s\"\n\
             minimum_calls = 5\n\
             open_duration = \"1m\"\n\
             half_open_calls = 1",
        );
        assert_eq!(
            op.retry,
            RetryConfig {
                max_retries: 5,
                initial_delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(2),
                exponential_backoff: false,
                budget_ratio: 0.5,
                ..RetryConfig::default()
            }
        );
        assert_eq!(
            op.circuit_breaker,
            Some(CircuitBreakerConfig {
                failure_threshold: 0.25,
                window: Duration::from_secs(10),
                minimum_calls: 5,
                open_duration: Duration::from_secs(60),
                half_open_calls: 1,
                slow_call: None,
            })
        );
    }

    #[test]
    fn an_empty_breaker_table_turns_the_breaker_on_with_its_defaults() {
        let op = operator("[operator.circuit_breaker]");
        assert_eq!(op.circuit_breaker, Some(CircuitBreakerConfig::default()));
    }

    #[test]
    fn a_failure_threshold_is_a_percentage_or_a_fraction() {
        for (written, rate) in [
            ("\"50%\"", 0.5),
            ("\" 12.5 % \"", 0.125),
            ("1", 1.0),
            ("0.05", 0.05),
        ] {
            let op = operator(&format!("circuit_breaker.failure_threshold = {written}"));
            assert_eq!(
                op.circuit_breaker.unwrap().failure_threshold,
                rate,
                "{written}"
            );
        }
        for written in [
            "\"0%\"", "0", "\"150%\"", "50", "-0.5", "\"half\"", "\"0.5\"",
        ] {
            let (line_no, field, message) =
                refused(&format!("circuit_breaker.failure_threshold = {written}"));
            assert_eq!(line_no, line(1), "{written}");
            assert_eq!(field, "operator[0].circuit_breaker.failure_threshold");
            assert!(
                message.contains("\"50%\" or a fraction such as 0.5"),
                "{message}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_where_they_stand() {
        let cases = [
            (
                "max_retries = -1",
                1,
                "operator[0].max_retries",
                "must be between 0 and 100, got -1",
            ),
            (
                "max_retries = 101",
                1,
                "operator[0].max_retries",
                "must be between 0 and 100",
            ),
            (
                "max_retries = 2\nretry.initial_delay = \"0s\"",
                2,
                "operator[0].retry.initial_delay",
                "must be greater than 0",
            ),
            (
                "max_retries = 2\nretry.budget_ratio = 1.5",
                2,
                "operator[0].retry.budget_ratio",
                "must be between 0.0 and 1.0, got 1.5",
            ),
            (
                "circuit_breaker.minimum_calls = 0",
                1,
                "operator[0].circuit_breaker.minimum_calls",
                "must be at least 1, got 0",
            ),
            (
                "circuit_breaker.half_open_calls = 0",
                1,
                "operator[0].circuit_breaker.half_open_calls",
                "must be at least 1, got 0",
            ),
            (
                "circuit_breaker.window = \"soon\"",
                1,
                "operator[0].circuit_breaker.window",
                "invalid duration \"soon\"",
            ),
            (
                "circuit_breaker.open_duration = 0",
                1,
                "operator[0].circuit_breaker.open_duration",
                "must be greater than 0",
            ),
            (
                "circuit_breaker.slow_call = \"0ms\"",
                1,
                "operator[0].circuit_breaker.slow_call",
                "must be greater than 0",
            ),
        ];
        for (extra, n, expected_field, expected) in cases {
            let (line_no, field, message) = refused(extra);
            assert_eq!(
                (line_no, field.as_str()),
                (line(n), expected_field),
                "{extra}"
            );
            assert!(message.contains(expected), "{extra}: {message}");
        }
    }

    #[test]
    fn max_delay_may_not_be_shorter_than_initial_delay() {
        let (line_no, field, message) =
            refused("max_retries = 1\nretry.initial_delay = \"2s\"\nretry.max_delay = \"1s\"");
        assert_eq!(
            (line_no, field.as_str()),
            (line(3), "operator[0].retry.max_delay")
        );
        assert_eq!(message, "is shorter than initial_delay (2s)");
        // Against the default max_delay, the place is initial_delay's.
        let (line_no, field, message) = refused("max_retries = 1\nretry.initial_delay = \"10s\"");
        assert_eq!(
            (line_no, field.as_str()),
            (line(2), "operator[0].retry.initial_delay")
        );
        assert_eq!(
            message,
            "is longer than max_delay (5s, the default); set retry.max_delay too"
        );
    }

    #[test]
    fn a_retry_table_without_max_retries_is_refused_rather_than_ignored() {
        let (line_no, field, message) = refused("\n[operator.retry]\ninitial_delay = \"1s\"");
        assert!(line_no >= line(2), "{line_no}");
        assert_eq!(field, "operator[0].retry");
        assert!(message.contains("add e.g. `max_retries = 3`"), "{message}");
        // An explicit 0 is a choice (retries switched off for now): accepted.
        let op = operator("max_retries = 0\nretry.initial_delay = \"1s\"");
        assert_eq!(op.retry.max_retries, 0);
    }

    #[test]
    fn unknown_keys_in_the_tables_are_named() {
        for (extra, key) in [
            (
                "max_retries = 1\nretry.initial_dely = \"1s\"",
                "initial_dely",
            ),
            ("circuit_breaker.treshold = 0.5", "treshold"),
        ] {
            let (line_no, _, message) = refused(extra);
            assert!(
                message.contains(&format!("unknown field `{key}`")),
                "{message}"
            );
            assert!(line_no >= line(1), "{extra}: line {line_no}");
        }
    }
}
