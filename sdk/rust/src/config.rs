//! The plugin's configuration: the operator's `config` table from the pipeline manifest.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::event::json_kind;

/// A configuration problem. Converts into `String`, so `?` works inside [`crate::Enricher::open`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration is not a JSON object.
    #[error("config must be a JSON object: {0}")]
    NotAnObject(String),
    /// A required field is absent (or null).
    #[error("config field `{field}` is missing")]
    Missing {
        /// The field.
        field: String,
    },
    /// A field has a value of the wrong type or out of range.
    #[error("config field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field the plugin does not know (often a typo).
    #[error("unknown config field `{field}` (known fields: {known})")]
    Unknown {
        /// The field.
        field: String,
        /// The fields the plugin knows, comma-separated.
        known: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

/// The operator's `config` table, a JSON object, with typed accessors whose errors name the
/// field. A field set to `null` counts as absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    fields: Map<String, Value>,
}

impl Config {
    /// Parses the JSON text the host passes to `open`. Empty text is an empty config.
    pub fn parse(json: &str) -> Result<Config, ConfigError> {
        if json.trim().is_empty() {
            return Ok(Config::default());
        }
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(fields)) => Ok(Config { fields }),
            Ok(other) => Err(ConfigError::NotAnObject(format!(
                "got {}",
                json_kind(&other)
            ))),
            Err(e) => Err(ConfigError::NotAnObject(e.to_string())),
        }
    }

    /// A config made of these fields (handy in tests).
    pub fn from_map(fields: Map<String, Value>) -> Config {
        Config { fields }
    }

    /// The whole object.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The raw value of `field`, if present and not null.
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// A required field, converted to `T`.
    pub fn get<T: DeserializeOwned>(&self, field: &str) -> Result<T, ConfigError> {
        self.opt(field)?.ok_or_else(|| ConfigError::Missing {
            field: field.to_string(),
        })
    }

    /// An optional field, converted to `T`.
    pub fn opt<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>, ConfigError> {
        match self.value(field) {
            None => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| ConfigError::invalid(field, e.to_string())),
        }
    }

    /// An optional field, converted to `T`, or `default` when absent.
    pub fn get_or<T: DeserializeOwned>(&self, field: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.opt(field)?.unwrap_or(default))
    }

    /// A required string field.
    pub fn str(&self, field: &str) -> Result<&str, ConfigError> {
        self.opt_str(field)?.ok_or_else(|| ConfigError::Missing {
            field: field.to_string(),
        })
    }

    /// An optional string field.
    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, ConfigError> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ConfigError::invalid(
                field,
                format!("expected a string, got {}", json_kind(other)),
            )),
        }
    }

    /// Fails on the first field not in `known`, so typos do not pass silently.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self.fields.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(field) => Err(ConfigError::Unknown {
                field: field.clone(),
                known: known.join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_name_the_field() {
        let c = Config::parse(r#"{"url": "http://x", "n": "five", "gone": null}"#).unwrap();
        assert_eq!(c.str("url").unwrap(), "http://x");
        assert_eq!(
            c.str("base_url").unwrap_err().to_string(),
            "config field `base_url` is missing"
        );
        let err = c.get::<u32>("n").unwrap_err().to_string();
        assert!(err.starts_with("config field `n` is invalid:"), "{err}");
        assert_eq!(c.opt::<u32>("gone").unwrap(), None);
        assert_eq!(c.get_or("absent", 7u32).unwrap(), 7);
        assert_eq!(
            c.opt_str("n").unwrap(),
            Some("five"),
            "strings are returned as they are"
        );
        let err = Config::parse(r#"{"n": 5}"#).unwrap().str("n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config field `n` is invalid: expected a string, got a number"
        );
    }

    #[test]
    fn config_must_be_an_object() {
        assert!(Config::parse("[]").is_err());
        assert!(Config::parse("{").is_err());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_fields_are_reported() {
        let c = Config::parse(r#"{"url": "x", "methd": "GET"}"#).unwrap();
        let err = c.deny_unknown(&["url", "method"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown config field `methd` (known fields: url, method)"
        );
        assert!(c.deny_unknown(&["url", "methd"]).is_ok());
    }
}
