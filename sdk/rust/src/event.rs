//! Records and failures.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::bindings::waio::enricher::types as wit;

/// One stream record: bytes plus metadata. The payload is one JSON document in UTF-8 unless the
/// pipeline says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// Key of the record, if it has one (a user id, a ticket id, ...).
    pub key: Option<String>,
    /// Event time in milliseconds since the Unix epoch, if the record has one. The host gives
    /// every output the event time of its input, whatever a plugin puts here.
    pub timestamp: Option<i64>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Event {
    /// An event with this payload and no key or timestamp.
    pub fn new(payload: impl Into<Vec<u8>>) -> Event {
        Event {
            key: None,
            timestamp: None,
            payload: payload.into(),
        }
    }

    /// An event whose payload is `value` as JSON, with no key or timestamp.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Event, Failure> {
        Ok(Event::new(to_json(value)?))
    }

    /// Parses the payload as JSON into `T`. A payload that does not parse is a fatal failure:
    /// trying the same record again gives the same answer.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Failure::fatal(format!("payload is not the expected JSON: {e}")))
    }

    /// Parses the payload as a JSON object, the usual shape of a record. Anything else is a
    /// fatal failure that names what the payload was instead.
    pub fn json_object(&self) -> Result<Map<String, Value>, Failure> {
        match self.json::<Value>()? {
            Value::Object(map) => Ok(map),
            other => Err(Failure::fatal(format!(
                "payload must be a JSON object, got {}",
                json_kind(&other)
            ))),
        }
    }

    /// A new event with the same key and timestamp and `value` as its JSON payload: the usual
    /// way to emit an enriched record.
    pub fn with_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<Event, Failure> {
        Ok(self.with_payload(to_json(value)?))
    }

    /// A new event with the same key and timestamp and this payload.
    pub fn with_payload(&self, payload: impl Into<Vec<u8>>) -> Event {
        Event {
            key: self.key.clone(),
            timestamp: self.timestamp,
            payload: payload.into(),
        }
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value)
        .map_err(|e| Failure::fatal(format!("cannot write the output as JSON: {e}")))
}

/// The name of a JSON value's type, for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl From<wit::Event> for Event {
    fn from(e: wit::Event) -> Event {
        Event {
            key: e.key,
            timestamp: e.timestamp,
            payload: e.payload,
        }
    }
}

impl From<Event> for wit::Event {
    fn from(e: Event) -> wit::Event {
        wit::Event {
            key: e.key,
            timestamp: e.timestamp,
            payload: e.payload,
        }
    }
}

/// Whether trying a record again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A passing fault (rate limited, server error, timeout): a retry may succeed.
    Retriable,
    /// A fault of the record or of the plugin: a retry gives the same answer.
    Fatal,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Retriable => "retriable",
            FailureKind::Fatal => "fatal",
        })
    }
}

/// Why a record could not be enriched. The host's retry policy, circuit breaker and dead-letter
/// output act on [`Failure::kind`]; the message ends up in the job's error or the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Whether a retry may succeed.
    pub kind: FailureKind,
    /// A message for people.
    pub message: String,
}

impl Failure {
    /// A failure that a retry may cure (rate limited, server error, timeout).
    pub fn retriable(message: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Retriable,
            message: message.into(),
        }
    }

    /// A failure that a retry would repeat (bad record, bad answer, plugin bug).
    pub fn fatal(message: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Fatal,
            message: message.into(),
        }
    }

    /// Puts `context` in front of the message (`"{context}: {message}"`), keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Failure {
        Failure {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }

    /// Whether a retry may succeed.
    pub fn is_retriable(&self) -> bool {
        self.kind == FailureKind::Retriable
    }
}

impl From<Failure> for wit::Failure {
    fn from(f: Failure) -> wit::Failure {
        wit::Failure {
            kind: match f.kind {
                FailureKind::Retriable => wit::FailureKind::Retriable,
                FailureKind::Fatal => wit::FailureKind::Fatal,
            },
            message: f.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn with_json_keeps_key_and_timestamp() {
        let input = Event {
            key: Some("u1".into()),
            timestamp: Some(42),
            payload: b"{}".to_vec(),
        };
        let out = input.with_json(&json!({"a": 1})).unwrap();
        assert_eq!(out.key.as_deref(), Some("u1"));
        assert_eq!(out.timestamp, Some(42));
        assert_eq!(out.json::<Value>().unwrap(), json!({"a": 1}));
    }

    #[test]
    fn bad_payload_is_a_fatal_failure() {
        let err = Event::new("not json").json::<Value>().unwrap_err();
        assert_eq!(err.kind, FailureKind::Fatal);
        assert!(err.message.contains("not the expected JSON"), "{err}");

        let err = Event::new("[1,2]").json_object().unwrap_err();
        assert_eq!(err.kind, FailureKind::Fatal);
        assert_eq!(err.message, "payload must be a JSON object, got an array");
    }

    #[test]
    fn context_keeps_kind() {
        let f = Failure::retriable("HTTP 503").context("lookup");
        assert!(f.is_retriable());
        assert_eq!(f.to_string(), "lookup: HTTP 503");
    }
}
