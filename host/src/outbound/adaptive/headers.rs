//! What a provider's answer says about its rate limits, in OpenAI's and Anthropic's words.
//!
//! - OpenAI (and the many APIs that copy it: Azure, Groq, Together, the mock):
//!   `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
//!   `x-ratelimit-reset-requests` and the same three for `-tokens`; a reset is a Go duration
//!   (`20ms`, `1s`, `7.66s`, `6m0s`), the time until the limit is whole again.
//! - Anthropic: `anthropic-ratelimit-requests-limit`, `-requests-remaining`,
//!   `-requests-reset` and the same for `-tokens`; a reset is an RFC 3339 time.
//!
//! Values that do not parse are ignored, as if the header were absent.

use std::time::{Duration, SystemTime};

/// One limit as an answer states it: so many remain until `reset` from now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Remaining {
    pub remaining: f64,
    pub reset: Duration,
    /// The whole limit, when stated.
    pub limit: Option<f64>,
}

/// The limits an answer states.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Reading {
    pub requests: Option<Remaining>,
    pub tokens: Option<Remaining>,
}

impl Reading {
    pub fn any(&self) -> bool {
        self.requests.is_some() || self.tokens.is_some()
    }
}

/// Reads the rate-limit headers of an answer received at `now` (for Anthropic's times).
pub(super) fn read(headers: &[(String, String)], now: SystemTime) -> Reading {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let number = |name: &str| {
        header(name)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    let limit = |kind: &str| {
        let openai = number(&format!("x-ratelimit-remaining-{kind}"))
            .zip(header(&format!("x-ratelimit-reset-{kind}")).and_then(go_duration));
        let (remaining, reset, limit) = match openai {
            Some((remaining, reset)) => (
                remaining,
                reset,
                number(&format!("x-ratelimit-limit-{kind}")),
            ),
            None => {
                let remaining = number(&format!("anthropic-ratelimit-{kind}-remaining"))?;
                let reset = header(&format!("anthropic-ratelimit-{kind}-reset"))
                    .and_then(|at| time_until(at, now))?;
                let limit = number(&format!("anthropic-ratelimit-{kind}-limit"));
                (remaining, reset, limit)
            }
        };
        Some(Remaining {
            remaining,
            reset,
            limit,
        })
    };
    Reading {
        requests: limit("requests"),
        tokens: limit("tokens"),
    }
}

/// A Go duration (`time.Duration.String()`), as OpenAI writes its resets: a sequence of
/// decimal numbers each with a unit (`h`, `m`, `s`, `ms`, `us`/`µs`, `ns`), e.g. `6m0s`,
/// `1.5s`, `120ms`. A bare number is seconds. (humantime reads no fractions, so this small
/// reader is the host's own.)
pub(super) fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if let Ok(seconds) = rest.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    if rest.is_empty() {
        return None;
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !is_number(c)).unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.find(is_number).unwrap_or(rest.len());
        let scale = match &rest[..letters] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        seconds += value * scale;
        rest = &rest[letters..];
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// The time from `now` until the RFC 3339 time `at`; zero if it has passed.
fn time_until(at: &str, now: SystemTime) -> Option<Duration> {
    let at: jiff::Timestamp = at.parse().ok()?;
    let at = SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn go_durations_read_as_openai_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration("1s"), Some(ms(1000)));
        assert_eq!(go_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(go_duration("20ms"), Some(ms(20)));
        assert_eq!(go_duration("7.66s"), Some(ms(7660)));
        assert_eq!(go_duration("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(
            go_duration("1500us"),
            Some(ms(1) + Duration::from_micros(500))
        );
        assert_eq!(go_duration(" 2 "), Some(ms(2000)));
        assert_eq!(go_duration("0s"), Some(ms(0)));
        for bad in ["", "s", "1x", "1.2.3s", "-1s", "soon", "1s2"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn openai_headers_give_requests_and_tokens() {
        let reading = read(
            &headers(&[
                ("x-ratelimit-limit-requests", "500"),
                ("X-RateLimit-Remaining-Requests", "499"),
                ("x-ratelimit-reset-requests", "120ms"),
                ("x-ratelimit-remaining-tokens", "149984"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ]),
            SystemTime::now(),
        );
        assert_eq!(
            reading.requests,
            Some(Remaining {
                remaining: 499.0,
                reset: Duration::from_millis(120),
                limit: Some(500.0)
            })
        );
        assert_eq!(
            reading.tokens,
            Some(Remaining {
                remaining: 149_984.0,
                reset: Duration::from_secs(360),
                limit: None
            })
        );
        assert!(reading.any());
    }

    #[test]
    fn anthropic_headers_give_a_reset_time() {
        let now = SystemTime::from("2026-11-30T20:00:00Z".parse::<jiff::Timestamp>().unwrap());
        let reading = read(
            &headers(&[
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                (
                    "anthropic-ratelimit-requests-reset",
                    "2026-11-30T20:00:01.5Z",
                ),
                ("anthropic-ratelimit-tokens-remaining", "100"),
                // Already passed: no wait.
                ("anthropic-ratelimit-tokens-reset", "2026-11-30T19:59:00Z"),
            ]),
            now,
        );
        let requests = reading.requests.unwrap();
        assert_eq!(requests.remaining, 0.0);
        assert_eq!(requests.reset, Duration::from_millis(1500));
        assert_eq!(requests.limit, Some(50.0));
        assert_eq!(reading.tokens.unwrap().reset, Duration::ZERO);
    }

    #[test]
    fn missing_or_garbled_headers_read_as_nothing() {
        let now = SystemTime::now();
        assert!(!read(&[], now).any());
        let garbled = headers(&[
            ("x-ratelimit-remaining-requests", "lots"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "5"),
            ("x-ratelimit-reset-tokens", "tomorrow"),
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("anthropic-ratelimit-requests-reset", "not a time"),
        ]);
        assert!(!read(&garbled, now).any());
        // A remaining count without its reset says nothing about when.
        let half = headers(&[("x-ratelimit-remaining-requests", "3")]);
        assert!(!read(&half, now).any());
    }
}
