//! The progress of a run while it goes: a line redrawn a few times a second on a terminal
//! (indicatif), or a log line every `--progress-interval` when stderr is not one. Both read the
//! run's live telemetry, as the summary at the end does.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::io::Write;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cost::usage::total_cost;
use crate::telemetry::PipelineTelemetry;

/// How often the terminal line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);
/// The shortest interval between two progress log lines.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The rate shown is over about this much of the recent past.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// The line being drawn, if any: log lines are written above it rather than across it.
static DRAWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Where log lines go (`tracing_subscriber`'s writer): stderr, above the progress line while
/// one is drawn.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match drawn {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A line redrawn in place (stderr is a terminal).
    Line,
    /// A log line at this interval (stderr is a file or a pipe).
    Log(Duration),
    /// Nothing (`--quiet`).
    Off,
}

impl ProgressMode {
    /// The line on a terminal, else log lines every `interval`; nothing when `quiet`.
    pub fn for_stderr(quiet: bool, interval: Duration) -> Self {
        if quiet {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Line
        } else {
            ProgressMode::Log(interval)
        }
    }
}

/// The progress shown while a run goes on; [`Progress::finish`] ends it.
pub struct Progress {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the progress of the run whose registry is `telemetry`.
    pub fn start(telemetry: std::sync::Arc<PipelineTelemetry>, mode: ProgressMode) -> Progress {
        let (interval, bar) = match mode {
            ProgressMode::Off => {
                return Progress {
                    stop: None,
                    thread: None,
                }
            }
            ProgressMode::Line => {
                let bar = line_bar();
                *DRAWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
                (REDRAW, Some(bar))
            }
            ProgressMode::Log(interval) => (interval.max(MIN_INTERVAL), None),
        };
        let (stop, stopped) = channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("waio-progress".into())
            .spawn(move || {
                let mut rate = Rate::default();
                loop {
                    let finished = !matches!(
                        stopped.recv_timeout(interval),
                        Err(RecvTimeoutError::Timeout)
                    );
                    let line =
                        Reading::read(&telemetry).line(rate.update(telemetry.source.records.get()));
                    match &bar {
                        Some(bar) if finished => bar.finish_with_message(line),
                        Some(bar) => bar.set_message(line),
                        None if !finished => tracing::info!(target: "waio::progress", "{line}"),
                        None => {}
                    }
                    if finished {
                        return;
                    }
                }
            });
        match spawned {
            Ok(thread) => Progress {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(error) => {
                tracing::warn!("cannot show the progress: {error}");
                Progress {
                    stop: None,
                    thread: None,
                }
            }
        }
    }

    /// Stops the progress; the terminal line is redrawn once more with the final counts.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        DRAWN.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

fn line_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
    // The template is a constant; it parses.
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Records per second over the last [`RATE_WINDOW`].
#[derive(Default)]
struct Rate(VecDeque<(Instant, u64)>);

impl Rate {
    fn update(&mut self, count: u64) -> f64 {
        let now = Instant::now();
        self.0.push_back((now, count));
        while self.0.len() > 2
            && self
                .0
                .get(1)
                .is_some_and(|(at, _)| now - *at >= RATE_WINDOW)
        {
            self.0.pop_front();
        }
        match self.0.front() {
            Some((at, first)) if now > *at => (count - first) as f64 / (now - *at).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// What the line shows, read from the registry.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub records_in: u64,
    pub records_out: u64,
    pub in_flight: i64,
    pub dead_letters: u64,
    pub cache_hits: u64,
    pub cache_lookups: u64,
    /// `None`: a model without a price was used.
    pub cost_usd: Option<f64>,
}

impl Reading {
    pub fn read(t: &PipelineTelemetry) -> Reading {
        let mut reading = Reading {
            records_in: t.source.records.get(),
            records_out: t.sink.records.get(),
            dead_letters: t.sink.dead_letters.get(),
            cost_usd: total_cost(
                &t.operators
                    .iter()
                    .flat_map(|o| o.models.read())
                    .collect::<Vec<_>>(),
            ),
            ..Reading::default()
        };
        for op in &t.operators {
            reading.in_flight += op.in_flight.get();
            let caches = std::iter::once(&op.result_cache).chain(op.request_cache.get());
            for cache in caches {
                let hits = cache.hits.get() + cache.negative_hits.get();
                reading.cache_hits += hits;
                reading.cache_lookups += hits + cache.misses.get();
            }
        }
        reading
    }

    /// `records/s` is the input rate.
    pub fn line(&self, records_per_s: f64) -> String {
        let mut line = format!(
            "{} in, {} out, {records_per_s:.0} records/s, {} in flight, {} dead letters",
            self.records_in, self.records_out, self.in_flight, self.dead_letters
        );
        if self.cache_lookups > 0 {
            let rate = 100.0 * self.cache_hits as f64 / self.cache_lookups as f64;
            line.push_str(&format!(", cache hits {rate:.0}%"));
        }
        match self.cost_usd {
            Some(cost) if cost > 0.0 => line.push_str(&format!(", cost ${cost:.4}")),
            Some(_) => {}
            None => line.push_str(", cost unknown (unpriced model)"),
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_cache_hits_and_cost_only_when_there_are_any() {
        let mut reading = Reading {
            records_in: 10,
            records_out: 8,
            in_flight: 2,
            dead_letters: 1,
            cost_usd: Some(0.0),
            ..Reading::default()
        };
        assert_eq!(
            reading.line(5.0),
            "10 in, 8 out, 5 records/s, 2 in flight, 1 dead letters"
        );
        reading.cache_hits = 3;
        reading.cache_lookups = 4;
        reading.cost_usd = Some(0.01234);
        assert!(reading
            .line(5.0)
            .ends_with(", cache hits 75%, cost $0.0123"));
        reading.cost_usd = None;
        assert!(reading.line(5.0).ends_with("cost unknown (unpriced model)"));
    }

    #[test]
    fn the_reading_adds_up_the_operators() {
        let mut t = PipelineTelemetry::new("p", Instant::now(), false);
        for _ in 0..2 {
            let op = crate::telemetry::OperatorTelemetry::new("op");
            op.in_flight.add(3);
            op.result_cache.hits.add(1);
            op.result_cache.misses.add(1);
            op.models.add("m", 10, 5, Some(0.5));
            t.operators.push(std::sync::Arc::new(op));
        }
        t.source.records.add(7);
        let reading = Reading::read(&t);
        assert_eq!(
            (
                reading.records_in,
                reading.in_flight,
                reading.cache_hits,
                reading.cache_lookups
            ),
            (7, 6, 2, 4)
        );
        assert_eq!(reading.cost_usd, Some(1.0));
    }
}
