//! Flink's `AsyncRetryStrategy` for records (FLINK-SEMANTICS 19-26), as pure decisions: whether
//! an attempt's result is retried, and when. The core keeps the per-record state (retries made,
//! the retry pending) and the timers; nothing here is shared between records: each delay is
//! computed from the retry's number alone (a shared field made Flink's delays drift across
//! records: FLINK-33698).

use std::time::{Duration, Instant};

use crate::manifest::{AsyncRetryConfig, RetryOnFailure, RetryStrategy};
use crate::plugin::function::FailureKind;

/// How an attempt of a record ended, as the retry predicates see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Completed with at least one value.
    Values,
    /// Completed with no value (`complete([])`).
    Empty,
    /// Completed exceptionally.
    Failed(FailureKind),
}

/// Whether Flink's result or exception predicate matches this result.
pub fn predicate_matches(config: &AsyncRetryConfig, result: AttemptResult) -> bool {
    match result {
        AttemptResult::Values => false,
        AttemptResult::Empty => config.on_empty_result,
        AttemptResult::Failed(kind) => match config.on_failure {
            RetryOnFailure::Any => true,
            RetryOnFailure::Retriable => kind == FailureKind::Retriable,
            RetryOnFailure::None => false,
        },
    }
}

/// The wait before retry number `retry` (1 = the first retry): fixed, or the initial delay times
/// `multiplier^(retry-1)`, capped at the max delay (FLINK-SEMANTICS 21).
pub fn backoff(strategy: &RetryStrategy, retry: u32) -> Duration {
    match *strategy {
        RetryStrategy::None => Duration::ZERO,
        RetryStrategy::FixedDelay { delay } => delay,
        RetryStrategy::Exponential {
            initial_delay,
            max_delay,
            multiplier,
        } => {
            let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
            // Grows to infinity at worst, which the cap turns back into `max_delay`.
            let secs = initial_delay.as_secs_f64() * multiplier.powi(exponent);
            Duration::try_from_secs_f64(secs.min(max_delay.as_secs_f64())).unwrap_or(max_delay)
        }
    }
}

/// Where a record stands when one of its attempts ended.
#[derive(Clone, Copy, Debug)]
pub struct AttemptEnded {
    pub result: AttemptResult,
    /// Retries already made for the record (0 after the first call).
    pub retries_made: u32,
    pub now: Instant,
    /// When the record's timeout fires, if it has one.
    pub deadline: Option<Instant>,
    /// End of input was reached: results are final from then on (FLINK-SEMANTICS 26).
    pub input_ended: bool,
}

/// When to invoke the record again, or `None` when this attempt is final (FLINK-SEMANTICS 20):
/// the result matches a predicate, attempts remain, the timeout has not passed and input has
/// not ended. A retry that would come after the deadline is still scheduled: the timeout fires
/// first, cancels it, and the plugin's `timeout` decides (24).
pub fn next_attempt_at(config: &AsyncRetryConfig, ended: &AttemptEnded) -> Option<Instant> {
    let retry = config.is_active()
        && predicate_matches(config, ended.result)
        && ended.retries_made < config.max_attempts
        && ended.deadline.is_none_or(|d| ended.now < d)
        && !ended.input_ended;
    retry.then(|| ended.now + backoff(&config.strategy, ended.retries_made + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn exponential() -> AsyncRetryConfig {
        AsyncRetryConfig {
            strategy: RetryStrategy::Exponential {
                initial_delay: ms(100),
                max_delay: ms(1000),
                multiplier: 2.0,
            },
            max_attempts: 6,
            on_empty_result: true,
            on_failure: RetryOnFailure::Retriable,
        }
    }

    #[test]
    fn item21_exponential_backoff_grows_by_the_multiplier_up_to_the_cap() {
        let delays: Vec<Duration> = (1..=6)
            .map(|n| backoff(&exponential().strategy, n))
            .collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // Far past any float range the cap still holds.
        assert_eq!(backoff(&exponential().strategy, u32::MAX), ms(1000));
        let fixed = RetryStrategy::FixedDelay { delay: ms(30) };
        assert_eq!(backoff(&fixed, 1), ms(30));
        assert_eq!(backoff(&fixed, 9), ms(30));
    }

    #[test]
    fn item19_20_predicates_decide_which_results_are_retried() {
        let mut config = exponential();
        let retriable = AttemptResult::Failed(FailureKind::Retriable);
        let fatal = AttemptResult::Failed(FailureKind::Fatal);
        assert!(!predicate_matches(&config, AttemptResult::Values));
        assert!(predicate_matches(&config, AttemptResult::Empty));
        assert!(predicate_matches(&config, retriable));
        assert!(!predicate_matches(&config, fatal));
        config.on_failure = RetryOnFailure::Any;
        config.on_empty_result = false;
        assert!(predicate_matches(&config, fatal));
        assert!(!predicate_matches(&config, AttemptResult::Empty));
        config.on_failure = RetryOnFailure::None;
        assert!(!predicate_matches(&config, retriable));
    }

    #[test]
    fn item20_an_attempt_is_final_when_attempts_time_or_input_run_out() {
        let config = exponential();
        let now = Instant::now();
        let ended = AttemptEnded {
            result: AttemptResult::Empty,
            retries_made: 2,
            now,
            deadline: Some(now + ms(5000)),
            input_ended: false,
        };
        // The third retry waits 400 ms, whatever other records did before.
        assert_eq!(next_attempt_at(&config, &ended), Some(now + ms(400)));
        let final_ones = [
            AttemptEnded {
                result: AttemptResult::Values,
                ..ended
            },
            AttemptEnded {
                retries_made: 6,
                ..ended
            },
            AttemptEnded {
                deadline: Some(now),
                ..ended
            },
            AttemptEnded {
                input_ended: true,
                ..ended
            },
        ];
        for ended in final_ones {
            assert_eq!(next_attempt_at(&config, &ended), None, "{ended:?}");
        }
        let off = AsyncRetryConfig::default();
        assert_eq!(next_attempt_at(&off, &ended), None);
    }
}
