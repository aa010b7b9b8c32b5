//! The tokens a request will use, guessed before it goes: a tokens-per-minute limit charges
//! the guess up front and settles it with the usage the plugin reports afterwards.
//!
//! The guess: the input is a quarter of the body's bytes (the usual four bytes per token of
//! English text, JSON syntax included: a little high, which errs on the safe side); the output
//! is the most the body allows (`max_tokens`, `max_completion_tokens`, `max_output_tokens` at
//! the top of a JSON body, as OpenAI's and Anthropic's APIs name it), else the average output
//! reported so far by this operator (0 before the first report: the first answers are settled
//! as debt).

use std::sync::atomic::{AtomicU64, Ordering};

/// The top-level keys that cap a request's output tokens.
const OUTPUT_CAPS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];
/// Bytes per input token.
const BYTES_PER_TOKEN: u64 = 4;

/// One operator's guesser: it learns the average output from the usage reported.
#[derive(Debug, Default)]
pub struct TokenEstimator {
    outputs: AtomicU64,
    reports: AtomicU64,
}

impl TokenEstimator {
    /// The tokens `body` will use, input and output.
    pub fn estimate(&self, body: &[u8]) -> u64 {
        let input = (body.len() as u64).div_ceil(BYTES_PER_TOKEN);
        input + output_cap(body).unwrap_or_else(|| self.average_output())
    }

    /// Output tokens a plugin reported for one answer.
    pub fn observe_output(&self, output_tokens: u64) {
        // Relaxed: the average is a guess; a torn pair is off by one report.
        self.outputs.fetch_add(output_tokens, Ordering::Relaxed);
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    fn average_output(&self) -> u64 {
        let reports = self.reports.load(Ordering::Relaxed);
        if reports == 0 {
            return 0;
        }
        self.outputs.load(Ordering::Relaxed).div_ceil(reports)
    }
}

/// The output cap a JSON body sets, if it is a JSON object that sets one.
fn output_cap(body: &[u8]) -> Option<u64> {
    // Only a JSON object can carry one; skip parsing anything else.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    OUTPUT_CAPS
        .iter()
        .filter_map(|key| object.get(*key)?.as_u64())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_a_quarter_of_the_body_and_the_output_its_cap() {
        let estimator = TokenEstimator::default();
        let body = br#"{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            estimator.estimate(body),
            (body.len() as u64).div_ceil(4) + 100
        );
        for key in ["max_completion_tokens", "max_output_tokens"] {
            let body = format!(r#"{{"{key}": 7}}"#);
            let input = (body.len() as u64).div_ceil(4);
            assert_eq!(estimator.estimate(body.as_bytes()), input + 7, "{key}");
        }
    }

    #[test]
    fn without_a_cap_the_output_is_the_average_reported_so_far() {
        let estimator = TokenEstimator::default();
        assert_eq!(estimator.estimate(b"12345678"), 2);
        estimator.observe_output(10);
        estimator.observe_output(21);
        assert_eq!(estimator.estimate(b"12345678"), 2 + 16);
        // Not JSON, or JSON without a cap: the same.
        assert_eq!(estimator.estimate(b"{\"a\":1}"), 2 + 16);
        assert_eq!(estimator.estimate(b""), 16);
    }
}
