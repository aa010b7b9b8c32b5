//! Sinks: a JSON-lines file, stdout, or nothing (benchmarks). Runs on a blocking thread.

use std::io::{BufWriter, Write};
use std::time::Instant;

use crate::manifest::{OutputFormat, SinkConfig};
use crate::record::{Batch, Element, Message, Record, StageReceiver};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create output {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("the stage before the sink stopped without finishing")]
    UpstreamFailed,
    #[error("cannot write output {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    pub records: u64,
    pub watermarks: u64,
    pub first_output_at: Option<Instant>,
}

/// Writes everything that arrives until the channel closes.
pub fn run_sink(config: &SinkConfig, rx: StageReceiver) -> Result<SinkReport, SinkError> {
    let mut report = SinkReport::default();
    let (mut writer, label, format, watermarks): (Box<dyn Write>, String, OutputFormat, bool) =
        match config {
            SinkConfig::File {
                path,
                format,
                watermarks,
            } => {
                let label = path.display().to_string();
                let file = std::fs::File::create(path).map_err(|source| SinkError::Create {
                    path: label.clone(),
                    source,
                })?;
                (
                    Box::new(BufWriter::with_capacity(256 * 1024, file)),
                    label,
                    *format,
                    *watermarks,
                )
            }
            SinkConfig::Stdout { format, watermarks } => (
                Box::new(BufWriter::new(std::io::stdout())),
                "stdout".to_string(),
                *format,
                *watermarks,
            ),
            SinkConfig::Discard => loop {
                match rx.recv() {
                    Ok(Message::Batch(batch)) => count(&mut report, &batch),
                    Ok(Message::End) => return Ok(report),
                    Err(_) => return Err(SinkError::UpstreamFailed),
                }
            },
        };
    let write_err = |source| SinkError::Write {
        path: label.clone(),
        source,
    };
    let mut line = Vec::with_capacity(1024);
    loop {
        let batch = match rx.recv() {
            Ok(Message::Batch(batch)) => batch,
            Ok(Message::End) => break,
            Err(_) => {
                // Keep what was written readable, but report that the job did not finish.
                let _ = writer.flush();
                return Err(SinkError::UpstreamFailed);
            }
        };
        count(&mut report, &batch);
        for element in &batch {
            line.clear();
            match element {
                Element::Record(record) => encode_record(record, format, &mut line),
                Element::Watermark(ts) if watermarks => {
                    line.extend_from_slice(format!("{{\"watermark\":{ts}}}").as_bytes())
                }
                Element::Watermark(_) => continue,
            }
            line.push(b'\n');
            writer.write_all(&line).map_err(write_err)?;
        }
        // Keep stdout live for people watching; a file is flushed at the end.
        if matches!(config, SinkConfig::Stdout { .. }) && rx.is_empty() {
            writer.flush().map_err(write_err)?;
        }
    }
    writer.flush().map_err(write_err)?;
    Ok(report)
}

fn count(report: &mut SinkReport, batch: &Batch) {
    for element in batch {
        match element {
            Element::Record(_) => {
                report.records += 1;
                if report.first_output_at.is_none() {
                    report.first_output_at = Some(Instant::now());
                }
            }
            Element::Watermark(_) => report.watermarks += 1,
        }
    }
}

/// One output line. A payload that is not single-line JSON is written as a JSON string, so the
/// output stays valid JSON lines whatever a plugin emits.
fn encode_record(record: &Record, format: OutputFormat, out: &mut Vec<u8>) {
    match format {
        OutputFormat::Payload => push_json(&record.payload, out),
        OutputFormat::Envelope => {
            out.extend_from_slice(b"{\"key\":");
            match &record.key {
                Some(key) => push_string(key, out),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"timestamp\":");
            match record.timestamp {
                Some(ts) => out.extend_from_slice(ts.to_string().as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"payload\":");
            push_json(&record.payload, out);
            out.push(b'}');
        }
    }
}

fn push_json(payload: &[u8], out: &mut Vec<u8>) {
    let single_line = !payload.iter().any(|&b| b == b'\n' || b == b'\r');
    if single_line && !payload.is_empty() {
        if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
            out.extend_from_slice(payload);
            return;
        }
    } else if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
        if let Ok(compact) = serde_json::to_vec(&value) {
            out.extend_from_slice(&compact);
            return;
        }
    }
    push_string(&String::from_utf8_lossy(payload), out);
}

fn push_string(text: &str, out: &mut Vec<u8>) {
    if let Ok(encoded) = serde_json::to_vec(text) {
        out.extend_from_slice(&encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(payload: &str) -> Record {
        Record {
            key: Some("k".into()),
            timestamp: Some(5),
            payload: payload.as_bytes().to_vec(),
            line: 1,
        }
    }

    #[test]
    fn keeps_outputs_valid_json_lines() {
        let mut out = Vec::new();
        encode_record(&rec("{\"a\":\n 1}"), OutputFormat::Payload, &mut out);
        assert_eq!(out, b"{\"a\":1}");
        out.clear();
        encode_record(&rec("not json"), OutputFormat::Payload, &mut out);
        assert_eq!(out, b"\"not json\"");
        out.clear();
        encode_record(&rec("{\"a\":1}"), OutputFormat::Envelope, &mut out);
        assert_eq!(out, br#"{"key":"k","timestamp":5,"payload":{"a":1}}"#);
    }
}
