//! Sinks: a JSON-lines file, stdout, or nothing (benchmarks), plus the dead-letter file. Runs on
//! a thread of its own.

use std::io::{BufWriter, Write};
use std::time::Instant;

use crate::checkpoint::commit::{CommitError, OutputFile};
use crate::checkpoint::coordinator::{Report, ReportSender};
use crate::checkpoint::SinkTransaction;
use crate::connectors::dead_letter::DeadLetter;
use crate::manifest::{OutputFormat, SinkConfig};
use crate::record::{Element, Message, Record, StageReceiver};
use crate::telemetry::SinkTelemetry;

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
    #[error(transparent)]
    Kafka(#[from] crate::connectors::kafka::KafkaError),
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
/// pre-commits the rest. `producer` names the last operator, whose outputs arrive here: an
/// output that is not JSON becomes its dead letter (reason "output"), so that the output stays
/// JSON lines and nothing is lost. What it wrote is counted in `report` as it goes.
pub fn run_sink(
    config: &SinkConfig,
    producer: &str,
    output: SinkOutput,
    mut dead_letters: OutputFile,
    rx: StageReceiver,
    reports: Option<ReportSender>,
    report: &SinkTelemetry,
) -> Result<(), SinkError> {
    let (format, watermarks) = match config {
        SinkConfig::File {
            format, watermarks, ..
        }
        | SinkConfig::Stdout { format, watermarks } => (*format, *watermarks),
        SinkConfig::Discard | SinkConfig::Kafka(_) => (OutputFormat::Payload, false),
    };
    let mut out = match output {
        SinkOutput::File(file) => Out::File(file),
        SinkOutput::Stdout => Out::Stdout(BufWriter::new(std::io::stdout())),
        SinkOutput::Discard => Out::Discard,
    };
    let mut line = Vec::with_capacity(1024);
    let mut chunk: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Parts are numbered by the sink; the checkpoint records their names.
    let mut part = 0u64;
    loop {
        let batch = match rx.recv() {
            Ok(Message::Batch(batch)) | Ok(Message::Read(batch, _)) => batch,
            Ok(Message::Barrier(id)) => {
                part += 1;
                barrier(&mut out, &mut dead_letters, part, id, reports.as_ref())?;
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
        // The batch's output lines go out in one write.
        chunk.clear();
        // Counted once a batch: one atomic add, not one a record.
        let mut records = 0u64;
        for element in &batch {
            match element {
                Element::Record(record) => {
                    // A `waio serve` caller's record is answered, not written.
                    if let Some(ticket) = &record.ticket {
                        ticket.output(&record.payload);
                        records += 1;
                        continue;
                    }
                    if !matches!(out, Out::Discard) {
                        let start = chunk.len();
                        if let Err(error) = encode_record(record, format, &mut chunk) {
                            chunk.truncate(start);
                            line.clear();
                            line.extend_from_slice(&not_json_letter(
                                producer, record, &error, report,
                            ));
                            line.push(b'\n');
                            dead_letters.write(&line)?;
                            continue;
                        }
                        chunk.push(b'\n');
                    }
                    records += 1;
                    if report.first_output_at.get().is_none() {
                        let _ = report.first_output_at.set(Instant::now());
                    }
                }
                Element::Watermark(ts) => {
                    report.watermarks.inc();
                    if watermarks && !matches!(out, Out::Discard) {
                        chunk.extend_from_slice(format!("{{\"watermark\":{ts}}}\n").as_bytes());
                    }
                }
                Element::DeadLetter(letter) => {
                    report.dead_letters.inc();
                    line.clear();
                    line.extend_from_slice(letter);
                    line.push(b'\n');
                    dead_letters.write(&line)?;
                }
            }
        }
        report.records.add(records);
        if !chunk.is_empty() {
            out.write(&chunk)?;
        }
        // Keep stdout live for people watching; a file is flushed at the end.
        if matches!(out, Out::Stdout(_)) && rx.is_empty() {
            out.flush()?;
        }
        // Its records are dropped as before, after the write; the vector goes round.
        crate::record::recycle_batch(batch);
    }
    // The first one was logged with its error; a count says how many more there were.
    if report.outputs_not_json.get() > 1 {
        tracing::warn!(
            "operator {producer:?}: {} outputs were not JSON and went to the dead-letter output",
            report.outputs_not_json.get()
        );
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
    Ok(())
}

/// The dead-letter line (without its newline) for an output that is not JSON, counted; the
/// first one is also logged.
pub(crate) fn not_json_letter(
    producer: &str,
    record: &Record,
    error: &serde_json::Error,
    report: &SinkTelemetry,
) -> Vec<u8> {
    report.dead_letters.inc();
    report.outputs_not_json.inc();
    let message = format!(
        "operator {producer:?}: the output for input line {} is not JSON ({error}); the sink writes JSON lines",
        record.line
    );
    if report.outputs_not_json.get() == 1 {
        tracing::warn!(
            "{message}: sent to the dead-letter output (any more are counted at the end)"
        );
    }
    let letter = DeadLetter {
        stage: producer,
        reason: "output",
        error: &message,
        retriable: None,
        record,
        plugin: record.produced_by,
    };
    letter.encode()
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

/// Checkpoint `id` reached the sink: what was written so far is pre-committed as part `part`
/// and reported to the coordinator.
fn barrier(
    out: &mut Out,
    dead_letters: &mut OutputFile,
    part: u64,
    id: u64,
    reports: Option<&ReportSender>,
) -> Result<(), SinkError> {
    let transaction = pre_commit(out, dead_letters, part)?;
    if let Some(reports) = reports {
        reports
            .send(Report::Sink { id, transaction })
            .map_err(|_| SinkError::CoordinatorGone)?;
    }
    Ok(())
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

/// One output line. A payload that spans lines is compacted; one that is not JSON is an error
/// (the line is then incomplete), so the output stays valid JSON lines whatever a plugin emits.
fn encode_record(
    record: &Record,
    format: OutputFormat,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    match format {
        OutputFormat::Payload => push_json(&record.payload, out)?,
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
            push_json(&record.payload, out)?;
            // Which plugin version produced it: tells versions apart across a hot reload.
            if let Some(digest) = record.produced_by {
                out.extend_from_slice(b",\"plugin_digest\":");
                push_string(digest, out);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn push_json(payload: &[u8], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let single_line = !payload.iter().any(|&b| b == b'\n' || b == b'\r');
    if single_line {
        // Valid single-line JSON is written as it came, without re-encoding.
        serde_json::from_slice::<serde::de::IgnoredAny>(payload)?;
        out.extend_from_slice(payload);
    } else {
        let value = serde_json::from_slice::<serde_json::Value>(payload)?;
        out.extend_from_slice(&serde_json::to_vec(&value)?);
    }
    Ok(())
}

fn push_string(text: &str, out: &mut Vec<u8>) {
    if let Ok(encoded) = serde_json::to_vec(text) {
        out.extend_from_slice(&encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::stage_channel;

    fn rec(payload: &str, line: u64) -> Record {
        Record {
            key: Some("k".into()),
            timestamp: Some(5),
            payload: payload.as_bytes().to_vec(),
            line,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        }
    }

    #[test]
    fn outputs_spanning_lines_are_compacted() {
        let mut out = Vec::new();
        encode_record(&rec("{\"a\":\n 1}", 1), OutputFormat::Payload, &mut out).unwrap();
        assert_eq!(out, b"{\"a\":1}");
        out.clear();
        encode_record(&rec("{\"a\":1}", 1), OutputFormat::Envelope, &mut out).unwrap();
        assert_eq!(out, br#"{"key":"k","timestamp":5,"payload":{"a":1}}"#);
    }

    /// Runs the sink over `records` with a file output in `format`: (output, dead letters).
    fn sink(records: &[Record], format: OutputFormat) -> (String, Vec<serde_json::Value>) {
        let dir = tempfile::tempdir().unwrap();
        let (out_path, dead_path) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
        let config = SinkConfig::File {
            path: out_path.clone(),
            format,
            watermarks: false,
        };
        let (tx, rx) = stage_channel();
        let batch = records.iter().cloned().map(Element::Record).collect();
        tx.send(Message::Batch(batch)).unwrap();
        tx.send(Message::End).unwrap();
        let report = SinkTelemetry::default();
        run_sink(
            &config,
            "enrich",
            SinkOutput::File(OutputFile::direct(&out_path, false).unwrap()),
            OutputFile::direct(&dead_path, true).unwrap(),
            rx,
            None,
            &report,
        )
        .unwrap();
        let output = std::fs::read_to_string(&out_path).unwrap();
        let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(report.records.get() as usize, output.lines().count());
        assert_eq!(report.dead_letters.get() as usize, dead.len());
        (output, dead)
    }

    /// An output that is not JSON used to be written as a JSON string without a word; now it is
    /// the dead letter of the last operator (reason "output") and the output stays JSON lines.
    #[test]
    fn an_output_that_is_not_json_is_dead_lettered() {
        for format in [OutputFormat::Payload, OutputFormat::Envelope] {
            let (output, dead) = sink(
                &[
                    rec("{\"a\":1}", 1),
                    rec("not json", 2),
                    rec("", 3),
                    rec("[2]", 4),
                ],
                format,
            );
            let kept: Vec<serde_json::Value> = output
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(kept.len(), 2, "{output}");
            assert_eq!(dead.len(), 2, "{dead:?}");
            for (letter, (line, payload)) in dead.iter().zip([(2, "not json"), (3, "")]) {
                assert_eq!(letter["stage"], "enrich");
                assert_eq!(letter["reason"], "output");
                assert_eq!(letter["line"], line);
                assert_eq!(letter["key"], "k");
                assert_eq!(letter["timestamp"], 5);
                assert_eq!(letter["payload"], payload);
                let error = letter["error"].as_str().unwrap();
                assert!(
                    error.starts_with(&format!(
                        "operator \"enrich\": the output for input line {line} is not JSON"
                    )),
                    "{error}"
                );
            }
        }
    }
}
