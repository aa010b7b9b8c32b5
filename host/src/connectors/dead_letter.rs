//! Dead letters: one JSON line per record that could not be processed, with the reason.
//!
//! The stage that gives up on a record encodes the line and sends it down the pipeline as an
//! `Element::DeadLetter`; the sink writes it to the dead-letter file. One writer, in-band with the
//! records, keeps dead letters inside the same checkpoints and commits as the output.

use std::time::SystemTime;

use serde::Serialize;

use crate::record::Record;

/// What an operator knows of the invocations it made for a record, for its dead letter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Calls of the plugin's `async-invoke` for the record (retries and re-invocations included).
    pub count: u32,
    pub first_at: Option<SystemTime>,
    pub last_at: Option<SystemTime>,
    /// The status of the last HTTP answer a request of the record received; `None` when it sent
    /// none or the last one got no answer (connection error, timeout).
    pub http_status: Option<u16>,
}

impl Attempts {
    /// The record was invoked (again) at wall-clock time `at`.
    pub fn invoked(&mut self, at: SystemTime) {
        self.count += 1;
        self.first_at.get_or_insert(at);
        self.last_at = Some(at);
    }
}

/// One dead letter. `stage` is "source" or the operator's name.
pub struct DeadLetter<'a> {
    pub stage: &'a str,
    /// "parse", "failure", "timeout".
    pub reason: &'a str,
    pub error: &'a str,
    pub retriable: Option<bool>,
    pub record: &'a Record,
    /// The digest of the plugin version that failed it (for an operator's dead letter).
    pub plugin: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    stage: &'a str,
    reason: &'a str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retriable: Option<bool>,
    /// "retriable" | "fatal": `retriable` said in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    error_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin_digest: Option<&'a str>,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    /// Where a Kafka source read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<KafkaPlace<'a>>,
    /// The record's payload as JSON when it is JSON, else as a string.
    payload: serde_json::Value,
}

#[derive(Serialize)]
struct KafkaPlace<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// This process's assignment generation (the sink drops letters of a revoked one).
    generation: u64,
}

impl DeadLetter<'_> {
    /// The dead-letter line, without its newline.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(None)
    }

    /// The dead-letter line of a record an operator invoked, with its attempts.
    pub fn encode_after(&self, attempts: &Attempts) -> Vec<u8> {
        self.encode_with(Some(attempts))
    }

    fn encode_with(&self, attempts: Option<&Attempts>) -> Vec<u8> {
        let payload = serde_json::from_slice(&self.record.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.record.payload).into_owned())
        });
        let line = Line {
            stage: self.stage,
            reason: self.reason,
            error: self.error,
            retriable: self.retriable,
            error_kind: self
                .retriable
                .map(|r| if r { "retriable" } else { "fatal" }),
            attempts: attempts.map(|a| a.count),
            first_attempt_at: attempts.and_then(|a| a.first_at).map(rfc3339_millis),
            last_attempt_at: attempts.and_then(|a| a.last_at).map(rfc3339_millis),
            http_status: attempts.and_then(|a| a.http_status),
            plugin_digest: self.plugin,
            line: self.record.line,
            key: self.record.key.as_deref(),
            timestamp: self.record.timestamp,
            kafka: self.record.origin.as_deref().map(|o| KafkaPlace {
                topic: &o.topic,
                partition: o.partition,
                offset: o.offset,
                generation: o.lease.generation,
            }),
            payload,
        };
        // Serializing strings, numbers and a JSON value cannot fail; keep the record anyway.
        serde_json::to_vec(&line).unwrap_or_else(|e| {
            format!(
                "{{\"stage\":{:?},\"reason\":\"encode\",\"error\":{:?},\"line\":{}}}",
                self.stage,
                e.to_string(),
                self.record.line
            )
            .into_bytes()
        })
    }
}

/// Wall-clock time as RFC 3339 UTC with milliseconds, e.g. `2023-11-14T22:13:20.042Z`.
fn rfc3339_millis(at: SystemTime) -> String {
    let at = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record() -> Record {
        Record {
            key: Some("k1".into()),
            timestamp: Some(7),
            payload: br#"{"id":1}"#.to_vec(),
            line: 3,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        }
    }

    #[test]
    fn an_operators_dead_letter_carries_its_attempts_and_the_last_http_status() {
        let record = record();
        let mut attempts = Attempts::default();
        let first = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_042);
        attempts.invoked(first);
        attempts.invoked(first + Duration::from_millis(1_500));
        attempts.http_status = Some(503);
        let letter = DeadLetter {
            stage: "enrich",
            reason: "failure",
            error: "503 from the provider",
            retriable: Some(true),
            record: &record,
            plugin: None,
        }
        .encode_after(&attempts);
        let v: serde_json::Value = serde_json::from_slice(&letter).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "stage": "enrich",
                "reason": "failure",
                "error": "503 from the provider",
                "retriable": true,
                "error_kind": "retriable",
                "attempts": 2,
                "first_attempt_at": "2023-11-14T22:13:20.042Z",
                "last_attempt_at": "2023-11-14T22:13:21.542Z",
                "http_status": 503,
                "line": 3,
                "key": "k1",
                "timestamp": 7,
                "payload": {"id": 1}
            })
        );
    }

    #[test]
    fn a_source_dead_letter_has_no_attempt_fields() {
        let record = record();
        let letter = DeadLetter {
            stage: "source",
            reason: "parse",
            error: "not JSON",
            retriable: None,
            record: &record,
            plugin: None,
        }
        .encode();
        let v: serde_json::Value = serde_json::from_slice(&letter).unwrap();
        for absent in [
            "error_kind",
            "attempts",
            "first_attempt_at",
            "last_attempt_at",
            "http_status",
        ] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        assert_eq!(v["line"], 3);
    }
}
