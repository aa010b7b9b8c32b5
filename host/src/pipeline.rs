//! Builds a pipeline from its manifest and runs it: source -> operators -> sink.

use std::sync::Arc;
use std::time::Instant;

use crate::connectors::dead_letter::DeadLetters;
use crate::connectors::sink::{run_sink, SinkError, SinkReport};
use crate::connectors::source::{run_source, source_label, SourceError, SourceReport};
use crate::io::http::HttpGateway;
use crate::manifest::Manifest;
use crate::metrics::{process_usage, OperatorSummary, RunSummary};
use crate::operator::{AsyncWaitOperator, OperatorError, OperatorReport};
use crate::plugin::{new_engine, CompileCache, InstanceLimits, PluginComponent, PluginError};
use crate::record::stage_channel;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    #[error("cannot start the mock provider: {0}")]
    MockProvider(String),
    #[error("cannot write the dead-letter output {path}: {source}")]
    DeadLetter {
        path: String,
        source: std::io::Error,
    },
    #[error("a pipeline stage stopped unexpectedly: {0}")]
    Stage(String),
}

impl PipelineError {
    /// True for errors that only say a neighbouring stage stopped.
    fn is_consequence(&self) -> bool {
        matches!(
            self,
            PipelineError::Sink(SinkError::UpstreamFailed)
                | PipelineError::Operator(OperatorError::UpstreamFailed { .. })
                | PipelineError::Operator(OperatorError::DownstreamGone { .. })
        )
    }
}

/// Loads and type-checks every plugin of the manifest.
pub fn load_plugins(manifest: &Manifest) -> Result<Vec<Arc<PluginComponent>>, PipelineError> {
    let engine = new_engine()?;
    let cache = CompileCache::from_env();
    manifest
        .operators
        .iter()
        .map(|op| {
            let limits = InstanceLimits {
                memory_bytes: op.memory_limit,
                call_time_limit: op.call_time_limit,
            };
            PluginComponent::load(&engine, &op.name, &op.plugin, &op.plugin_at, limits, &cache)
                .map(Arc::new)
                .map_err(PipelineError::from)
        })
        .collect()
}

enum StageDone {
    Source(SourceReport),
    Operator(usize, Box<OperatorReport>),
    Sink(SinkReport),
}

/// Runs the pipeline to the end of its input. The first failing record (under the "fail" policy)
/// or stage error stops everything and is returned.
pub async fn run(manifest: &Manifest) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let _mock = match &manifest.mock_provider {
        Some(cfg) => Some(start_mock(cfg).await?),
        None => None,
    };
    let components = load_plugins(manifest)?;
    let client = HttpGateway::shared_client().map_err(|e| PipelineError::Http(e.to_string()))?;
    let dead_letters = DeadLetters::new(&manifest.dead_letter.path);
    let label: Arc<str> = Arc::from(source_label(&manifest.source));

    // Open every plugin before reading any input, so a bad config fails fast.
    let mut operators = Vec::new();
    for (config, component) in manifest.operators.iter().zip(components) {
        let gateway = Arc::new(HttpGateway::new(
            client.clone(),
            config.allowed_hosts.clone(),
            config.secrets.clone(),
            config.http_timeout,
        ));
        operators.push(AsyncWaitOperator::new(
            config.clone(),
            component,
            gateway,
            dead_letters.clone(),
            Arc::clone(&label),
            tokio::runtime::Handle::current(),
        )?);
    }

    // Every stage runs on a thread of its own and reports here when it ends.
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Result<StageDone, PipelineError>)>();
    let stage_count = operators.len() + 2;
    let spawn =
        |index: usize,
         name: String,
         work: Box<dyn FnOnce() -> Result<StageDone, PipelineError> + Send>| {
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let _ = done_tx.send((index, work()));
                })
                .map(|_| ())
                .map_err(|e| PipelineError::Stage(format!("cannot start a thread: {e}")))
        };
    let (source_tx, mut upstream) = stage_channel();
    {
        let source = manifest.source.clone();
        let dead_letters = dead_letters.clone();
        spawn(
            0,
            "waio-source".into(),
            Box::new(move || {
                Ok(StageDone::Source(run_source(
                    &source,
                    source_tx,
                    &dead_letters,
                )?))
            }),
        )?;
    }
    for (index, operator) in operators.into_iter().enumerate() {
        let (tx, rx) = stage_channel();
        let input = std::mem::replace(&mut upstream, rx);
        spawn(
            index + 1,
            format!("waio-op-{index}"),
            Box::new(move || {
                Ok(StageDone::Operator(
                    index,
                    Box::new(operator.run(input, tx)?),
                ))
            }),
        )?;
    }
    {
        let sink = manifest.sink.clone();
        spawn(
            stage_count - 1,
            "waio-sink".into(),
            Box::new(move || Ok(StageDone::Sink(run_sink(&sink, upstream)?))),
        )?;
    }
    drop(done_tx);

    let mut source_report = SourceReport::default();
    let mut sink_report = SinkReport::default();
    let mut reports: Vec<Option<OperatorReport>> = vec![None; manifest.operators.len()];
    let mut consequence: Option<PipelineError> = None;
    for _ in 0..stage_count {
        let Some((_, result)) = done_rx.recv().await else {
            break;
        };
        let done = match result {
            Ok(done) => done,
            // A stage that stopped because its neighbour did is not the cause: keep listening
            // for the stage that failed first. The cause is returned as soon as it arrives; the
            // other stages wind down on their own.
            Err(error) if error.is_consequence() => {
                consequence.get_or_insert(error);
                continue;
            }
            Err(error) => return Err(error),
        };
        match done {
            StageDone::Source(r) => source_report = r,
            StageDone::Operator(i, r) => reports[i] = Some(*r),
            StageDone::Sink(r) => sink_report = r,
        }
    }
    if let Some(error) = consequence {
        return Err(error);
    }
    dead_letters
        .flush()
        .map_err(|source| PipelineError::DeadLetter {
            path: dead_letters.path().display().to_string(),
            source,
        })?;

    let elapsed = started.elapsed();
    let (cpu, peak_rss_mib) = process_usage();
    let records_in = source_report.records;
    Ok(RunSummary {
        pipeline: manifest.name.clone(),
        records_in,
        watermarks_in: source_report.watermarks,
        records_out: sink_report.records,
        dead_lettered: dead_letters.count(),
        elapsed_s: elapsed.as_secs_f64(),
        throughput_per_s: records_in as f64 / elapsed.as_secs_f64().max(1e-9),
        first_output_ms: sink_report
            .first_output_at
            .map(|t| t.duration_since(started).as_secs_f64() * 1000.0),
        cpu_s: cpu.as_secs_f64(),
        cpu_us_per_record: cpu.as_secs_f64() * 1e6 / (records_in.max(1) as f64),
        peak_rss_mib,
        operators: reports
            .iter()
            .flatten()
            .map(OperatorSummary::from)
            .collect(),
    })
}

async fn start_mock(
    cfg: &crate::manifest::MockProviderConfig,
) -> Result<waio_mock_provider::MockServer, PipelineError> {
    let config = waio_mock_provider::MockConfig {
        listen: cfg.listen,
        latency_ms: cfg.latency.as_millis() as u64,
        error_rate: cfg.error_rate,
        rate_limit_rate: cfg.rate_limit_rate,
        hang_rate: cfg.hang_rate,
        drop_rate: cfg.drop_rate,
        seed: cfg.seed,
        ..Default::default()
    };
    let server = waio_mock_provider::MockServer::start(config)
        .await
        .map_err(|e| PipelineError::MockProvider(e.to_string()))?;
    tracing::info!("mock provider listening on {}", server.url());
    Ok(server)
}
