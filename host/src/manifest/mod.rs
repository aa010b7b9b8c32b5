//! The pipeline manifest: a TOML file describing source, operator chain, sink, secrets and limits.
//!
//! Parsing happens in two steps. First serde reads the text into `Raw*` structs that mirror the
//! file (unknown keys and wrong types fail here, located by `toml::de::Error::span()` and named
//! by `syntax`); values that need checking are kept as `toml::Spanned` so that the second step,
//! validation and resolution into the public config types, can point at the offending line and
//! column too. The user reference for the format is docs/MANIFEST.md.
//!
//! One file per top-level section holds its public config type, its raw file-shaped struct and
//! its `resolve`; `values` holds the value types sections share (durations, sizes, counts,
//! fractions, host rules), each checking itself, and `Ctx::setting` turns an optional raw value
//! into a default or a checked, located value. Adding a section: a file with those three, its
//! `mod` and `pub use` lines, a field in `RawManifest` and in `Manifest`, and its `resolve` call
//! in `parse_with_env`. A sub-table of an operator (`[operator.NAME]`) is the same, with the
//! fields in `RawOperator` and `OperatorConfig`.

mod admin;
mod async_retry;
mod batch;
mod cache;
pub mod changes;
mod checkpoint;
mod context;
mod cost;
mod dead_letter;
mod error;
mod event_time;
mod kafka;
mod mock_provider;
mod operator;
mod rate_limit;
mod resilience;
mod secrets;
mod sink;
mod source;
mod syntax;
mod values;

#[cfg(test)]
mod async_retry_tests;
#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod rate_limit_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use admin::{AdminConfig, DEFAULT_ADMIN_LISTEN};
pub use async_retry::{AsyncRetryConfig, RetryOnFailure, RetryStrategy};
pub use batch::BatchConfig;
pub use cache::{RequestCacheConfig, ResultCacheConfig, ResultKey};
pub use checkpoint::CheckpointConfig;
pub use cost::{BudgetConfig, PricingConfig};
pub use dead_letter::DeadLetterConfig;
pub use error::{Location, ManifestError};
pub use event_time::{EventTimeConfig, TimestampFormat};
pub use kafka::{KafkaDeadLetters, KafkaSinkConfig, KafkaSourceConfig, KafkaStart};
pub use mock_provider::MockProviderConfig;
pub use operator::{HttpVersion, OperatorConfig, Policy};
pub use rate_limit::{algorithm_name, RateLimitBackend, RateLimitConfig};
pub use resilience::{CircuitBreakerConfig, RetryConfig};
pub use secrets::{Secret, MIN_SECRET_BYTES};
pub use sink::{OutputFormat, SinkConfig};
pub use source::{FieldMapping, SourceConfig};
pub use values::HostRule;

use context::Ctx;
use secrets::EnvLookup;

/// A validated pipeline: every path is resolved, every default filled in.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest file as given to `load` / `parse`.
    pub path: PathBuf,
    pub name: String,
    pub source: SourceConfig,
    /// The operator chain, in file order.
    pub operators: Vec<OperatorConfig>,
    pub sink: SinkConfig,
    pub dead_letter: DeadLetterConfig,
    pub mock_provider: Option<MockProviderConfig>,
    pub checkpoint: Option<CheckpointConfig>,
    pub event_time: Option<EventTimeConfig>,
    /// The shared limits, `[rate_limits.NAME]`, by name (operators that use one carry it too).
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    /// `[pricing]`: what each model's tokens cost (empty: no prices).
    pub pricing: PricingConfig,
    /// `[budget]`: how much the run may spend.
    pub budget: Option<BudgetConfig>,
    /// `[admin]`: the metrics endpoint and status page (off without it).
    pub admin: Option<AdminConfig>,
}

impl Manifest {
    /// Reads and parses the pipeline file at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ManifestError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// The manifest as `waio serve` runs it: records come from its callers and go back to them
    /// (source `serve`, keeping the field mapping; sink discarded; no checkpoints), every
    /// operator unordered (a batch never waits for its slowest record). A hot reload of a
    /// served pipeline reads the file again in this form.
    pub fn serving_form(&self) -> Manifest {
        let mut serving = self.clone();
        let fields = match &self.source {
            SourceConfig::File { fields, .. }
            | SourceConfig::Stdin { fields }
            | SourceConfig::Serve { fields } => fields.clone(),
            _ => FieldMapping::default(),
        };
        serving.source = SourceConfig::Serve { fields };
        serving.sink = SinkConfig::Discard;
        serving.checkpoint = None;
        for op in &mut serving.operators {
            op.ordered = false;
        }
        serving
    }

    /// Parses manifest text; `path` names the file in messages and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        parse_with_env(text, path, &|name| std::env::var(name))
    }
}

/// The file as serde reads it: one field per top-level key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<Spanned<String>>,
    source: Option<Spanned<source::RawSource>>,
    #[serde(default, rename = "operator")]
    operators: Vec<Spanned<operator::RawOperator>>,
    sink: Option<Spanned<sink::RawSink>>,
    #[serde(default)]
    secrets: BTreeMap<Spanned<String>, Spanned<secrets::RawSecret>>,
    dead_letter: Option<Spanned<dead_letter::RawDeadLetter>>,
    mock_provider: Option<Spanned<mock_provider::RawMockProvider>>,
    checkpoint: Option<Spanned<checkpoint::RawCheckpoint>>,
    event_time: Option<Spanned<event_time::RawEventTime>>,
    #[serde(default)]
    rate_limits: BTreeMap<Spanned<String>, rate_limit::RawRateLimit>,
    #[serde(default)]
    pricing: BTreeMap<Spanned<String>, Spanned<cost::RawPrice>>,
    budget: Option<Spanned<cost::RawBudget>>,
    admin: Option<Spanned<admin::RawAdmin>>,
}

/// The environment is passed in so that tests need not mutate the process environment.
fn parse_with_env(text: &str, path: &Path, env: EnvLookup<'_>) -> Result<Manifest, ManifestError> {
    let ctx = Ctx::new(text, path);
    let raw: RawManifest = toml::from_str(text).map_err(|e| syntax::syntax_error(&ctx, &e))?;

    // A `waio serve` pipeline answers its callers: it needs no [sink].
    let served = raw
        .source
        .as_ref()
        .and_then(|s| s.get_ref().kind.as_ref())
        .is_some_and(|kind| kind.get_ref() == "serve");
    let sink_or_none = match raw.sink {
        None if served => Some(None),
        None => None,
        Some(sink) => Some(Some(sink)),
    };
    let missing: Vec<&str> = [
        (raw.source.is_none(), "[source]"),
        (raw.operators.is_empty(), "[[operator]]"),
        (sink_or_none.is_none(), "[sink]"),
    ]
    .into_iter()
    .filter_map(|(absent, section)| absent.then_some(section))
    .collect();
    let (Some(source), Some(sink), true) = (raw.source, sink_or_none, missing.is_empty()) else {
        return Err(ctx.missing(&missing));
    };

    let name = pipeline_name(&ctx, raw.name)?;
    let secrets = secrets::resolve(&ctx, raw.secrets, env)?;
    // Taken before resolution consumes the raw source, for the [event_time] conflict below.
    let timestamp_field_span = source.get_ref().timestamp_field.as_ref().map(Spanned::span);
    let source = source::resolve(&ctx, source)?;
    let named_limits = rate_limit::resolve_named(&ctx, raw.rate_limits)?;
    let operators = operators(&ctx, raw.operators, &secrets, &named_limits)?;
    let sink = match sink {
        Some(sink) => sink::resolve(&ctx, sink)?,
        None => SinkConfig::Discard,
    };
    let dead_letter = dead_letter::resolve(&ctx, raw.dead_letter)?;
    kafka::check_pairing(&source, &sink, &dead_letter)?;
    let mock_provider = raw
        .mock_provider
        .map(|m| mock_provider::resolve(&ctx, m))
        .transpose()?;
    let checkpoint = raw
        .checkpoint
        .map(|c| checkpoint::resolve(&ctx, c))
        .transpose()?;
    let event_time = match raw.event_time {
        None => None,
        Some(e) => {
            check_event_time_source(&ctx, &e, &source, timestamp_field_span)?;
            Some(event_time::resolve(&ctx, e)?)
        }
    };
    let pricing = cost::resolve_pricing(&ctx, raw.pricing)?;
    let budget = raw
        .budget
        .map(|b| cost::resolve_budget(&ctx, b, &pricing))
        .transpose()?;
    let admin = match raw.admin {
        Some(a) => admin::resolve(&ctx, a)?,
        None => None,
    };

    Ok(Manifest {
        path: path.to_path_buf(),
        name,
        source,
        operators,
        sink,
        dead_letter,
        mock_provider,
        checkpoint,
        event_time,
        rate_limits: rate_limit::configs(&named_limits),
        pricing,
        budget,
        admin,
    })
}

/// `name`, else the file's stem.
fn pipeline_name(ctx: &Ctx<'_>, name: Option<Spanned<String>>) -> Result<String, ManifestError> {
    match name {
        Some(name) => {
            if name.get_ref().trim().is_empty() {
                return Err(ctx.invalid(name.span(), "name", "must not be empty"));
            }
            Ok(name.into_inner())
        }
        None => Ok(ctx
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".to_owned())),
    }
}

/// The operator chain; names must be unique (they name the operator in logs and dead letters).
fn operators(
    ctx: &Ctx<'_>,
    raw: Vec<Spanned<operator::RawOperator>>,
    secrets: &HashMap<String, Secret>,
    named_limits: &BTreeMap<String, rate_limit::NamedLimit>,
) -> Result<Vec<OperatorConfig>, ManifestError> {
    let mut operators = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut cache_dirs: Vec<(String, PathBuf)> = Vec::new();
    for (index, op) in raw.into_iter().enumerate() {
        let span = op.span();
        let name_span = op.get_ref().name.as_ref().map(Spanned::span);
        let op = operator::resolve(ctx, index, op, secrets, named_limits)?;
        // Two caches in one RocksDB directory would lock each other out.
        let caches = [
            op.cache.as_ref().map(|c| ("cache.path", &c.options)),
            op.request_cache
                .as_ref()
                .map(|c| ("request_cache.path", &c.options)),
        ];
        let fields = caches
            .into_iter()
            .flatten()
            .map(|(key, options)| (format!("operator[{index}].{key}"), options));
        for (field, dir) in cache::rocksdb_paths(fields) {
            if let Some((other, _)) = cache_dirs.iter().find(|(_, d)| *d == dir) {
                return Err(ctx.invalid(
                    span.clone(),
                    field,
                    format!(
                        "{} is also the directory of {other}; give each cache a directory of its own",
                        dir.display()
                    ),
                ));
            }
            cache_dirs.push((field, dir));
        }
        if let Some(first) = names.insert(op.name.clone(), index) {
            return Err(ctx.invalid(
                name_span.unwrap_or(span),
                format!("operator[{index}].name"),
                format!(
                    "duplicate operator name {:?} (also used by operator[{first}]); names must be unique",
                    op.name
                ),
            ));
        }
        operators.push(op);
    }
    Ok(operators)
}

/// `[event_time]` needs a source with fields, and is the only place that names the time field.
fn check_event_time_source(
    ctx: &Ctx<'_>,
    event_time: &Spanned<event_time::RawEventTime>,
    source: &SourceConfig,
    timestamp_field_span: Option<Range<usize>>,
) -> Result<(), ManifestError> {
    if let SourceConfig::Generator { .. } = source {
        return Err(ctx.invalid(
            event_time.span(),
            "event_time",
            "does not apply to a generator source: generated records have no fields to read an event time from",
        ));
    }
    // Two settings for one thing would leave the reader guessing which one wins.
    if let Some(span) = timestamp_field_span {
        let line = ctx.line_of(event_time.span().start);
        return Err(ctx.invalid(
            span,
            "source.timestamp_field",
            format!(
                "conflicts with [event_time] (line {line}); name the field with event_time.field only"
            ),
        ));
    }
    Ok(())
}
