//! Cost guards: what keeps one record from costing more than the pipeline meant it to.
//!
//! - `max_input_chars` cuts a long input, marking the cut, so that one oversized record (a
//!   whole document pasted into a field) cannot cost a thousand normal ones; the cuts are
//!   counted and the count logged when the operator closes.
//! - `max_tokens` is sent with every chat request (a default when not configured), so no
//!   answer runs on unbounded.

use std::borrow::Cow;
use std::cell::Cell;

use waio_sdk::{log, Config, ConfigError};

/// Sent when the config names no `max_tokens`: enough for a label or a short summary, and a
/// bound on what a runaway answer can cost.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Written where a cut input ends, so the model (and whoever reads its answer) knows.
pub const DEFAULT_MARKER: &str = " [truncated]";

/// `max_input_chars` and `truncation_marker`: the longest input sent, in characters
/// (Unicode scalar values), marker included.
#[derive(Debug)]
pub struct InputLimit {
    max_chars: usize,
    marker: String,
    /// Records whose input was cut so far (the plugin runs on one thread).
    cut: Cell<u64>,
}

impl InputLimit {
    /// `None` when the config sets no `max_input_chars`.
    pub fn from_config(config: &Config) -> Result<Option<InputLimit>, ConfigError> {
        let marker: String = config.get_or("truncation_marker", DEFAULT_MARKER.to_string())?;
        let Some(max_chars) = config.opt::<u32>("max_input_chars")? else {
            if config.value("truncation_marker").is_some() {
                return Err(ConfigError::invalid(
                    "truncation_marker",
                    "only applies with `max_input_chars`",
                ));
            }
            return Ok(None);
        };
        let max_chars = max_chars as usize;
        let marker_chars = marker.chars().count();
        if max_chars <= marker_chars {
            return Err(ConfigError::invalid(
                "max_input_chars",
                format!(
                    "must be above the length of the truncation marker ({marker_chars} characters)"
                ),
            ));
        }
        Ok(Some(InputLimit {
            max_chars,
            marker,
            cut: Cell::new(0),
        }))
    }

    /// `text` as it may be sent: unchanged when short enough, else its start and the marker,
    /// `max_chars` characters in all. The second value says whether it was cut.
    pub fn apply<'t>(&self, text: Cow<'t, str>) -> (Cow<'t, str>, bool) {
        // Most inputs are short: find the cut point without counting the whole text.
        if text.char_indices().nth(self.max_chars).is_none() {
            return (text, false);
        }
        let keep = self.max_chars - self.marker.chars().count();
        let keep_end = text
            .char_indices()
            .nth(keep)
            .map_or(text.len(), |(at, _)| at);
        let mut cut = String::with_capacity(keep_end + self.marker.len());
        cut.push_str(&text[..keep_end]);
        cut.push_str(&self.marker);
        (Cow::Owned(cut), true)
    }

    /// Counts a record whose input was cut, and returns the count so far.
    pub fn count_cut(&self) -> u64 {
        let n = self.cut.get() + 1;
        self.cut.set(n);
        n
    }

    /// Logs the first cut at once (the later ones are only counted).
    pub fn log_first_cut(&self) {
        log::warn(format!(
            "an input was longer than max_input_chars = {} and was cut; the records cut are counted and the count logged when the operator closes",
            self.max_chars
        ));
    }

    /// Records whose input was cut so far.
    #[cfg(test)]
    pub fn cut(&self) -> u64 {
        self.cut.get()
    }

    /// Logs the count, when there is one (at close).
    pub fn report(&self) {
        let n = self.cut.get();
        if n > 0 {
            log::info(format!(
                "{n} record(s) had their input cut to max_input_chars = {}",
                self.max_chars
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waio_sdk::serde_json::{json, Value};

    fn limit(config: Value) -> Result<Option<InputLimit>, ConfigError> {
        match config {
            Value::Object(map) => InputLimit::from_config(&Config::from_map(map)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_short_input_is_sent_as_it_is() {
        let limit = limit(json!({"max_input_chars": 20})).unwrap().unwrap();
        let (text, cut) = limit.apply(Cow::Borrowed("short enough"));
        assert_eq!((text.as_ref(), cut), ("short enough", false));
        // Exactly the limit is not cut either.
        let (text, cut) = limit.apply(Cow::Borrowed("12345678901234567890"));
        assert_eq!((text.as_ref(), cut), ("12345678901234567890", false));
    }

    #[test]
    fn a_long_input_is_cut_to_the_limit_marker_included() {
        let limit = limit(json!({"max_input_chars": 20})).unwrap().unwrap();
        let (text, cut) = limit.apply(Cow::Borrowed("123456789012345678901"));
        assert!(cut);
        assert_eq!(text, "12345678 [truncated]");
        assert_eq!(text.chars().count(), 20);
    }

    #[test]
    fn characters_not_bytes_are_counted_and_never_split() {
        let limit = limit(json!({"max_input_chars": 4, "truncation_marker": "…"}))
            .unwrap()
            .unwrap();
        let (text, cut) = limit.apply(Cow::Borrowed("ééééé"));
        assert!(cut);
        assert_eq!(text, "ééé…");
    }

    #[test]
    fn cuts_are_counted() {
        let limit = limit(json!({"max_input_chars": 15})).unwrap().unwrap();
        assert_eq!(limit.cut(), 0);
        assert_eq!(limit.count_cut(), 1);
        assert_eq!(limit.count_cut(), 2);
        assert_eq!(limit.cut(), 2);
    }

    #[test]
    fn a_limit_no_longer_than_the_marker_is_refused() {
        let error = limit(json!({"max_input_chars": 12}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`max_input_chars`"), "{error}");
        assert!(error.contains("12 characters"), "{error}");
        let error = limit(json!({"truncation_marker": "..."}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`truncation_marker`"), "{error}");
        assert!(limit(json!({})).unwrap().is_none());
    }
}
