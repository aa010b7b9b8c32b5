//! What a plugin writes for people: its `logging.log` calls and its stdout and stderr.
//!
//! A plugin is not trusted with the host's log. Each line it writes becomes one `tracing` event
//! whose message starts with the operator's name, with control characters (newlines, ANSI
//! escapes, carriage returns) and bidirectional overrides escaped, so a plugin can neither make a
//! line that looks like the host's nor repaint the terminal. Each instance may write
//! [`BURST_LINES`] lines at once and [`LINES_PER_SECOND`] a second after that; lines beyond are
//! dropped and counted, and the count is logged. The last lines an instance wrote to stderr
//! during the current guest call are kept, because a guest that panics says why only there.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::bindings::LogLevel;

/// The longest line kept, in bytes of text; longer output is cut into lines of this size.
pub const LINE_MAX: usize = 1024;
/// Lines an instance may write at once before its output is dropped.
pub const BURST_LINES: u32 = 1000;
/// Lines an instance may write per second once its burst is spent.
pub const LINES_PER_SECOND: u32 = 100;
/// Lines of stderr kept for the message of a trap.
const RECENT_LINES: usize = 8;
/// While output is being dropped, the count is logged every this many lines.
const DROPPED_NOTE_EVERY: u64 = 10_000;

/// Which standard stream of the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The output of one plugin instance, shared by its log import and its stdout and stderr streams.
#[derive(Clone)]
pub struct GuestOutput(Arc<Mutex<OutputState>>);

struct OutputState {
    /// The operator's name, escaped: the prefix of every line.
    operator: String,
    /// Lines that may still be written now (a token bucket).
    allowance: f64,
    refilled: Instant,
    /// Lines dropped since output was last let through, and in all.
    dropped: u64,
    dropped_total: u64,
    /// Bytes of an unfinished line, per stream.
    partial: [Vec<u8>; 2],
    /// The last lines written to stderr since the current guest call began.
    recent: VecDeque<String>,
}

impl GuestOutput {
    pub fn new(operator: &str) -> Self {
        GuestOutput(Arc::new(Mutex::new(OutputState {
            operator: escape(operator),
            allowance: f64::from(BURST_LINES),
            refilled: Instant::now(),
            dropped: 0,
            dropped_total: 0,
            partial: [Vec::new(), Vec::new()],
            recent: VecDeque::new(),
        })))
    }

    fn state(&self) -> MutexGuard<'_, OutputState> {
        // A panic while logging leaves nothing half-done that matters: keep going.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A `logging.log` call: one line, whatever it contains.
    pub fn log(&self, level: LogLevel, message: &str) {
        let mut state = self.state();
        let text = escape(message);
        state.emit(level, None, &text);
    }

    /// Bytes the guest wrote to one of its standard streams: whole lines are logged.
    pub fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut state = self.state();
        while !bytes.is_empty() {
            let partial_len = state.partial[stream.index()].len();
            let room = LINE_MAX - partial_len;
            let newline = bytes[..bytes.len().min(room)]
                .iter()
                .position(|b| *b == b'\n');
            match newline {
                Some(at) => {
                    state.partial[stream.index()].extend_from_slice(&bytes[..at]);
                    bytes = &bytes[at + 1..];
                    state.end_line(stream);
                }
                None if bytes.len() >= room => {
                    // A line longer than LINE_MAX is cut: no unbounded buffer.
                    state.partial[stream.index()].extend_from_slice(&bytes[..room]);
                    bytes = &bytes[room..];
                    state.end_line(stream);
                }
                None => {
                    state.partial[stream.index()].extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// A guest call begins: what it writes to stderr is what a trap of this call reports.
    pub fn begin_call(&self) {
        self.state().recent.clear();
    }

    /// The last lines the guest wrote to stderr in the current call (escaped), an unfinished
    /// last line included; unfinished lines are logged now, as the instance is about to go.
    pub fn last_stderr_lines(&self) -> Vec<String> {
        let mut state = self.state();
        state.end_line(Stream::Stdout);
        state.end_line(Stream::Stderr);
        state.recent.iter().cloned().collect()
    }

    /// A stream for the WASI context's stdout or stderr.
    pub fn stream(&self, stream: Stream) -> GuestStream {
        GuestStream {
            output: self.clone(),
            stream,
        }
    }
}

impl OutputState {
    /// Logs the unfinished line of `stream`, if there is one.
    fn end_line(&mut self, stream: Stream) {
        let bytes = std::mem::take(&mut self.partial[stream.index()]);
        if bytes.is_empty() {
            return;
        }
        let text = escape(&String::from_utf8_lossy(&bytes));
        let level = match stream {
            Stream::Stdout => LogLevel::Info,
            Stream::Stderr => {
                if self.recent.len() == RECENT_LINES {
                    self.recent.pop_front();
                }
                self.recent.push_back(text.clone());
                LogLevel::Warn
            }
        };
        self.emit(level, Some(stream), &text);
    }

    /// Logs one line (already escaped) if the instance's allowance lets it through.
    fn emit(&mut self, level: LogLevel, stream: Option<Stream>, text: &str) {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * f64::from(LINES_PER_SECOND);
        self.allowance = (self.allowance + refill).min(f64::from(BURST_LINES));
        self.refilled = now;
        if self.allowance < 1.0 {
            self.dropped += 1;
            self.dropped_total += 1;
            if self.dropped == 1 {
                tracing::warn!(
                    target: "waio::plugin",
                    plugin = self.operator.as_str(),
                    "[{}] plugin output over its limit ({BURST_LINES} lines at once, then {LINES_PER_SECOND} a second per instance): lines are dropped and counted",
                    self.operator
                );
            } else if self.dropped.is_multiple_of(DROPPED_NOTE_EVERY) {
                self.note_dropped("so far");
            }
            return;
        }
        self.allowance -= 1.0;
        if self.dropped > 0 {
            self.note_dropped("over the limit");
            self.dropped = 0;
        }
        let operator = &self.operator;
        let source = match stream {
            Some(stream) => format!("[{operator} {}]", stream.name()),
            None => format!("[{operator}]"),
        };
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "waio::plugin", plugin = operator.as_str(), "{source} {text}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "waio::plugin", plugin = operator.as_str(), "{source} {text}")
            }
            LogLevel::Info => {
                tracing::info!(target: "waio::plugin", plugin = operator.as_str(), "{source} {text}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "waio::plugin", plugin = operator.as_str(), "{source} {text}")
            }
            LogLevel::Error => {
                tracing::error!(target: "waio::plugin", plugin = operator.as_str(), "{source} {text}")
            }
        }
    }

    fn note_dropped(&self, when: &str) {
        tracing::warn!(
            target: "waio::plugin",
            plugin = self.operator.as_str(),
            "[{}] {} plugin output lines dropped {when} ({} by this instance in all)",
            self.operator,
            self.dropped,
            self.dropped_total
        );
    }
}

impl Drop for OutputState {
    fn drop(&mut self) {
        // The instance is gone: its unfinished lines and the count of what it lost are said now.
        self.end_line(Stream::Stdout);
        self.end_line(Stream::Stderr);
        if self.dropped > 0 {
            self.note_dropped("before the instance ended");
        }
    }
}

/// `text` with every control character (newline, carriage return, escape, ...) and every
/// bidirectional-text control written as a Rust escape (`\n`, `\u{1b}`), cut to [`LINE_MAX`] bytes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LINE_MAX));
    for (at, c) in text.char_indices() {
        if out.len() >= LINE_MAX {
            out.push_str(&format!("... ({} more bytes)", text.len() - at));
            break;
        }
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The guest's stdout or stderr: never blocks, never fails; lines go to [`GuestOutput`].
#[derive(Clone)]
pub struct GuestStream {
    output: GuestOutput,
    stream: Stream,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // What WASI's own streams allow per write; the bytes are consumed at once.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped() {
        assert_eq!(
            escape("a\nb\r\u{1b}[31mc\td\u{202e}e\\n"),
            r"a\nb\r\u{1b}[31mc\td\u{202e}e\n"
        );
        assert_eq!(escape("héllo"), "héllo");
    }

    #[test]
    fn a_long_line_is_cut() {
        let text = "x".repeat(LINE_MAX + 500);
        let escaped = escape(&text);
        assert!(escaped.starts_with(&"x".repeat(LINE_MAX)));
        assert!(escaped.ends_with("... (500 more bytes)"), "{escaped}");
    }

    #[test]
    fn stderr_lines_of_the_current_call_are_kept_with_an_unfinished_last_line() {
        let output = GuestOutput::new("op");
        output.write(Stream::Stderr, b"from an earlier call\n");
        output.begin_call();
        output.write(Stream::Stdout, b"to stdout\n");
        output.write(Stream::Stderr, b"thread panicked at x.rs:1:2:\nbo");
        output.write(Stream::Stderr, b"om \x1b[2J");
        assert_eq!(
            output.last_stderr_lines(),
            ["thread panicked at x.rs:1:2:", r"boom \u{1b}[2J"]
        );
    }

    #[test]
    fn only_the_last_lines_are_kept_and_output_past_the_allowance_is_counted() {
        let output = GuestOutput::new("op");
        for i in 0..(BURST_LINES + 50) {
            output.write(Stream::Stderr, format!("line {i}\n").as_bytes());
        }
        let lines = output.last_stderr_lines();
        assert_eq!(lines.len(), RECENT_LINES);
        assert_eq!(lines.last().map(String::as_str), Some("line 1049"));
        let state = output.state();
        // The refill over the test's few milliseconds lets at most a line or two more through.
        assert!(
            (48..=50).contains(&state.dropped_total),
            "{}",
            state.dropped_total
        );
    }
}
