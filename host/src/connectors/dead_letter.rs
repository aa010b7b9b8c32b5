//! Dead letters: one JSON line per record that could not be processed, with the reason.
//!
//! The stage that gives up on a record encodes the line and sends it down the pipeline as an
//! `Element::DeadLetter`; the sink writes it to the dead-letter file. One writer, in-band with the
//! records, keeps dead letters inside the same checkpoints and commits as the output.

use serde::Serialize;

use crate::record::Record;

/// One dead letter. `stage` is "source" or the operator's name.
pub struct DeadLetter<'a> {
    pub stage: &'a str,
    /// "parse", "failure", "timeout".
    pub reason: &'a str,
    pub error: &'a str,
    pub retriable: Option<bool>,
    pub record: &'a Record,
}

#[derive(Serialize)]
struct Line<'a> {
    stage: &'a str,
    reason: &'a str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retriable: Option<bool>,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    /// The record's payload as JSON when it is JSON, else as a string.
    payload: serde_json::Value,
}

impl DeadLetter<'_> {
    /// The dead-letter line, without its newline.
    pub fn encode(&self) -> Vec<u8> {
        let payload = serde_json::from_slice(&self.record.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.record.payload).into_owned())
        });
        let line = Line {
            stage: self.stage,
            reason: self.reason,
            error: self.error,
            retriable: self.retriable,
            line: self.record.line,
            key: self.record.key.as_deref(),
            timestamp: self.record.timestamp,
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
