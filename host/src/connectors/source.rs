//! Sources: JSON-lines files, stdin, and a generator for benchmarks.
//!
//! A source runs on a thread of its own and hands batches to the first operator through a bounded
//! channel; when the operator is full the channel fills and the source waits (backpressure).
//! Every batch carries the source's position after its last element: the first operator cuts
//! checkpoints and needs to know where reading resumes. Between two lines the source takes a
//! request to stop.
//!
//! A JSON-lines input holds one JSON document per line. A line `{"$watermark": 1234}` is a
//! watermark, not a record. A line that is not JSON goes to the dead-letter output with the parse
//! error and its line number; blank lines are skipped.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::checkpoint::coordinator::Control;
use crate::checkpoint::SourcePosition;
use crate::connectors::dead_letter::DeadLetter;
use crate::connectors::line::parse_line;
use crate::connectors::replay::{self, Start};
use crate::event_time::WatermarkGenerator;
use crate::manifest::{EventTimeConfig, FieldMapping, Location, SourceConfig};
use crate::record::{batch_is_full, new_batch, Batch, Element, Message, Record, StageSender};
use crate::telemetry::SourceTelemetry;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `at` is where the manifest names the file (`[source] path`).
    #[error("{at}: source.path: cannot open input {path}: {cause}")]
    Open {
        at: Location,
        path: String,
        cause: std::io::Error,
    },
    #[error("cannot read input {path} at line {line}: {cause}")]
    Read {
        path: String,
        line: u64,
        cause: std::io::Error,
    },
    #[error("{at}: source.path: input file {path} is empty: there are no records to process")]
    Empty { at: Location, path: String },
    #[error("cannot resume input {path} at byte {offset}: the file has {len} bytes (it was replaced or truncated since the checkpoint; run with --fresh to start over)")]
    Shrunk { path: String, offset: u64, len: u64 },
    #[error("cannot open dead letters {path}: {cause}")]
    OpenDeadLetters { path: String, cause: std::io::Error },
    #[error(transparent)]
    Kafka(#[from] crate::connectors::kafka::KafkaError),
    #[error("the kafka source was not connected before the run")]
    KafkaNotConnected,
    #[error("the serve source has no callers: only `waio serve` feeds it")]
    NotFed,
    /// A line of a dead-letter file being replayed that cannot be replayed.
    #[error("{path}:{line}: {cause}")]
    DeadLetter {
        path: String,
        line: u64,
        cause: replay::DecodeError,
    },
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
        SourceConfig::Serve { .. } => "serve".into(),
        SourceConfig::Kafka(kafka) => format!("kafka:{}", kafka.topics.join(",")),
        SourceConfig::DeadLetters { path, .. } => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
    }
}

/// Opens a file source's input and returns it with its length. `waio check` calls this too, so
/// that it refuses what `waio run` would: a file that does not exist (yet), cannot be read, is a
/// directory or is empty.
pub fn open_input(path: &Path, at: &Location) -> Result<(File, u64), SourceError> {
    let open_error = |cause| SourceError::Open {
        at: at.clone(),
        path: path.display().to_string(),
        cause,
    };
    let file = File::open(path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    // Opening a directory succeeds on Linux; reading it would fail at "line 1".
    if metadata.is_dir() {
        return Err(open_error(std::io::ErrorKind::IsADirectory.into()));
    }
    // An empty input is almost always a mistake (wrong path, file not written yet).
    if metadata.len() == 0 {
        return Err(SourceError::Empty {
            at: at.clone(),
            path: path.display().to_string(),
        });
    }
    Ok((file, metadata.len()))
}

/// What `waio check` verifies about the input: a file source's file can be opened (stdin and
/// the generator have nothing to check before the run).
pub fn check_input(config: &SourceConfig) -> Result<(), SourceError> {
    match config {
        SourceConfig::File { path, path_at, .. } => open_input(path, path_at).map(|_| ()),
        SourceConfig::DeadLetters { path, .. } => open_dead_letters(path).map(|_| ()),
        // Brokers and topics are checked when the run connects.
        SourceConfig::Stdin { .. }
        | SourceConfig::Generator { .. }
        | SourceConfig::Kafka(_)
        | SourceConfig::Serve { .. } => Ok(()),
    }
}

/// Opens a dead-letter file to replay and returns it with its length (an empty one is fine:
/// nothing to replay).
pub fn open_dead_letters(path: &Path) -> Result<(File, u64), SourceError> {
    let open_error = |cause| SourceError::OpenDeadLetters {
        path: path.display().to_string(),
        cause,
    };
    let file = File::open(path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    if metadata.is_dir() {
        return Err(open_error(std::io::ErrorKind::IsADirectory.into()));
    }
    Ok((file, metadata.len()))
}

/// How a line becomes an element.
#[derive(Clone, Copy)]
enum LineFormat<'a> {
    /// A JSON-lines input.
    Input(&'a FieldMapping),
    /// A dead-letter file being replayed (see `connectors::replay`). Dead letters of the source
    /// are parsed again as the pipeline's source parses its input.
    DeadLetters {
        operators: &'a [String],
        fields: &'a FieldMapping,
        event_time: Option<&'a EventTimeConfig>,
    },
}

/// What the source needs besides its config.
pub struct SourceContext {
    pub tx: StageSender,
    /// Stop requests, taken between two lines.
    pub control: Receiver<Control>,
    /// Where to start: the restored checkpoint's position, or the beginning.
    pub start: SourcePosition,
    pub event_time: Option<EventTimeConfig>,
    /// What the source has read so far, updated as it goes.
    pub telemetry: Arc<SourceTelemetry>,
}

/// Reads the source into `tx` from `start`. Runs on its own thread. Returns early, without
/// error, if the pipeline stopped listening. A Kafka source reads through `kafka`, connected
/// before the run.
pub fn run_source(
    config: &SourceConfig,
    ctx: SourceContext,
    kafka: Option<&crate::connectors::kafka::source::KafkaInput>,
) -> Result<(), SourceError> {
    if let SourceConfig::Kafka(config) = config {
        let input = kafka.ok_or(SourceError::KafkaNotConnected)?;
        return crate::connectors::kafka::source::run(config, input, ctx);
    }
    let SourceContext {
        tx,
        control,
        start,
        event_time,
        telemetry,
    } = ctx;
    let mut out = Emitter {
        tx,
        batch: new_batch(),
        batch_bytes: 0,
        telemetry,
        watermarks: event_time
            .as_ref()
            .map(|cfg| WatermarkGenerator::new(cfg, start.watermark)),
        event_time,
        position: start,
    };
    match config {
        SourceConfig::File {
            path,
            path_at,
            fields,
        } => {
            let (file, len) = open_input(path, path_at)?;
            read_file(
                file,
                len,
                path,
                LineFormat::Input(fields),
                &control,
                &mut out,
            )?;
        }
        SourceConfig::DeadLetters {
            path,
            operators,
            fields,
            event_time,
        } => {
            let (file, len) = open_dead_letters(path)?;
            let format = LineFormat::DeadLetters {
                operators,
                fields,
                event_time: event_time.as_ref(),
            };
            read_file(file, len, path, format, &control, &mut out)?;
        }
        SourceConfig::Stdin { fields } => {
            let lines = spawn_stdin_reader();
            // Stdin cannot seek: a resumed run skips the lines the checkpoint had consumed, so
            // feeding it the same input again continues where it stopped.
            let mut skipped = 0;
            while skipped < out.position.lines {
                match lines.recv() {
                    Ok(Ok(_)) => skipped += 1,
                    Ok(Err(cause)) => {
                        return Err(SourceError::Read {
                            path: "stdin".into(),
                            line: skipped + 1,
                            cause,
                        })
                    }
                    Err(_) => break,
                }
            }
            // With event time on, a quiet stdin still emits the watermark its interval held back.
            let idle_tick = out
                .event_time
                .as_ref()
                .map(|et| et.watermark_interval.max(Duration::from_millis(10)));
            let reader = ChannelLines { lines, idle_tick };
            let format = LineFormat::Input(fields);
            read_lines(reader, "stdin", format, &control, &mut out)?;
        }
        SourceConfig::Generator {
            count,
            payload_bytes,
        } => generate(*count, *payload_bytes, &control, &mut out)?,
        SourceConfig::Kafka(_) => return Err(SourceError::KafkaNotConnected),
        SourceConfig::Serve { .. } => return Err(SourceError::NotFed),
    }
    Ok(())
}

/// Reads a file of `len` bytes from the position `out` starts at.
fn read_file(
    mut file: File,
    len: u64,
    path: &Path,
    format: LineFormat<'_>,
    control: &Receiver<Control>,
    out: &mut Emitter,
) -> Result<(), SourceError> {
    let label = path.display().to_string();
    let offset = out.position.offset;
    if offset > len {
        return Err(SourceError::Shrunk {
            path: label,
            offset,
            len,
        });
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|cause| SourceError::Read {
            path: label.clone(),
            line: out.position.lines + 1,
            cause,
        })?;
    let reader = std::io::BufReader::with_capacity(256 * 1024, file);
    read_lines(reader, &label, format, control, out)
}

/// Builds batches and tracks the position: what every kind of source shares.
struct Emitter {
    tx: StageSender,
    batch: Batch,
    /// The payload bytes of the records in `batch`.
    batch_bytes: usize,
    telemetry: Arc<SourceTelemetry>,
    position: SourcePosition,
    event_time: Option<EventTimeConfig>,
    watermarks: Option<WatermarkGenerator>,
}

/// The pipeline stopped listening: the source ends quietly.
struct Gone;

impl Emitter {
    fn push(&mut self, element: Element) {
        match &element {
            Element::Record(record) => {
                self.batch_bytes += record.payload.len();
                self.telemetry.records.inc();
                self.position.records += 1;
            }
            Element::Watermark(_) => self.telemetry.watermarks.inc(),
            Element::DeadLetter(_) => {
                self.telemetry.records.inc();
                self.telemetry.malformed.inc();
                self.position.records += 1;
            }
        }
        self.batch.push(element);
    }

    /// One input line (already trimmed), `consumed` bytes with its newline. Only a dead letter
    /// that cannot be replayed is an error; an input line that does not parse is a dead letter.
    fn line(
        &mut self,
        text: &[u8],
        consumed: u64,
        label: &str,
        format: LineFormat<'_>,
    ) -> Result<(), SourceError> {
        self.position.lines += 1;
        self.position.offset += consumed;
        if text.is_empty() {
            return Ok(());
        }
        let line = self.position.lines;
        let (parsed, unparsed) = match format {
            LineFormat::Input(fields) => (
                parse_line(text, line, fields, self.event_time.as_ref()),
                Cow::Borrowed(text),
            ),
            LineFormat::DeadLetters {
                operators,
                fields,
                event_time,
            } => {
                let letter =
                    replay::decode(text, operators).map_err(|cause| SourceError::DeadLetter {
                        path: label.to_string(),
                        line,
                        cause,
                    })?;
                match letter.start {
                    Start::Source => (
                        parse_line(&letter.payload, line, fields, event_time),
                        Cow::Owned(letter.payload),
                    ),
                    Start::Operator(index) => {
                        let record = Record {
                            key: letter.key,
                            timestamp: letter.timestamp,
                            payload: letter.payload,
                            line,
                            enters_at: index,
                            produced_by: None,
                            origin: None,
                            ticket: None,
                        };
                        (Ok(Element::Record(record)), Cow::Borrowed(&[][..]))
                    }
                }
            }
        };
        match parsed {
            Ok(Element::Watermark(ts)) => match self.watermarks.as_mut() {
                // With event time on, input watermarks merge with generated ones, never going back.
                Some(generator) => {
                    if let Some(ts) = generator.on_input_watermark(ts) {
                        self.push(Element::Watermark(ts));
                    }
                }
                None => self.push(Element::Watermark(ts)),
            },
            Ok(Element::Record(record)) => {
                let generated = match (self.watermarks.as_mut(), record.timestamp) {
                    (Some(generator), Some(ts)) => generator.on_record(ts, Instant::now()),
                    _ => None,
                };
                self.push(Element::Record(record));
                if let Some(ts) = generated {
                    self.push(Element::Watermark(ts));
                }
            }
            Ok(other) => self.push(other),
            Err(error) => self.unparsed(unparsed.into_owned(), line, label, &error),
        }
        Ok(())
    }

    /// A line that does not parse becomes the source's dead letter.
    fn unparsed(&mut self, payload: Vec<u8>, line: u64, label: &str, error: &str) {
        let record = Record {
            key: None,
            timestamp: None,
            payload,
            line,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        };
        let message = format!("{label}:{line}: {error}");
        tracing::warn!("{message} (sent to the dead-letter output)");
        let letter = DeadLetter {
            stage: "source",
            reason: "parse",
            error: &message,
            retriable: None,
            record: &record,
            plugin: None,
        };
        self.push(Element::DeadLetter(letter.encode()));
    }

    fn batch_is_full(&self) -> bool {
        batch_is_full(self.batch.len(), self.batch_bytes)
    }

    fn send_batch(&mut self) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.send_position()
    }

    /// Hands over the batch (possibly empty) with the position after it.
    fn send_position(&mut self) -> Result<(), Gone> {
        let full = std::mem::replace(&mut self.batch, new_batch());
        self.batch_bytes = 0;
        let position = self.state();
        self.tx
            .send(Message::Read(full, position))
            .map_err(|_| Gone)
    }

    fn state(&self) -> SourcePosition {
        let mut position = self.position.clone();
        if let Some(generator) = &self.watermarks {
            position.watermark = generator.state();
        }
        position
    }

    /// Handles a control message. `true` = stop reading.
    fn control(&mut self, control: Control) -> bool {
        match control {
            Control::Stop => {
                tracing::debug!(line = self.position.lines, "source: no more input is read");
                self.telemetry.stopped.set();
                true
            }
        }
    }

    /// Hands over the last batch with the final position (even when empty: trailing blank lines
    /// count in it) and ends the stream.
    fn finish(&mut self, exhausted: bool) -> Result<(), SourceError> {
        if exhausted {
            if let Some(ts) = self.watermarks.as_mut().and_then(|g| g.flush()) {
                self.push(Element::Watermark(ts));
            }
        }
        if self.send_position().is_err() {
            return Ok(());
        }
        let _ = self.tx.send(Message::End);
        Ok(())
    }
}

/// Line-by-line input that may also have a control message waiting.
trait LineInput {
    /// Reads the next line into `buf` (cleared first); `Ok(0)` at the end of input.
    fn read_line(&mut self, buf: &mut Vec<u8>, control: &Receiver<Control>) -> LineRead;
    /// Whether no more input is available right now (then a partial batch is handed over).
    fn drained(&mut self) -> bool;
}

enum LineRead {
    Line(usize),
    End,
    Control(Control),
    /// No input for a while (stdin only).
    Idle,
    Error(std::io::Error),
}

impl<R: BufRead> LineInput for R {
    fn read_line(&mut self, buf: &mut Vec<u8>, control: &Receiver<Control>) -> LineRead {
        if let Ok(c) = control.try_recv() {
            return LineRead::Control(c);
        }
        buf.clear();
        match self.read_until(b'\n', buf) {
            Ok(0) => LineRead::End,
            Ok(n) => LineRead::Line(n),
            Err(e) => LineRead::Error(e),
        }
    }

    fn drained(&mut self) -> bool {
        self.fill_buf().map(|b| b.is_empty()).unwrap_or(true)
    }
}

/// Stdin read by a thread of its own, so that waiting for a line never holds up a checkpoint
/// or a stop request.
struct ChannelLines {
    lines: Receiver<std::io::Result<Vec<u8>>>,
    /// How long to wait for a line before reporting the input idle.
    idle_tick: Option<Duration>,
}

/// Lines the stdin reader may hold before the source takes them.
const STDIN_LINES_AHEAD: usize = 1024;

fn spawn_stdin_reader() -> Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = crossbeam_channel::bounded(STDIN_LINES_AHEAD);
    let spawned = std::thread::Builder::new()
        .name("waio-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            loop {
                let mut buf = Vec::new();
                match lock.read_until(b'\n', &mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the stdin reader: {e}");
    }
    rx
}

impl LineInput for ChannelLines {
    fn read_line(&mut self, buf: &mut Vec<u8>, control: &Receiver<Control>) -> LineRead {
        if let Ok(c) = control.try_recv() {
            return LineRead::Control(c);
        }
        let idle = self
            .idle_tick
            .map(crossbeam_channel::after)
            .unwrap_or_else(crossbeam_channel::never);
        let next = crossbeam_channel::select! {
            recv(self.lines) -> line => line,
            recv(control) -> c => match c {
                Ok(c) => return LineRead::Control(c),
                // Nobody can send control messages any more: just read.
                Err(_) => self.lines.recv(),
            },
            recv(idle) -> _ => return LineRead::Idle,
        };
        match next {
            Ok(Ok(line)) => {
                *buf = line;
                LineRead::Line(buf.len())
            }
            Ok(Err(e)) => LineRead::Error(e),
            Err(_) => LineRead::End,
        }
    }

    fn drained(&mut self) -> bool {
        self.lines.is_empty()
    }
}

fn read_lines(
    mut input: impl LineInput,
    label: &str,
    format: LineFormat<'_>,
    control: &Receiver<Control>,
    out: &mut Emitter,
) -> Result<(), SourceError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let n = match input.read_line(&mut buf, control) {
            LineRead::Line(n) => n,
            LineRead::End => break,
            LineRead::Idle => {
                let held = out.watermarks.as_mut().and_then(|g| g.poll(Instant::now()));
                if let Some(ts) = held {
                    out.push(Element::Watermark(ts));
                    if out.send_batch().is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            LineRead::Control(c) => {
                if out.control(c) {
                    return out.finish(false);
                }
                continue;
            }
            LineRead::Error(cause) => {
                return Err(SourceError::Read {
                    path: label.to_string(),
                    line: out.position.lines + 1,
                    cause,
                })
            }
        };
        // A UTF-8 byte order mark (Windows editors write one) is not part of the first record;
        // its bytes still count in the offset, so a resumed run seeks past it.
        let text = match out.position.lines {
            0 => buf.strip_prefix(UTF8_BOM).unwrap_or(&buf),
            _ => &buf,
        };
        out.line(trim(text), n as u64, label, format)?;
        // Hand over a full batch, or whatever we have when no more input is buffered (so an
        // interactive stdin is not held back waiting for a full batch).
        if (out.batch_is_full() || (!out.batch.is_empty() && input.drained()))
            && out.send_batch().is_err()
        {
            return Ok(());
        }
    }
    out.finish(true)
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The line without the ASCII whitespace around it (a Kafka value is trimmed the same way).
pub(crate) fn trim(line: &[u8]) -> &[u8] {
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

/// `count` records `{"id":N,"text":"..."}` of about `payload_bytes` each, as fast as they are
/// taken. A resumed run continues after the last record the checkpoint had produced.
fn generate(
    count: u64,
    payload_bytes: usize,
    control: &Receiver<Control>,
    out: &mut Emitter,
) -> Result<(), SourceError> {
    let filler = "x".repeat(payload_bytes.saturating_sub(24));
    for id in out.position.records + 1..=count {
        // Commands are looked at once a batch: a barrier waits for at most one batch.
        if out.batch.is_empty() {
            if let Ok(c) = control.try_recv() {
                if out.control(c) {
                    return out.finish(false);
                }
            }
        }
        // Built in one allocation of the right size (`format!` grows its buffer a few times).
        let mut payload = Vec::with_capacity(filler.len() + 32);
        payload.extend_from_slice(b"{\"id\":");
        push_decimal(&mut payload, id);
        payload.extend_from_slice(b",\"text\":\"");
        payload.extend_from_slice(filler.as_bytes());
        payload.extend_from_slice(b"\"}");
        out.position.lines += 1;
        out.push(Element::Record(Record {
            key: None,
            timestamp: None,
            payload,
            line: id,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        }));
        if out.batch_is_full() && out.send_batch().is_err() {
            return Ok(());
        }
    }
    out.finish(true)
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::stage_channel;

    fn file_source(path: &Path) -> SourceConfig {
        SourceConfig::File {
            path: path.to_path_buf(),
            path_at: Location {
                file: "pipeline.toml".into(),
                line: 5,
                column: 8,
            },
            fields: FieldMapping::default(),
        }
    }

    /// Runs `config` from `start` to its end: the elements, and where the source ended.
    fn run(config: &SourceConfig, start: SourcePosition) -> (Vec<Element>, SourcePosition) {
        let (tx, rx) = stage_channel();
        let (_control_tx, control) = crossbeam_channel::unbounded();
        let ctx = SourceContext {
            tx,
            control,
            start,
            event_time: None,
            telemetry: Default::default(),
        };
        let mut elements = Vec::new();
        let mut end = None;
        // On a thread of its own, as in a pipeline: the channel holds only a few batches.
        std::thread::scope(|scope| {
            let source = scope.spawn(|| run_source(config, ctx, None));
            // Every batch carries the position after it; the last one (possibly empty) the end.
            while let Ok(Message::Read(batch, position)) = rx.recv() {
                elements.extend(batch);
                end = Some(position);
            }
            source.join().unwrap().unwrap();
        });
        let end = end.expect("the source sent its final position");
        (elements, end)
    }

    /// Reads `content` as a file source from `start`: the elements, and where the source ended.
    fn read_file(content: &[u8], start: SourcePosition) -> (Vec<Element>, SourcePosition) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, content).unwrap();
        run(&file_source(&path), start)
    }

    fn record(payload: &str, line: u64) -> Element {
        Element::Record(Record {
            key: None,
            timestamp: None,
            payload: payload.as_bytes().to_vec(),
            line,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        })
    }

    /// Generated records are `{"id":N,"text":"x..."}`, numbered from 1, about `payload_bytes`
    /// long; a resumed run continues after the records its checkpoint had.
    #[test]
    fn the_generator_numbers_its_records_from_where_it_resumes() {
        let start = SourcePosition {
            records: 8,
            ..SourcePosition::default()
        };
        let config = SourceConfig::Generator {
            count: 11,
            payload_bytes: 30,
        };
        let (elements, _) = run(&config, start);
        let want =
            [9, 10, 11].map(|id| record(&format!("{{\"id\":{id},\"text\":\"xxxxxx\"}}"), id));
        assert_eq!(elements, want);
        let mut digits = Vec::new();
        for n in [0, 7, 10, 18_446_744_073_709_551_615] {
            digits.clear();
            push_decimal(&mut digits, n);
            assert_eq!(digits, n.to_string().into_bytes());
        }
    }

    /// A UTF-8 byte order mark before the first line is skipped (it used to dead-letter the
    /// first record as invalid JSON); its 3 bytes count in the offset a checkpoint stores.
    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_record() {
        let input = b"\xEF\xBB\xBF{\"id\":1}\n{\"id\":2}\n";
        let (elements, end) = read_file(input, SourcePosition::default());
        assert_eq!(elements, [record("{\"id\":1}", 1), record("{\"id\":2}", 2)]);
        assert_eq!((end.lines, end.offset), (2, input.len() as u64));

        // A run resumed after line 1 seeks past the mark and the line: 3 + 9 bytes.
        let after_line_1 = SourcePosition {
            lines: 1,
            offset: 12,
            records: 1,
            ..SourcePosition::default()
        };
        let (elements, end) = read_file(input, after_line_1);
        assert_eq!(elements, [record("{\"id\":2}", 2)]);
        assert_eq!((end.lines, end.offset), (2, input.len() as u64));

        // Only the start of the input may hold one: later it is a malformed line.
        let (elements, _) = read_file(
            b"{\"id\":1}\n\xEF\xBB\xBF{\"id\":2}\n",
            SourcePosition::default(),
        );
        assert_eq!(elements[0], record("{\"id\":1}", 1));
        assert!(
            matches!(elements[1], Element::DeadLetter(_)),
            "{elements:?}"
        );
    }

    /// What `waio check` verifies and `waio run` needs: the input file exists, is a file and is
    /// not empty; the error names the manifest's `[source] path` line and column.
    #[test]
    fn an_input_that_cannot_be_read_is_an_error_at_the_manifest_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = check_input(&file_source(&dir.path().join("in.jsonl"))).unwrap_err();
        let message = missing.to_string();
        assert!(
            message.starts_with("pipeline.toml:5:8: source.path: cannot open input ")
                && message.contains("in.jsonl")
                && message.contains("(os error 2)"),
            "{message}"
        );
        let message = check_input(&file_source(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("pipeline.toml:5:8: source.path:") && message.contains("directory"),
            "{message}"
        );
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        let message = check_input(&file_source(&empty)).unwrap_err().to_string();
        assert!(
            message.starts_with("pipeline.toml:5:8: source.path:") && message.contains("is empty"),
            "{message}"
        );
        std::fs::write(&empty, "{}\n").unwrap();
        assert!(check_input(&file_source(&empty)).is_ok());
        let stdin = SourceConfig::Stdin {
            fields: FieldMapping::default(),
        };
        assert!(check_input(&stdin).is_ok());
    }

    /// A dead-letter file read back: each record with the operator it starts at; a line the
    /// source could not parse is parsed again (here it now parses); `line` is the line of the
    /// dead-letter file.
    #[test]
    fn a_dead_letter_source_reads_records_back_where_they_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let letters = [
            r#"{"stage":"answer","reason":"timeout","key":"k","timestamp":5,"payload":{"id":1}}"#,
            "",
            r#"{"stage":"source","reason":"parse","error":"x","payload":{"id":2,"ts":7}}"#,
            r#"{"stage":"source","reason":"parse","error":"x","payload":"{oops"}"#,
        ];
        std::fs::write(&path, letters.join("\n")).unwrap();
        let config = SourceConfig::DeadLetters {
            path: path.clone(),
            operators: vec!["triage".into(), "answer".into()],
            fields: FieldMapping {
                key_field: Some("id".into()),
                timestamp_field: Some("ts".into()),
            },
            event_time: None,
        };
        let (elements, _) = run(&config, SourcePosition::default());
        let record = |key: &str, timestamp, payload: &str, line, enters_at| {
            Element::Record(Record {
                key: Some(key.into()),
                timestamp: Some(timestamp),
                payload: payload.as_bytes().to_vec(),
                line,
                enters_at,
                produced_by: None,
                origin: None,
                ticket: None,
            })
        };
        assert_eq!(elements[0], record("k", 5, r#"{"id":1}"#, 1, 1));
        assert_eq!(elements[1], record("2", 7, r#"{"id":2,"ts":7}"#, 3, 0));
        let Element::DeadLetter(letter) = &elements[2] else {
            panic!("{elements:?}");
        };
        let letter: serde_json::Value = serde_json::from_slice(letter).unwrap();
        assert_eq!(
            (&letter["stage"], &letter["line"]),
            (&"source".into(), &4.into())
        );
        assert_eq!(letter["payload"], "{oops");
        assert!(letter["error"]
            .as_str()
            .unwrap()
            .contains("dead.jsonl:4: invalid JSON"));
        assert_eq!(elements.len(), 3);
    }

    #[test]
    fn parses_records_watermarks_and_fields() {
        let fields = FieldMapping {
            key_field: Some("id".into()),
            timestamp_field: Some("ts".into()),
        };
        match parse_line(br#"{"id":7,"ts":1000,"text":"hi"}"#, 3, &fields, None) {
            Ok(Element::Record(r)) => {
                assert_eq!(r.key.as_deref(), Some("7"));
                assert_eq!(r.timestamp, Some(1000));
                assert_eq!(r.line, 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_line(br#"{"$watermark":5}"#, 1, &fields, None),
            Ok(Element::Watermark(5))
        );
        let err = parse_line(br#"{"id":1,"ts":"soon"}"#, 1, &fields, None).unwrap_err();
        assert!(err.contains("\"ts\""), "{err}");
        let err = parse_line(b"{not json", 1, &fields, None).unwrap_err();
        assert!(err.starts_with("invalid JSON"), "{err}");
    }
}
