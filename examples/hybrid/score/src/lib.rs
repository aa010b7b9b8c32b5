//! The cheap half of "cheap + expensive": a logistic-regression scorer that reads the text of
//! every record and lets through only those worth an expensive model (examples/hybrid).
//!
//! `p = sigmoid(bias + sum of the weights of the words in the text)`, where the text is
//! lower-cased and split on every character that is not a letter or a digit, and a word counts
//! once per occurrence (`features = "count"`, bag of words) or once at all (`"presence"`). The
//! record leaves with `score` = `p` rounded to 4 places; it is flagged when that score is at or
//! above `threshold`. Everything happens inside `invoke`: no request, no waiting.
//!
//! Config (the operator's `config` table):
//!
//! | field | default | meaning |
//! | --- | --- | --- |
//! | `weights` | required | table word -> weight (a number); words are matched in lower case and must be single words (letters and digits only) |
//! | `bias` | `0.0` | the intercept |
//! | `threshold` | `0.5` | probability, 0 to 1: a record is flagged when its rounded score is at or above it |
//! | `input_field` | `"text"` | top-level record field holding the text (must be a string) |
//! | `output_field` | `"score"` | field the score goes to |
//! | `keep` | `"flagged"` | `"flagged"`: records under the threshold are filtered out (completed with no output); `"all"`: every record passes, with a boolean `flagged` |
//! | `features` | `"count"` | `"count"`: a word's weight counts each time it occurs; `"presence"`: once |
//!
//! A record that is not a JSON object, or whose input field is missing or not a string, fails
//! fatally with a message naming the field (the operator's `on_failure` decides what follows).

mod scorer;

use scorer::{Features, Keep, Scorer, SettingError, Settings};
use waio_sdk::serde_json::Value;
use waio_sdk::{export_enricher, Config, ConfigError, Enricher, Event, Failure, ResultFuture};

const KNOWN_FIELDS: &[&str] = &[
    "weights",
    "bias",
    "threshold",
    "input_field",
    "output_field",
    "keep",
    "features",
];

struct Score {
    scorer: Scorer,
}

fn settings(config: &Config) -> Result<Settings, ConfigError> {
    config.deny_unknown(KNOWN_FIELDS)?;
    let weights = match config.value("weights") {
        None => {
            return Err(ConfigError::Missing {
                field: "weights".into(),
            })
        }
        Some(Value::Object(table)) => table
            .iter()
            .map(|(word, weight)| match weight.as_f64() {
                Some(weight) => Ok((word.clone(), weight)),
                None => Err(ConfigError::invalid(
                    "weights",
                    format!("`{word}`: expected a number, got {weight}"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ConfigError::invalid(
                "weights",
                "expected a table of word = weight",
            ))
        }
    };
    let keep = match config.opt_str("keep")?.unwrap_or("flagged") {
        "flagged" => Keep::Flagged,
        "all" => Keep::All,
        other => {
            return Err(ConfigError::invalid(
                "keep",
                format!("expected \"flagged\" or \"all\", got \"{other}\""),
            ))
        }
    };
    let features = match config.opt_str("features")?.unwrap_or("count") {
        "count" => Features::Count,
        "presence" => Features::Presence,
        other => {
            return Err(ConfigError::invalid(
                "features",
                format!("expected \"count\" or \"presence\", got \"{other}\""),
            ))
        }
    };
    Ok(Settings {
        input_field: config.get_or("input_field", "text".to_string())?,
        output_field: config.get_or("output_field", "score".to_string())?,
        weights,
        bias: config.get_or("bias", 0.0)?,
        threshold: config.get_or("threshold", 0.5)?,
        keep,
        features,
    })
}

fn scorer(config: &Config) -> Result<Scorer, ConfigError> {
    Scorer::new(settings(config)?)
        .map_err(|SettingError { field, reason }| ConfigError::invalid(field, reason))
}

impl Enricher for Score {
    fn open(config: Config) -> Result<Self, String> {
        Ok(Score {
            scorer: scorer(&config)?,
        })
    }

    fn invoke(&self, input: Event, output: ResultFuture) {
        match self.scorer.process(&input.payload) {
            Ok(None) => output.complete_none(),
            Ok(Some(payload)) => output.complete_one(Event { payload, ..input }),
            Err(message) => output.fail(Failure::fatal(message)),
        }
    }
}

export_enricher!(Score);

#[cfg(test)]
mod tests {
    use super::*;
    use waio_sdk::serde_json::json;

    fn config(value: Value) -> Config {
        Config::parse(&value.to_string()).unwrap()
    }

    fn error(value: Value) -> String {
        scorer(&config(value)).unwrap_err().to_string()
    }

    #[test]
    fn a_config_like_the_example_opens() {
        let s = scorer(&config(json!({
            "weights": {"fraud": 3.2, "Outage": 2, "thanks": -1.5},
            "bias": -4.0,
            "threshold": 0.8,
            "keep": "all",
            "features": "presence",
        })))
        .unwrap();
        assert_eq!(s.score("OUTAGE fraud"), 0.7685);
        assert!(!s.flags(0.7685));
    }

    #[test]
    fn defaults() {
        let s = scorer(&config(json!({"weights": {"fraud": 1.0}}))).unwrap();
        // bias 0, count features, keep = flagged, threshold 0.5, fields text -> score.
        assert_eq!(
            s.process(br#"{"text":"nothing"}"#).unwrap(),
            Some(br#"{"text":"nothing","score":0.5}"#.to_vec())
        );
        assert_eq!(s.score("fraud fraud"), 0.8808);
    }

    #[test]
    fn config_errors_name_the_field() {
        assert_eq!(error(json!({})), "config field `weights` is missing");
        assert_eq!(
            error(json!({"weights": [1]})),
            "config field `weights` is invalid: expected a table of word = weight"
        );
        assert_eq!(
            error(json!({"weights": {"fraud": "high"}})),
            "config field `weights` is invalid: `fraud`: expected a number, got \"high\""
        );
        assert_eq!(
            error(json!({"weights": {"a": 1}, "threshold": 80})),
            "config field `threshold` is invalid: is a probability: expected 0 to 1, got 80"
        );
        assert_eq!(
            error(json!({"weights": {"a": 1}, "keep": "some"})),
            "config field `keep` is invalid: expected \"flagged\" or \"all\", got \"some\""
        );
        assert_eq!(
            error(json!({"weights": {"a": 1}, "features": "tfidf"})),
            "config field `features` is invalid: expected \"count\" or \"presence\", got \"tfidf\""
        );
        assert!(error(json!({"weights": {"a": 1}, "treshold": 0.5}))
            .starts_with("unknown config field `treshold`"));
        assert!(error(json!({"weights": {"a": 1}, "bias": "low"}))
            .starts_with("config field `bias` is invalid"));
    }
}
