//! `[source]`: where records come from.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::{Location, ManifestError};
use super::event_time::EventTimeConfig;
use super::kafka::RawKafkaSource;
use super::values::{Count, DurationValue};

const DEFAULT_PAYLOAD_BYTES: usize = 64;
const MIN_PAYLOAD_BYTES: i64 = 16;
const MAX_PAYLOAD_BYTES: i64 = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceConfig {
    File {
        path: PathBuf,
        /// Where the `path =` value stands, for errors raised when opening the file.
        path_at: Location,
        fields: FieldMapping,
    },
    Stdin {
        fields: FieldMapping,
    },
    Generator {
        count: u64,
        payload_bytes: usize,
    },
    Kafka(super::kafka::KafkaSourceConfig),
    /// `kind = "serve"`: the callers of `waio serve`, which sends records in batches over HTTP
    /// and answers each (`waio serve` also runs a manifest with another source in its place).
    Serve {
        fields: FieldMapping,
    },
    /// A dead-letter file fed back by `waio dead-letters replay` (never written in a manifest):
    /// each line's record re-enters the chain where it failed.
    DeadLetters {
        path: PathBuf,
        /// The operators' names in chain order: a dead letter's `stage` names one.
        operators: Vec<String>,
        /// How the pipeline's source reads a line: dead letters of the source (lines that did
        /// not parse) are parsed again.
        fields: FieldMapping,
        event_time: Option<EventTimeConfig>,
    },
}

/// Which top-level JSON fields of an input line become the record key and event time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldMapping {
    pub key_field: Option<String>,
    pub timestamp_field: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    key_field: Option<Spanned<String>>,
    pub(super) timestamp_field: Option<Spanned<String>>,
    count: Option<Spanned<Count>>,
    payload_bytes: Option<Spanned<Count>>,
    // kind = "kafka" (see `kafka::RawKafkaSource`; serde's flatten cannot deny unknown fields).
    brokers: Option<Spanned<String>>,
    topic: Option<Spanned<String>>,
    topics: Option<Spanned<Vec<String>>>,
    group_id: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    bounded: Option<Spanned<bool>>,
    idle_timeout: Option<Spanned<DurationValue>>,
    commit_interval: Option<Spanned<DurationValue>>,
    kafka: Option<Spanned<toml::Table>>,
}

impl RawSource {
    /// Takes the Kafka fields out.
    fn take_kafka(&mut self) -> RawKafkaSource {
        RawKafkaSource {
            brokers: self.brokers.take(),
            topic: self.topic.take(),
            topics: self.topics.take(),
            group_id: self.group_id.take(),
            start: self.start.take(),
            bounded: self.bounded.take(),
            idle_timeout: self.idle_timeout.take(),
            commit_interval: self.commit_interval.take(),
            kafka: self.kafka.take(),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Stdin,
    Generator,
    Kafka,
    Serve,
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    source: Spanned<RawSource>,
) -> Result<SourceConfig, ManifestError> {
    let span = source.span();
    let mut raw = source.into_inner();
    let Some(kind) = raw.kind.as_ref() else {
        return Err(ctx.invalid(
            span,
            "source.kind",
            "missing; expected one of \"file\", \"stdin\", \"generator\", \"kafka\", \"serve\"",
        ));
    };
    let kind = ctx.choose(
        kind,
        "source.kind",
        &[
            ("file", Kind::File),
            ("stdin", Kind::Stdin),
            ("generator", Kind::Generator),
            ("kafka", Kind::Kafka),
            ("serve", Kind::Serve),
        ],
    )?;
    let kafka = raw.take_kafka();
    if let (false, Some((field, at))) = (matches!(kind, Kind::Kafka), kafka.first_set()) {
        return Err(ctx.invalid(
            at,
            format!("source.{field}"),
            "applies only to kafka sources",
        ));
    }
    match kind {
        Kind::File | Kind::Stdin | Kind::Serve => json_lines(ctx, span.start, kind, raw),
        Kind::Generator => generator(ctx, span.start, raw),
        Kind::Kafka => kafka_source(ctx, span.start, raw, kafka),
    }
}

/// A Kafka source: the key and event time come from the Kafka record (or `[event_time]`).
fn kafka_source(
    ctx: &Ctx<'_>,
    at: usize,
    raw: RawSource,
    kafka: RawKafkaSource,
) -> Result<SourceConfig, ManifestError> {
    let what = "file and stdin sources (a kafka record's key is its kafka key)";
    ctx.reject_for_kind(&raw.path, "source.path", "file sources")?;
    ctx.reject_for_kind(&raw.key_field, "source.key_field", what)?;
    ctx.reject_for_kind(&raw.timestamp_field, "source.timestamp_field", what)?;
    ctx.reject_for_kind(&raw.count, "source.count", "generator sources")?;
    ctx.reject_for_kind(
        &raw.payload_bytes,
        "source.payload_bytes",
        "generator sources",
    )?;
    Ok(SourceConfig::Kafka(super::kafka::source(ctx, at, kafka)?))
}

/// A file or stdin source: JSON lines.
fn json_lines(
    ctx: &Ctx<'_>,
    at: usize,
    kind: Kind,
    raw: RawSource,
) -> Result<SourceConfig, ManifestError> {
    let what = "generator sources";
    ctx.reject_for_kind(&raw.count, "source.count", what)?;
    ctx.reject_for_kind(&raw.payload_bytes, "source.payload_bytes", what)?;
    let fields = FieldMapping {
        key_field: ctx.non_empty_string(raw.key_field, "source.key_field")?,
        timestamp_field: ctx.non_empty_string(raw.timestamp_field, "source.timestamp_field")?,
    };
    match kind {
        Kind::Stdin => {
            ctx.reject_for_kind(&raw.path, "source.path", "file sources")?;
            return Ok(SourceConfig::Stdin { fields });
        }
        Kind::Serve => {
            ctx.reject_for_kind(&raw.path, "source.path", "file sources")?;
            return Ok(SourceConfig::Serve { fields });
        }
        _ => {}
    }
    let Some(path) = raw.path else {
        return Err(ctx.invalid(
            at..at,
            "source.path",
            "missing; a file source needs `path = \"...\"`",
        ));
    };
    Ok(SourceConfig::File {
        path: ctx.path_value(&path, "source.path")?,
        path_at: ctx.location(path.span().start),
        fields,
    })
}

fn generator(ctx: &Ctx<'_>, at: usize, raw: RawSource) -> Result<SourceConfig, ManifestError> {
    let what = "file and stdin sources";
    ctx.reject_for_kind(&raw.path, "source.path", "file sources")?;
    ctx.reject_for_kind(&raw.key_field, "source.key_field", what)?;
    ctx.reject_for_kind(&raw.timestamp_field, "source.timestamp_field", what)?;
    let Some(count) = raw.count else {
        return Err(ctx.invalid(
            at..at,
            "source.count",
            "missing; a generator source needs `count = <records>`",
        ));
    };
    let count = ctx.check(&count, "source.count", |c| c.at_least_one(""))?;
    let payload_bytes = ctx.setting(
        &raw.payload_bytes,
        "source.payload_bytes",
        DEFAULT_PAYLOAD_BYTES,
        |p| p.between(MIN_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES),
    )?;
    Ok(SourceConfig::Generator {
        count,
        payload_bytes,
    })
}
