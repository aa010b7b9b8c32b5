//! Sinks: a JSON-lines file, stdout, or nothing (benchmarks), plus the dead-letter file. Runs on
//! a thread of its own.

use std::io::{BufWriter, Write};
use std::time::Instant;

use crate::checkpoint::coordinator::{Report, ReportSender};
use crate::checkpoint::SinkTransaction;
use crate::connectors::commit::{CommitError, OutputFile};
use crate::manifest::{OutputFormat, SinkConfig};
use crate::record::{Element, Message, Record, StageReceiver};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the stage before the sink stopped without finishing")]
    UpstreamFailed,
    #[error(transparent)]
    Output(#[from] CommitError),
    #[error("cannot write output stdout: {0}")]
    Stdout(std::io::Error),
    #[error("the checkpoint coordinator stopped")]
    CoordinatorGone,
}

#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    pub records: u64,
    pub watermarks: u64,
    pub dead_letters: u64,
    pub first_output_at: Option<Instant>,
}

/// Where the sink writes. The pipeline opens the files (directly, or as transactions resumed
/// from a checkpoint).
pub enum SinkOutput {
    File(OutputFile),
    Stdout,
    Discard,
}

/// Writes everything that arrives until the end of the stream. At a checkpoint barrier it
/// pre-commits what it wrote since the last one and tells the coordinator; at the end it
/// pre-commits the rest.
pub fn run_sink(
    config: &SinkConfig,
    output: SinkOutput,
    mut dead_letters: OutputFile,
    rx: StageReceiver,
    reports: Option<ReportSender>,
) -> Result<SinkReport, SinkError> {
    let mut report = SinkReport::default();
    let (format, watermarks) = match config {
        SinkConfig::File {
            format, watermarks, ..
        }
        | SinkConfig::Stdout { format, watermarks } => (*format, *watermarks),
        SinkConfig::Discard => (OutputFormat::Payload, false),
    };
    let mut out = match output {
        SinkOutput::File(file) => Out::File(file),
        SinkOutput::Stdout => Out::Stdout(BufWriter::new(std::io::stdout())),
        SinkOutput::Discard => Out::Discard,
    };
    let mut line = Vec::with_capacity(1024);
    // Parts are numbered by the sink; the checkpoint records their names.
    let mut part = 0u64;
    loop {
        let batch = match rx.recv() {
            Ok(Message::Batch(batch)) | Ok(Message::Read(batch, _)) => batch,
            Ok(Message::Barrier(id)) => {
                part += 1;
                let transaction = pre_commit(&mut out, &mut dead_letters, part)?;
                if let Some(reports) = &reports {
                    reports
                        .send(Report::Sink { id, transaction })
                        .map_err(|_| SinkError::CoordinatorGone)?;
                }
                continue;
            }
            Ok(Message::End) => break,
            Err(_) => {
                // Keep what was written readable, but report that the job did not finish.
                let _ = out.flush();
                let _ = dead_letters.flush();
                return Err(SinkError::UpstreamFailed);
            }
        };
        for element in &batch {
            line.clear();
            match element {
                Element::Record(record) => {
                    report.records += 1;
                    if report.first_output_at.is_none() {
                        report.first_output_at = Some(Instant::now());
                    }
                    if matches!(out, Out::Discard) {
                        continue;
                    }
                    encode_record(record, format, &mut line);
                }
                Element::Watermark(ts) => {
                    report.watermarks += 1;
                    if !watermarks || matches!(out, Out::Discard) {
                        continue;
                    }
                    line.extend_from_slice(format!("{{\"watermark\":{ts}}}").as_bytes());
                }
                Element::DeadLetter(letter) => {
                    report.dead_letters += 1;
                    line.extend_from_slice(letter);
                    line.push(b'\n');
                    dead_letters.write(&line)?;
                    continue;
                }
            }
            line.push(b'\n');
            out.write(&line)?;
        }
        // Keep stdout live for people watching; a file is flushed at the end.
        if matches!(out, Out::Stdout(_)) && rx.is_empty() {
            out.flush()?;
        }
    }
    part += 1;
    let transaction = pre_commit(&mut out, &mut dead_letters, part)?;
    out.flush()?;
    dead_letters.flush()?;
    if let Some(reports) = &reports {
        reports
            .send(Report::SinkEnd { transaction })
            .map_err(|_| SinkError::CoordinatorGone)?;
    }
    Ok(report)
}

enum Out {
    File(OutputFile),
    Stdout(BufWriter<std::io::Stdout>),
    Discard,
}

impl Out {
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        match self {
            Out::File(file) => Ok(file.write(bytes)?),
            Out::Stdout(w) => w.write_all(bytes).map_err(SinkError::Stdout),
            Out::Discard => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Out::File(file) => Ok(file.flush()?),
            Out::Stdout(w) => w.flush().map_err(SinkError::Stdout),
            Out::Discard => Ok(()),
        }
    }
}

fn pre_commit(
    out: &mut Out,
    dead_letters: &mut OutputFile,
    part: u64,
) -> Result<SinkTransaction, SinkError> {
    let output = match out {
        Out::File(file) => file.pre_commit(part)?,
        other => {
            other.flush()?;
            None
        }
    };
    Ok(SinkTransaction {
        output,
        dead_letters: dead_letters.pre_commit(part)?,
    })
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
