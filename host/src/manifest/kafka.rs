//! The Kafka parts of `[source]`, `[sink]` and `[dead_letter]` (`kind = "kafka"`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::{Location, ManifestError};
use super::values::DurationValue;

/// Offsets are committed this often without `[checkpoint]` (at-least-once).
const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    /// Where a partition with no committed offset starts.
    pub start: KafkaStart,
    /// Read up to the end offsets found at start, then finish.
    pub bounded: bool,
    /// A partition with no record for this long stops holding event time back.
    pub idle_timeout: Option<Duration>,
    /// How often offsets are committed without `[checkpoint]`.
    pub commit_interval: Duration,
    /// `[source.kafka]`: librdkafka consumer settings passed through.
    pub options: BTreeMap<String, String>,
    /// Where `[source]` stands, for connection errors.
    pub at: Location,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaStart {
    Earliest,
    Latest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    pub topic: String,
    /// The producer's `transactional.id` under `[checkpoint]`: stable across restarts of one
    /// process (a restart then aborts what the crashed one left open), distinct per process.
    pub transactional_id: Option<String>,
    /// `[sink.kafka]`: librdkafka producer settings passed through.
    pub options: BTreeMap<String, String>,
    pub at: Location,
}

/// `[dead_letter] kind = "kafka"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaDeadLetters {
    /// On the sink's brokers: they commit in the sink's transactions.
    pub topic: String,
    pub at: Location,
}

/// The Kafka fields of a raw `[source]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafkaSource {
    pub(super) brokers: Option<Spanned<String>>,
    pub(super) topic: Option<Spanned<String>>,
    pub(super) topics: Option<Spanned<Vec<String>>>,
    pub(super) group_id: Option<Spanned<String>>,
    pub(super) start: Option<Spanned<String>>,
    pub(super) bounded: Option<Spanned<bool>>,
    pub(super) idle_timeout: Option<Spanned<DurationValue>>,
    pub(super) commit_interval: Option<Spanned<DurationValue>>,
    pub(super) kafka: Option<Spanned<toml::Table>>,
}

impl RawKafkaSource {
    /// The first Kafka field set, for "applies only to kafka sources".
    pub(super) fn first_set(&self) -> Option<(&'static str, std::ops::Range<usize>)> {
        let spans = [
            ("brokers", self.brokers.as_ref().map(Spanned::span)),
            ("topic", self.topic.as_ref().map(Spanned::span)),
            ("topics", self.topics.as_ref().map(Spanned::span)),
            ("group_id", self.group_id.as_ref().map(Spanned::span)),
            ("start", self.start.as_ref().map(Spanned::span)),
            ("bounded", self.bounded.as_ref().map(Spanned::span)),
            (
                "idle_timeout",
                self.idle_timeout.as_ref().map(Spanned::span),
            ),
            (
                "commit_interval",
                self.commit_interval.as_ref().map(Spanned::span),
            ),
            ("kafka", self.kafka.as_ref().map(Spanned::span)),
        ];
        spans
            .into_iter()
            .find_map(|(name, span)| span.map(|s| (name, s)))
    }
}

pub(super) fn source(
    ctx: &Ctx<'_>,
    at: usize,
    raw: RawKafkaSource,
) -> Result<KafkaSourceConfig, ManifestError> {
    let brokers = required(
        ctx,
        at,
        raw.brokers,
        "source.brokers",
        "brokers = \"host:port\"",
    )?;
    let topics = match (raw.topic, raw.topics) {
        (Some(_), Some(topics)) => {
            return Err(ctx.invalid(
                topics.span(),
                "source.topics",
                "set either `topic` or `topics`, not both",
            ))
        }
        (Some(topic), None) => vec![non_empty(ctx, topic, "source.topic")?],
        (None, Some(topics)) => {
            let span = topics.span();
            let list = topics.into_inner();
            if list.is_empty() || list.iter().any(String::is_empty) {
                return Err(ctx.invalid(span, "source.topics", "must list topic names"));
            }
            list
        }
        (None, None) => {
            return Err(ctx.invalid(
                at..at,
                "source.topic",
                "missing; a kafka source needs `topic = \"...\"` (or `topics = [...]`)",
            ))
        }
    };
    let group_id = required(
        ctx,
        at,
        raw.group_id,
        "source.group_id",
        "group_id = \"...\"",
    )?;
    let start = match raw.start.as_ref() {
        Some(s) => ctx.choose(
            s,
            "source.start",
            &[
                ("earliest", KafkaStart::Earliest),
                ("latest", KafkaStart::Latest),
            ],
        )?,
        None => KafkaStart::Earliest,
    };
    let idle_timeout = raw
        .idle_timeout
        .as_ref()
        .map(|t| ctx.check(t, "source.idle_timeout", DurationValue::positive))
        .transpose()?;
    let commit_interval = ctx.setting(
        &raw.commit_interval,
        "source.commit_interval",
        DEFAULT_COMMIT_INTERVAL,
        DurationValue::positive,
    )?;
    Ok(KafkaSourceConfig {
        brokers,
        topics,
        group_id,
        start,
        bounded: raw.bounded.map(Spanned::into_inner).unwrap_or(false),
        idle_timeout,
        commit_interval,
        options: options(ctx, raw.kafka, "source.kafka")?,
        at: ctx.location(at),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafkaSink {
    pub(super) brokers: Option<Spanned<String>>,
    pub(super) topic: Option<Spanned<String>>,
    pub(super) transactional_id: Option<Spanned<String>>,
    pub(super) kafka: Option<Spanned<toml::Table>>,
}

pub(super) fn sink(
    ctx: &Ctx<'_>,
    at: usize,
    raw: RawKafkaSink,
) -> Result<KafkaSinkConfig, ManifestError> {
    Ok(KafkaSinkConfig {
        brokers: required(
            ctx,
            at,
            raw.brokers,
            "sink.brokers",
            "brokers = \"host:port\"",
        )?,
        topic: required(ctx, at, raw.topic, "sink.topic", "topic = \"...\"")?,
        transactional_id: raw
            .transactional_id
            .map(|t| non_empty(ctx, t, "sink.transactional_id"))
            .transpose()?,
        options: options(ctx, raw.kafka, "sink.kafka")?,
        at: ctx.location(at),
    })
}

pub(super) fn dead_letters(
    ctx: &Ctx<'_>,
    at: usize,
    topic: Option<Spanned<String>>,
) -> Result<KafkaDeadLetters, ManifestError> {
    Ok(KafkaDeadLetters {
        topic: required(ctx, at, topic, "dead_letter.topic", "topic = \"...\"")?,
        at: ctx.location(at),
    })
}

fn required(
    ctx: &Ctx<'_>,
    at: usize,
    value: Option<Spanned<String>>,
    field: &str,
    example: &str,
) -> Result<String, ManifestError> {
    match value {
        Some(v) => non_empty(ctx, v, field),
        None => Err(ctx.invalid(at..at, field, format!("missing; kafka needs `{example}`"))),
    }
}

fn non_empty(ctx: &Ctx<'_>, value: Spanned<String>, field: &str) -> Result<String, ManifestError> {
    if value.get_ref().trim().is_empty() {
        return Err(ctx.invalid(value.span(), field, "must not be empty"));
    }
    Ok(value.into_inner())
}

/// A table of librdkafka settings: strings, numbers and booleans, passed on as text.
fn options(
    ctx: &Ctx<'_>,
    table: Option<Spanned<toml::Table>>,
    field: &str,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let Some(table) = table else {
        return Ok(BTreeMap::new());
    };
    let span = table.span();
    table
        .into_inner()
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(ctx.invalid(
                        span.clone(),
                        format!("{field}.{key}"),
                        format!(
                            "a librdkafka setting is a string, number or boolean, not {}",
                            other.type_str()
                        ),
                    ))
                }
            };
            Ok((key, text))
        })
        .collect()
}

/// Kafka in, Kafka out: a Kafka source's offsets commit in the Kafka sink's transactions, with
/// its dead letters; a Kafka sink's dead letters go to a topic in the same transactions.
pub(super) fn check_pairing(
    source: &super::SourceConfig,
    sink: &super::SinkConfig,
    dead_letter: &super::DeadLetterConfig,
) -> Result<(), ManifestError> {
    let kafka_sink = match sink {
        super::SinkConfig::Kafka(s) => Some(s),
        _ => None,
    };
    if let (super::SourceConfig::Kafka(source), None) = (source, kafka_sink) {
        return Err(ManifestError::Invalid {
            at: source.at.clone(),
            field: "sink.kind".into(),
            message: "a kafka source needs a kafka sink: its offsets are committed together with the output, in one transaction per checkpoint".into(),
        });
    }
    match (kafka_sink, &dead_letter.kafka) {
        (Some(sink), None) => Err(ManifestError::Invalid {
            at: sink.at.clone(),
            field: "dead_letter.kind".into(),
            message: "a kafka sink writes dead letters to a topic in the same transactions: add [dead_letter] with kind = \"kafka\" and topic = \"...\"".into(),
        }),
        (None, Some(letters)) => Err(ManifestError::Invalid {
            at: letters.at.clone(),
            field: "dead_letter.kind".into(),
            message: "kafka dead letters need a kafka sink (sink.kind = \"kafka\")".into(),
        }),
        _ => Ok(()),
    }
}
