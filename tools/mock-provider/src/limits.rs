//! The rate-limited mode: requests per second and tokens per minute, each over a fixed window
//! (1 s and 60 s, counted from the server's start), with OpenAI's rate-limit headers on every
//! answer and a 429 beyond the limit.
//!
//! Fixed windows, not a token bucket: what remains and when it resets are then exact, so the
//! headers say precisely what the next window allows. A request is refused when its window's
//! requests are used up, or when the tokens window is already spent; the tokens of a request
//! are charged once its answer (and so its usage) is known.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

/// Which rate-limit headers the answers carry (`--rate-limit-headers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitHeaders {
    /// OpenAI's `x-ratelimit-*` on every answer; `Retry-After` and `retry-after-ms` on a 429.
    #[default]
    All,
    /// Only `Retry-After` (whole seconds) on a 429.
    RetryAfter,
    /// Bare 429s: no header says anything about the limit.
    None,
}

/// One fixed window: at most `limit` per `length`.
struct Window {
    limit: u64,
    length: Duration,
    /// The window's number since the start, and what it has used.
    used: Mutex<(u64, u64)>,
}

impl Window {
    fn new(limit: u64, length: Duration) -> Window {
        Window {
            limit,
            length,
            used: Mutex::new((0, 0)),
        }
    }

    fn index(&self, since_start: Duration) -> u64 {
        (since_start.as_nanos() / self.length.as_nanos().max(1)) as u64
    }

    /// What the current window has used so far.
    fn used_now(&self, since_start: Duration) -> std::sync::MutexGuard<'_, (u64, u64)> {
        let index = self.index(since_start);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.0 != index {
            *used = (index, 0);
        }
        used
    }

    /// Takes `n` if they fit; returns what the window has used after.
    fn take(&self, since_start: Duration, n: u64) -> Option<u64> {
        let mut used = self.used_now(since_start);
        if used.1 + n > self.limit {
            return None;
        }
        used.1 += n;
        Some(used.1)
    }

    /// Charges `n` whether or not they fit (tokens already spent).
    fn charge(&self, since_start: Duration, n: u64) {
        self.used_now(since_start).1 += n;
    }

    fn spent(&self, since_start: Duration) -> bool {
        self.used_now(since_start).1 >= self.limit
    }

    fn remaining(&self, since_start: Duration) -> u64 {
        self.limit.saturating_sub(self.used_now(since_start).1)
    }

    /// Time until the current window ends.
    fn reset(&self, since_start: Duration) -> Duration {
        let next = self.length.as_nanos() * (u128::from(self.index(since_start)) + 1);
        let left = next.saturating_sub(since_start.as_nanos());
        Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX))
    }
}

/// The limits of a rate-limited mock, shared by every connection.
pub(crate) struct Limits {
    started: Instant,
    requests: Option<Window>,
    tokens: Option<Window>,
    headers: LimitHeaders,
}

impl Limits {
    /// `None` when neither limit is set.
    pub(crate) fn new(
        requests_per_second: Option<u64>,
        tokens_per_minute: Option<u64>,
        headers: LimitHeaders,
    ) -> Option<Limits> {
        if requests_per_second.is_none() && tokens_per_minute.is_none() {
            return None;
        }
        Some(Limits {
            started: Instant::now(),
            requests: requests_per_second.map(|r| Window::new(r, Duration::from_secs(1))),
            tokens: tokens_per_minute.map(|t| Window::new(t, Duration::from_secs(60))),
            headers,
        })
    }

    fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// Admits one request and says how many its 1-s window has admitted (0 without a
    /// request limit), or refuses it and says how long until the limit that refused it resets.
    pub(crate) fn admit(&self) -> Result<u64, Duration> {
        let at = self.since_start();
        if let Some(tokens) = &self.tokens {
            if tokens.spent(at) {
                return Err(tokens.reset(at));
            }
        }
        match &self.requests {
            Some(requests) => requests.take(at, 1).ok_or_else(|| requests.reset(at)),
            None => Ok(0),
        }
    }

    /// Charges the tokens an answer used.
    pub(crate) fn charge_tokens(&self, tokens: u64) {
        if let Some(window) = &self.tokens {
            window.charge(self.since_start(), tokens);
        }
    }

    /// Writes the headers of any answer (OpenAI's): limit, remaining and reset, per limit.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        if self.headers != LimitHeaders::All {
            return;
        }
        let at = self.since_start();
        for (kind, window) in [("requests", &self.requests), ("tokens", &self.tokens)] {
            let Some(window) = window else { continue };
            let mut put = |name: String, value: String| {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    headers.insert(name, value);
                }
            };
            put(
                format!("x-ratelimit-limit-{kind}"),
                window.limit.to_string(),
            );
            let remaining = window.remaining(at);
            put(
                format!("x-ratelimit-remaining-{kind}"),
                remaining.to_string(),
            );
            put(
                format!("x-ratelimit-reset-{kind}"),
                go_duration(window.reset(at)),
            );
        }
    }

    /// Writes the headers of a 429 that waits `reset`: `Retry-After` (whole seconds, rounded
    /// up) and, with all headers, `retry-after-ms` and the `x-ratelimit-*` ones.
    pub(crate) fn write_refusal(&self, reset: Duration, headers: &mut HeaderMap) {
        if self.headers == LimitHeaders::None {
            return;
        }
        let millis = reset.as_nanos().div_ceil(1_000_000) as u64;
        headers.insert(RETRY_AFTER, HeaderValue::from(millis.div_ceil(1000)));
        if self.headers == LimitHeaders::All {
            headers.insert("retry-after-ms", HeaderValue::from(millis));
            self.write_headers(headers);
        }
    }
}

/// A duration the way OpenAI writes it (Go's `time.Duration` format): `20ms`, `1s`, `1.5s`,
/// `6m0s`, `1h0m0s`. Below a second, whole milliseconds rounded up.
pub fn go_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return match d.as_nanos().div_ceil(1_000_000) {
            0 => "0s".into(),
            ms => format!("{ms}ms"),
        };
    }
    let secs = d.as_secs();
    let (hours, minutes) = (secs / 3600, secs % 3600 / 60);
    let millis = d.subsec_millis();
    let mut seconds = (secs % 60).to_string();
    if millis > 0 {
        let fraction = format!("{millis:03}");
        seconds = format!("{seconds}.{}", fraction.trim_end_matches('0'));
    }
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_openai_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(ms(0)), "0s");
        assert_eq!(go_duration(ms(20)), "20ms");
        assert_eq!(go_duration(Duration::from_micros(19_001)), "20ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(ms(7_660)), "7.66s");
    }

    #[test]
    fn a_window_takes_up_to_its_limit_and_starts_afresh_after_its_length() {
        let window = Window::new(2, Duration::from_secs(1));
        let at = Duration::from_millis;
        assert_eq!(window.take(at(100), 1), Some(1));
        assert_eq!(window.take(at(200), 1), Some(2));
        assert_eq!(window.take(at(300), 1), None);
        assert_eq!(window.remaining(at(300)), 0);
        assert_eq!(window.reset(at(300)), at(700));
        assert_eq!(window.take(at(1000), 1), Some(1));
        assert_eq!(window.remaining(at(1999)), 1);
    }
}
