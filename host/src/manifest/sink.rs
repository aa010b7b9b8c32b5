//! `[sink]`: where results go.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkConfig {
    File {
        path: PathBuf,
        format: OutputFormat,
        watermarks: bool,
    },
    Stdout {
        format: OutputFormat,
        watermarks: bool,
    },
    Discard,
    Kafka(super::kafka::KafkaSinkConfig),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Each output's JSON payload on its own line.
    Payload,
    /// `{"key", "timestamp", "payload"}` per line.
    Envelope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    watermarks: Option<Spanned<bool>>,
    // kind = "kafka"
    brokers: Option<Spanned<String>>,
    topic: Option<Spanned<String>>,
    transactional_id: Option<Spanned<String>>,
    kafka: Option<Spanned<toml::Table>>,
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Stdout,
    Discard,
    Kafka,
}

pub(super) fn resolve(ctx: &Ctx<'_>, sink: Spanned<RawSink>) -> Result<SinkConfig, ManifestError> {
    let span = sink.span();
    let raw = sink.into_inner();
    let Some(kind) = raw.kind.as_ref() else {
        return Err(ctx.invalid(
            span,
            "sink.kind",
            "missing; expected one of \"file\", \"stdout\", \"discard\", \"kafka\"",
        ));
    };
    let kind = ctx.choose(
        kind,
        "sink.kind",
        &[
            ("file", Kind::File),
            ("stdout", Kind::Stdout),
            ("discard", Kind::Discard),
            ("kafka", Kind::Kafka),
        ],
    )?;
    if let Kind::Kafka = kind {
        ctx.reject_for_kind(&raw.path, "sink.path", "file sinks")?;
        let what = "file and stdout sinks (a kafka record's value is the output's payload)";
        ctx.reject_for_kind(&raw.format, "sink.format", what)?;
        ctx.reject_for_kind(&raw.watermarks, "sink.watermarks", "file and stdout sinks")?;
        let kafka = super::kafka::RawKafkaSink {
            brokers: raw.brokers,
            topic: raw.topic,
            transactional_id: raw.transactional_id,
            kafka: raw.kafka,
        };
        return Ok(SinkConfig::Kafka(super::kafka::sink(
            ctx, span.start, kafka,
        )?));
    }
    let what = "kafka sinks";
    ctx.reject_for_kind(&raw.brokers, "sink.brokers", what)?;
    ctx.reject_for_kind(&raw.topic, "sink.topic", what)?;
    ctx.reject_for_kind(&raw.transactional_id, "sink.transactional_id", what)?;
    ctx.reject_for_kind(&raw.kafka, "sink.kafka", what)?;
    if let Kind::Discard = kind {
        ctx.reject_for_kind(&raw.path, "sink.path", "file sinks")?;
        let what = "file and stdout sinks";
        ctx.reject_for_kind(&raw.format, "sink.format", what)?;
        ctx.reject_for_kind(&raw.watermarks, "sink.watermarks", what)?;
        return Ok(SinkConfig::Discard);
    }
    let format = match raw.format.as_ref() {
        Some(f) => ctx.choose(
            f,
            "sink.format",
            &[
                ("payload", OutputFormat::Payload),
                ("envelope", OutputFormat::Envelope),
            ],
        )?,
        None => OutputFormat::Payload,
    };
    let watermarks = raw.watermarks.map(Spanned::into_inner).unwrap_or(false);
    if let Kind::Stdout = kind {
        ctx.reject_for_kind(&raw.path, "sink.path", "file sinks")?;
        return Ok(SinkConfig::Stdout { format, watermarks });
    }
    let Some(path) = raw.path else {
        return Err(ctx.invalid(
            span,
            "sink.path",
            "missing; a file sink needs `path = \"...\"`",
        ));
    };
    Ok(SinkConfig::File {
        path: ctx.path_value(&path, "sink.path")?,
        format,
        watermarks,
    })
}
