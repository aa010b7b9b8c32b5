//! Sources: JSON-lines files, stdin, and a generator for benchmarks.
//!
//! A source runs on a blocking thread and hands batches to the first operator through a bounded
//! channel; when the operator is full the channel fills and the source waits (backpressure).
//!
//! A JSON-lines input holds one JSON document per line. A line `{"$watermark": 1234}` is a
//! watermark, not a record. A line that is not JSON goes to the dead-letter output with the parse
//! error and its line number; blank lines are skipped.

use std::io::BufRead;

use crate::connectors::dead_letter::{DeadLetter, DeadLetters};
use crate::manifest::{FieldMapping, SourceConfig};
use crate::record::{Batch, Element, Message, Record, StageSender, BATCH_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open input {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read input {path} at line {line}: {source}")]
    Read {
        path: String,
        line: u64,
        source: std::io::Error,
    },
    #[error("input file {path} is empty: there are no records to process")]
    Empty { path: String },
    #[error("cannot write a dead letter: {0}")]
    DeadLetter(std::io::Error),
}

#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    pub records: u64,
    pub watermarks: u64,
    pub dead_lettered: u64,
}

/// A label for messages: the file name, "stdin" or "generator".
pub fn source_label(config: &SourceConfig) -> String {
    match config {
        SourceConfig::File { path, .. } => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
        SourceConfig::Stdin { .. } => "stdin".into(),
        SourceConfig::Generator { .. } => "generator".into(),
    }
}

/// Reads the whole source into `tx`. Runs on its own thread. Returns early, without error,
/// if the pipeline stopped listening.
pub fn run_source(
    config: &SourceConfig,
    tx: StageSender,
    dead_letters: &DeadLetters,
) -> Result<SourceReport, SourceError> {
    match config {
        SourceConfig::File { path, fields } => {
            let label = path.display().to_string();
            let file = std::fs::File::open(path).map_err(|source| SourceError::Open {
                path: label.clone(),
                source,
            })?;
            // An empty input is almost always a mistake (wrong path, file not written yet).
            if file.metadata().map(|m| m.len() == 0).unwrap_or(false) {
                return Err(SourceError::Empty { path: label });
            }
            let reader = std::io::BufReader::with_capacity(256 * 1024, file);
            read_lines(reader, &label, fields, tx, dead_letters)
        }
        SourceConfig::Stdin { fields } => {
            let stdin = std::io::stdin();
            read_lines(stdin.lock(), "stdin", fields, tx, dead_letters)
        }
        SourceConfig::Generator {
            count,
            payload_bytes,
        } => Ok(generate(*count, *payload_bytes, tx)),
    }
}

fn read_lines(
    mut reader: impl BufRead,
    label: &str,
    fields: &FieldMapping,
    tx: StageSender,
    dead_letters: &DeadLetters,
) -> Result<SourceReport, SourceError> {
    let mut report = SourceReport::default();
    let mut batch: Batch = Vec::with_capacity(BATCH_SIZE);
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| SourceError::Read {
                path: label.to_string(),
                line: line_no + 1,
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = trim(&buf);
        if text.is_empty() {
            continue;
        }
        match parse_line(text, line_no, fields) {
            Ok(element) => {
                match &element {
                    Element::Record(_) => report.records += 1,
                    Element::Watermark(_) => report.watermarks += 1,
                }
                batch.push(element);
            }
            Err(error) => {
                report.records += 1;
                report.dead_lettered += 1;
                let record = Record {
                    key: None,
                    timestamp: None,
                    payload: text.to_vec(),
                    line: line_no,
                };
                let message = format!("{label}:{line_no}: {error}");
                dead_letters
                    .write(&DeadLetter {
                        stage: "source",
                        reason: "parse",
                        error: &message,
                        retriable: None,
                        record: &record,
                    })
                    .map_err(SourceError::DeadLetter)?;
                tracing::warn!("{message} (sent to the dead-letter output)");
            }
        }
        // Hand over a full batch, or whatever we have when no more input is buffered (so an
        // interactive stdin is not held back waiting for a full batch).
        if batch.len() >= BATCH_SIZE
            || (!batch.is_empty() && reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true))
        {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_SIZE));
            if tx.send(Message::Batch(full)).is_err() {
                return Ok(report);
            }
        }
    }
    finish(batch, &tx);
    Ok(report)
}

/// Hands over the last batch and the end-of-input marker. If the pipeline stopped listening
/// there is nobody to tell.
fn finish(batch: Batch, tx: &StageSender) {
    if !batch.is_empty() && tx.send(Message::Batch(batch)).is_err() {
        return;
    }
    let _ = tx.send(Message::End);
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &line[start..end]
}

/// Parses one line into a record or a watermark; the error says what is wrong.
pub fn parse_line(text: &[u8], line: u64, fields: &FieldMapping) -> Result<Element, String> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if let Some(object) = value.as_object() {
        if let Some(mark) = object.get("$watermark") {
            if object.len() == 1 {
                return mark.as_i64().map(Element::Watermark).ok_or_else(|| {
                    format!("\"$watermark\" must be an integer (ms since epoch), got {mark}")
                });
            }
        }
    }
    let key = match &fields.key_field {
        None => None,
        Some(field) => match value.get(field) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        },
    };
    let timestamp = match &fields.timestamp_field {
        None => None,
        Some(field) => match value.get(field) {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                format!("field {field:?} must be an integer timestamp (ms since epoch), got {v}")
            })?),
        },
    };
    Ok(Element::Record(Record {
        key,
        timestamp,
        payload: text.to_vec(),
        line,
    }))
}

/// `count` records `{"id":N,"text":"..."}` of about `payload_bytes` each, as fast as they are taken.
fn generate(count: u64, payload_bytes: usize, tx: StageSender) -> SourceReport {
    let filler = "x".repeat(payload_bytes.saturating_sub(24));
    let mut report = SourceReport::default();
    let mut batch: Batch = Vec::with_capacity(BATCH_SIZE);
    for id in 1..=count {
        let payload = format!("{{\"id\":{id},\"text\":\"{filler}\"}}").into_bytes();
        batch.push(Element::Record(Record {
            key: None,
            timestamp: None,
            payload,
            line: id,
        }));
        report.records += 1;
        if batch.len() >= BATCH_SIZE {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_SIZE));
            if tx.send(Message::Batch(full)).is_err() {
                return report;
            }
        }
    }
    finish(batch, &tx);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_watermarks_and_fields() {
        let fields = FieldMapping {
            key_field: Some("id".into()),
            timestamp_field: Some("ts".into()),
        };
        match parse_line(br#"{"id":7,"ts":1000,"text":"hi"}"#, 3, &fields) {
            Ok(Element::Record(r)) => {
                assert_eq!(r.key.as_deref(), Some("7"));
                assert_eq!(r.timestamp, Some(1000));
                assert_eq!(r.line, 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_line(br#"{"$watermark":5}"#, 1, &fields),
            Ok(Element::Watermark(5))
        );
        let err = parse_line(br#"{"id":1,"ts":"soon"}"#, 1, &fields).unwrap_err();
        assert!(err.contains("\"ts\""), "{err}");
        let err = parse_line(b"{not json", 1, &fields).unwrap_err();
        assert!(err.starts_with("invalid JSON"), "{err}");
    }
}
