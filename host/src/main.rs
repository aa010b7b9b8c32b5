//! The `waio` command: run or check a pipeline, or start the mock provider.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use waio::admin::AdminListener;
use waio::manifest::{Manifest, OutputFormat, RateLimitConfig, SinkConfig};
use waio::pipeline;
use waio::progress::{Progress, ProgressMode};
use waio::project::{self, Language, PluginProject};
use waio::replay;

// Many threads allocate and free small buffers per record (payloads, HTTP bodies): glibc's
// malloc showed up at ~10% of CPU in the I/O benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "waio",
    version,
    about = "Flink-compatible async I/O with WebAssembly enrichers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline to the end of its input.
    Run {
        /// The pipeline manifest (TOML).
        pipeline: PathBuf,
        /// Ignore existing checkpoints: start from the beginning with empty outputs.
        #[arg(long)]
        fresh: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Serve the pipeline's operators to another engine (a Flink job's WaioAsyncFunction):
    /// batches of JSON lines POSTed to /v1/invoke, one answer line per record as it completes.
    /// Runs until SIGINT/SIGTERM; /metrics, the status page and reloads on the same port.
    Serve {
        /// The pipeline manifest (TOML): `[source] kind = "serve"`, or a `waio run` manifest
        /// whose source, sink and checkpoint are then not used.
        pipeline: PathBuf,
        /// Where to listen: loopback by default (a sidecar serves its own machine).
        #[arg(long, value_name = "ADDR", default_value = waio::serve::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Validate a pipeline: parse the manifest, load and type-check every plugin, open the input file.
    Check {
        /// The pipeline manifest (TOML).
        pipeline: PathBuf,
    },
    /// Serve the OpenAI-compatible mock provider (tests and demos).
    MockProvider(#[command(flatten)] waio_mock_provider::MockConfig),
    /// Create or build plugin projects.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Look into a checkpoint directory.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Act on a dead-letter file.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Look into or empty a RocksDB cache directory (`cache.path`, `request_cache.path`).
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// What DIR holds: answers, remembered failures, expired and damaged entries, bytes, ages.
    /// Works while a run uses the cache.
    Stats { dir: PathBuf },
    /// Remove the entries of DIR (not while a run uses it).
    Clear {
        dir: PathBuf,
        /// Only those written longer ago than this (e.g. "7d", "12h").
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Run the records of DEAD_LETTERS through PIPELINE again, each from the operator where it
    /// failed.
    ///
    /// Writes new files only (by default beside DEAD_LETTERS): NAME.replayed.jsonl for the
    /// output, NAME.again.jsonl for the records that fail again (whatever on_failure says).
    Replay {
        /// The dead-letter file (JSON lines) a run of PIPELINE wrote.
        dead_letters: PathBuf,
        /// The pipeline manifest (TOML).
        pipeline: PathBuf,
        /// Where the replay's output goes (default: NAME.replayed.jsonl beside DEAD_LETTERS).
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Where records that fail again go (default: NAME.again.jsonl beside DEAD_LETTERS).
        #[arg(long = "dead-letters", value_name = "PATH")]
        again: Option<PathBuf>,
        /// Checkpoint the replay here, so an interrupted replay resumes (default, when the
        /// manifest has [checkpoint]: NAME.replay-checkpoints beside DEAD_LETTERS).
        #[arg(long, value_name = "DIR")]
        checkpoint_dir: Option<PathBuf>,
        /// Ignore the replay's existing checkpoints: start over with empty outputs.
        #[arg(long)]
        fresh: bool,
        /// Also write the run summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Do not print the summary on stderr.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        observe: ObserveArgs,
    },
}

/// What `waio run` and `waio serve` share.
#[derive(clap::Args)]
struct RunArgs {
    /// Also write the run summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Do not print the summary on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// First build every operator that names a plugin project (`build = "dir"`).
    #[arg(long)]
    build: bool,
    /// Hot reload: watch the manifest and the plugin files, and swap in what changes while
    /// the run goes on (with --build, also rebuild plugin projects whose sources change).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    observe: ObserveArgs,
}

impl RunArgs {
    /// What the run shows and writes; `serve`: `waio serve --listen`.
    fn output(self, serve: Option<std::net::SocketAddr>) -> Output {
        Output {
            summary_json: self.summary_json,
            quiet: self.quiet,
            observe: self.observe,
            watch: self.watch.then_some(Watch { build: self.build }),
            serve,
        }
    }
}

/// How a run can be watched while it goes.
#[derive(clap::Args, Clone)]
struct ObserveArgs {
    /// Serve Prometheus metrics (/metrics), the status page (/) and /status.json on ADDR
    /// (e.g. 127.0.0.1:9464); wins over the manifest's [admin] listen.
    #[arg(long, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,
    /// When stderr is not a terminal, log the progress this often instead of drawing a line.
    #[arg(long, value_name = "INTERVAL", default_value = "10s", value_parser = progress_interval)]
    progress_interval: Duration,
}

/// `--progress-interval`: a duration of at least [`waio::progress::MIN_INTERVAL`].
fn progress_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    let least = waio::progress::MIN_INTERVAL;
    if interval < least {
        return Err(format!(
            "{text:?} is shorter than {}: a progress line that often is only noise",
            humantime::format_duration(least)
        ));
    }
    Ok(interval)
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Every checkpoint in DIR: status, source position, records in flight per operator.
    List { dir: PathBuf },
    /// What one checkpoint holds (default: the latest complete one).
    Inspect { dir: PathBuf, id: Option<u64> },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a buildable plugin project NAME (in ./NAME unless --dir is given).
    New {
        name: String,
        /// rust, python, js or c.
        #[arg(long, default_value = "rust")]
        lang: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin project in DIR (default: the current directory) as its waio-plugin.toml says.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(waio::progress::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WAIO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,waio=info")),
        )
        .init();
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => 0,
        Err(error) => match error.downcast_ref::<BudgetStopped>() {
            Some(stopped) => {
                eprintln!("{stopped}");
                BUDGET_STOPPED
            }
            None => {
                eprintln!("error: {error:#}");
                1
            }
        },
    };
    // Exit here rather than waiting for a source blocked on stdin.
    std::process::exit(code);
}

/// The exit code of a run its `[budget]` stopped before the end of its input.
const BUDGET_STOPPED: i32 = 3;

/// A run stopped by its budget: cleanly (the summary is printed, the output committed), but
/// not to the end of its input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BudgetStopped(String);

fn describe_sink(sink: &SinkConfig) -> String {
    let format = |f: &OutputFormat, w: &bool| {
        let f = match f {
            OutputFormat::Payload => "payload",
            OutputFormat::Envelope => "envelope",
        };
        if *w {
            format!("{f} lines, with watermarks")
        } else {
            format!("{f} lines")
        }
    };
    match sink {
        SinkConfig::File {
            path,
            format: f,
            watermarks,
        } => format!("file {} ({})", path.display(), format(f, watermarks)),
        SinkConfig::Stdout {
            format: f,
            watermarks,
        } => format!("stdout ({})", format(f, watermarks)),
        SinkConfig::Discard => "discard".to_string(),
        SinkConfig::Kafka(k) => format!("kafka topic {} on {}", k.topic, k.brokers),
    }
}

/// Worker threads for the async runtime of `waio run`, which carries the plugins' HTTP requests:
/// the cores the operator threads leave, at least one. Each operator keeps a thread busy calling
/// its plugin; workers beyond the free cores only take turns with it and hand tasks to each
/// other (docs/BENCHMARKS.md). `TOKIO_WORKER_THREADS` overrides this.
fn runtime_workers(cores: usize, operators: usize) -> usize {
    cores.saturating_sub(operators).max(1)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            pipeline: path,
            fresh,
            run,
        } => {
            let build = run.build;
            run_pipeline(&path, &run.output(None), build, fresh)
        }
        Command::Serve {
            pipeline: path,
            listen,
            run,
        } => {
            let build = run.build;
            run_pipeline(&path, &run.output(Some(listen)), build, true)
        }
        Command::Check { pipeline: path } => check_pipeline(&path),
        Command::Plugin(PluginCommand::New { name, lang, dir }) => {
            let language: Language = lang.parse()?;
            let dest = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = project::scaffold(&name, language, &dest)?;
            println!("created {} ({lang} plugin):", dest.display());
            for file in files {
                println!("  {}", file.display());
            }
            println!(
                "next: cd {} && waio run --build pipeline.toml",
                dest.display()
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::Build { dir }) => {
            let project = PluginProject::load(&dir)?;
            let output = project.build()?;
            println!("built {}: {}", project.name, output.display());
            Ok(())
        }
        Command::MockProvider(config) => {
            // One thread (plus the latency timer's): the mock usually shares the machine with
            // the pipeline it serves, and a single-threaded runtime spends less CPU per request
            // than worker threads handing tasks to each other (13.8-14.5 µs instead of
            // 16-17.6 µs per request at capacity 1000 over HTTP/2; docs/BENCHMARKS.md).
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(waio_mock_provider::serve_forever(config))?;
            Ok(())
        }
        Command::Cache(CacheCommand::Stats { dir }) => {
            print!("{}", waio::cache::admin::stats_text(&dir)?);
            Ok(())
        }
        Command::Cache(CacheCommand::Clear { dir, older_than }) => {
            print!("{}", waio::cache::admin::clear_text(&dir, older_than)?);
            Ok(())
        }
        Command::Checkpoint(CheckpointCommand::List { dir }) => {
            print!("{}", waio::checkpoint::report::list_text(&dir)?);
            Ok(())
        }
        Command::Checkpoint(CheckpointCommand::Inspect { dir, id }) => {
            print!("{}", waio::checkpoint::report::inspect_text(&dir, id)?);
            Ok(())
        }
        Command::DeadLetters(DeadLettersCommand::Replay {
            dead_letters,
            pipeline: path,
            output,
            again,
            checkpoint_dir,
            fresh,
            summary_json,
            quiet,
            observe,
        }) => {
            let options = replay::ReplayOptions {
                dead_letters,
                output,
                again,
                checkpoint_dir,
            };
            let output = Output {
                summary_json,
                quiet,
                observe,
                watch: None,
                serve: None,
            };
            replay_dead_letters(&path, &options, fresh, &output)
        }
    }
}

/// `waio dead-letters replay`: the pipeline over the dead letters, writing new files.
fn replay_dead_letters(
    path: &Path,
    options: &replay::ReplayOptions,
    fresh: bool,
    output: &Output,
) -> anyhow::Result<()> {
    let manifest = Manifest::load(path)?;
    let plan = replay::plan(&manifest, options)?;
    let input = options.dead_letters.display();
    if plan.letters == 0 {
        eprintln!("{input} holds no dead letters: nothing to replay");
        return Ok(());
    }
    eprintln!(
        "replaying {} dead letters from {input}: output to {}, records that fail again to {}",
        plan.letters,
        plan.output.display(),
        plan.again.display()
    );
    run_manifest(&plan.manifest, fresh, output)
}

/// `waio run`: the pipeline on a runtime of its own, then its summary.
fn run_pipeline(path: &Path, output: &Output, build: bool, fresh: bool) -> anyhow::Result<()> {
    let manifest = Manifest::load(path)?;
    if build {
        for op in &manifest.operators {
            if let Some(dir) = &op.build {
                let output = PluginProject::load(dir)?.build()?;
                tracing::info!(operator = %op.name, "built {}", output.display());
            }
        }
    }
    run_manifest(&manifest, fresh, output)
}

/// What a run shows and writes besides its output.
struct Output {
    summary_json: Option<PathBuf>,
    quiet: bool,
    observe: ObserveArgs,
    /// `--watch`: reload what changes.
    watch: Option<Watch>,
    /// `waio serve --listen`: serve the operators there instead of running the source.
    serve: Option<std::net::SocketAddr>,
}

/// `--watch`, and whether plugin projects are rebuilt too (`--build`).
#[derive(Clone, Copy)]
struct Watch {
    build: bool,
}

/// Runs a loaded pipeline on a runtime of its own, then prints its summary.
fn run_manifest(manifest: &Manifest, fresh: bool, output: &Output) -> anyhow::Result<()> {
    let Output {
        summary_json,
        quiet,
        observe,
        watch,
        serve,
    } = output;
    let (summary_json, quiet) = (summary_json.as_deref(), *quiet);
    if serve.is_none() && matches!(manifest.source, waio::manifest::SourceConfig::Serve { .. }) {
        anyhow::bail!(
            "{}: [source] kind = \"serve\" takes its records from callers over HTTP: start it with `waio serve {}`",
            manifest.path.display(),
            manifest.path.display()
        );
    }
    let options = pipeline::RunOptions { fresh };
    // Bound before anything slow, so a taken port fails the run at once.
    let admin = observe
        .admin
        .or(manifest.admin.as_ref().map(|a| a.listen))
        .map(AdminListener::bind)
        .transpose()?;
    let serve = serve.map(waio::serve::ServeListener::bind).transpose()?;
    let mode = ProgressMode::for_stderr(quiet, observe.progress_interval);
    let workers = match std::env::var("TOKIO_WORKER_THREADS") {
        // tokio would panic on a bad value; say which variable is wrong instead.
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| {
                format!("TOKIO_WORKER_THREADS must be a whole number above 0, got {text:?}")
            })?,
        Err(_) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            runtime_workers(cores, manifest.operators.len())
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut progress = None;
    let mut watching = None;
    let observe_run = |handle: &pipeline::PipelineHandle| {
        if let Some(Watch { build }) = watch {
            match waio::watch::start(manifest, *build, handle.clone()) {
                Ok(started) => watching = Some(started),
                Err(error) => tracing::warn!("{error}; the run goes on without watching"),
            }
        }
        if let Some(admin) = admin {
            if let Err(error) = admin.serve(handle.clone()) {
                tracing::warn!("{error}");
            }
        }
        progress = Some(Progress::start(
            std::sync::Arc::clone(handle.telemetry()),
            mode,
        ));
    };
    let outcome = match serve {
        Some(listener) => {
            let serving = waio::serve::for_serving(manifest);
            runtime.block_on(waio::serve::run(&serving, listener, observe_run))
        }
        None => runtime.block_on(pipeline::run_observed(manifest, &options, observe_run)),
    };
    drop(watching);
    if let Some(progress) = progress {
        progress.finish();
    }
    let summary = match outcome {
        Ok(summary) => summary,
        // A second SIGINT/SIGTERM: nothing is lost, the next run resumes.
        Err(pipeline::PipelineError::StoppedAtCheckpoint(id)) => {
            match id {
                Some(id) => eprintln!("stopped at once after checkpoint {id}: the next run resumes the records in flight"),
                None => eprintln!("stopped at once before any checkpoint: the next run starts from the beginning"),
            }
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    if !quiet {
        eprint!("{}", summary.render());
    }
    if let Some(out) = summary_json {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(out, json).with_context(|| format!("cannot write {}", out.display()))?;
    }
    // A budget reached on the last records stopped nothing: the run is complete.
    match summary.budget_stop {
        Some(stop) if summary.stopped => {
            let next = if summary.checkpointing {
                "the next run resumes from the final checkpoint and goes on counting from this spend"
            } else {
                "without [checkpoint] the rest of the input was not processed and the next run starts from the beginning"
            };
            Err(BudgetStopped(format!("{stop}; {next}")).into())
        }
        _ => Ok(()),
    }
}

/// Records queued for a limit longer than their timeout time out waiting: say so before a run.
fn rate_limit_warning(
    op: &waio::manifest::OperatorConfig,
    limit: &RateLimitConfig,
) -> Option<String> {
    let queue = limit.queue_time(op.capacity)?;
    let timeout = op.timeout?;
    (queue > timeout).then(|| {
        format!(
            "a full queue of {} records takes {} to get through the rate limit, longer than the timeout ({}): records queued for the limit would time out; lower capacity or raise the timeout",
            op.capacity,
            humantime::format_duration(Duration::from_millis(queue.as_millis() as u64)),
            humantime::format_duration(timeout)
        )
    })
}

/// `waio check`: the manifest, its plugins and its input, described.
fn check_pipeline(path: &Path) -> anyhow::Result<()> {
    let manifest = Manifest::load(path)?;
    let plugins = pipeline::load_plugins(&manifest)?;
    // `waio run` needs the input file when it starts: one not written yet fails here too.
    waio::connectors::source::check_input(&manifest.source)?;
    println!("pipeline {} ({}): ok", manifest.name, path.display());
    println!(
        "  source: {}",
        waio::connectors::source::source_label(&manifest.source)
    );
    for (op, plugin) in manifest.operators.iter().zip(&plugins) {
        println!(
            "  operator {}: {} implements {}; capacity {}, timeout {}, {} output, on failure {:?}, on timeout {:?}, allowed hosts [{}], secrets [{}], HTTP/{}",
            op.name,
            op.plugin.display(),
            plugin.world(),
            op.capacity,
            op.timeout
                .map(|t| humantime::format_duration(t).to_string())
                .unwrap_or_else(|| "none".into()),
            if op.ordered { "ordered" } else { "unordered" },
            op.on_failure,
            op.on_timeout,
            op.allowed_hosts
                .iter()
                .map(|r| match r.port {
                    Some(p) => format!("{}:{p}", r.host),
                    None => r.host.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            op.secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
            op.http_version.name(),
        );
        println!("    {}", plugin.compiled);
        if op.retry.max_retries > 0 {
            println!("    request retries: {}", op.retry);
        }
        if let Some(breaker) = &op.circuit_breaker {
            println!("    circuit breaker per endpoint: {breaker}");
        }
        if op.async_retry.is_active() {
            println!("    record retries: {}", op.async_retry);
        }
        if let Some(limit) = &op.rate_limit {
            println!("    rate limit: {limit}");
            if let Some(warning) = rate_limit_warning(op, limit) {
                println!("    warning: {warning}");
            }
        }
        if let Some(cache) = &op.cache {
            let key = match &cache.key {
                waio::manifest::ResultKey::Payload => "the whole payload".to_string(),
                waio::manifest::ResultKey::Pointers(p) => p.join(", "),
            };
            let shared = if cache.share_across_versions {
                ", shared across plugin versions"
            } else {
                ""
            };
            println!("    result cache: {}; key: {key}{shared}", cache.options);
        }
        if let Some(cache) = &op.request_cache {
            println!("    request cache: {}", cache.options);
        }
        if let Some(note) = plugin.compat_note() {
            println!("    {note}");
        }
        let wasi: Vec<&str> = plugin
            .imports
            .iter()
            .map(String::as_str)
            .filter(|i| !i.starts_with("waio:"))
            .collect();
        if !wasi.is_empty() {
            println!("    also imports (sandboxed): {}", wasi.join(", "));
        }
    }
    println!("  sink: {}", describe_sink(&manifest.sink));
    println!("  dead letters: {}", manifest.dead_letter.path.display());
    if let Some(et) = &manifest.event_time {
        println!(
            "  event time: field {:?} ({:?}), max out-of-orderness {}, watermarks at most every {}",
            et.field,
            et.format,
            humantime::format_duration(et.max_out_of_orderness),
            humantime::format_duration(et.watermark_interval)
        );
    }
    match &manifest.checkpoint {
        Some(c) => println!(
            "  checkpoints: every {} in {} (keeping {}); file outputs are transactional",
            humantime::format_duration(c.interval),
            c.dir.display(),
            c.retained
        ),
        None => println!("  checkpoints: off"),
    }
    match &manifest.admin {
        Some(admin) => println!(
            "  admin server: http://{}/ (status page), /status.json, /metrics (Prometheus)",
            admin.listen
        ),
        None => println!("  admin server: off (turn it on with [admin] or waio run --admin ADDR)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::runtime_workers;

    #[test]
    fn the_runtime_gets_the_cores_the_operators_leave_and_never_none() {
        assert_eq!(runtime_workers(2, 1), 1);
        assert_eq!(runtime_workers(8, 1), 7);
        assert_eq!(runtime_workers(8, 3), 5);
        // tokio refuses a runtime without workers: more operators than cores still get one.
        assert_eq!(runtime_workers(2, 5), 1);
        assert_eq!(runtime_workers(1, 0), 1);
    }
}
