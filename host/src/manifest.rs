//! The pipeline manifest: a TOML file describing source, operator chain, sink, secrets and limits.
//!
//! Parsing happens in two steps. First serde reads the text into `Raw*` structs that mirror the
//! file (unknown keys and wrong types fail here, located by `toml::de::Error::span()`); values
//! that need checking are kept as `toml::Spanned` so that the second step, validation and
//! resolution into the public config types, can point at the offending line and column too.
//! The user reference for the format is docs/MANIFEST.md.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

const DEFAULT_CAPACITY: usize = 100;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CALL_TIME_LIMIT: Duration = Duration::from_millis(200);
/// How long a `timeout` handler that sent a request (a fallback call) may take to complete.
const DEFAULT_TIMEOUT_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_MEMORY_LIMIT: u64 = 64 * MIB;
const MIN_MEMORY_LIMIT: u64 = MIB;
/// A wasm32 linear memory cannot grow beyond 4 GiB, so a larger limit would only mislead.
const MAX_MEMORY_LIMIT: u64 = 4 * 1024 * MIB;
const MAX_INSTANCES: i64 = 64;
const DEFAULT_PAYLOAD_BYTES: usize = 64;
const MIN_PAYLOAD_BYTES: i64 = 16;
const MAX_PAYLOAD_BYTES: i64 = 1024 * 1024;
const DEFAULT_DEAD_LETTER_FILE: &str = "dead-letters.jsonl";
const MIB: u64 = 1024 * 1024;
/// The mock provider's own default seed, so a manifest and its CLI behave alike.
const DEFAULT_MOCK_SEED: u64 = 42;
const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_CHECKPOINTS_RETAINED: usize = 3;
/// Flink's default `pipeline.auto-watermark-interval`.
const DEFAULT_WATERMARK_INTERVAL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Public config types
// ---------------------------------------------------------------------------------------------

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
}

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
}

/// Which top-level JSON fields of an input line become the record key and event time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldMapping {
    pub key_field: Option<String>,
    pub timestamp_field: Option<String>,
}

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Position in the chain, 0-based (the `N` of `operator[N]` in error messages).
    pub index: usize,
    pub name: String,
    pub plugin: PathBuf,
    /// Where the `plugin =` value stands, for errors raised when loading the component.
    pub plugin_at: Location,
    pub capacity: usize,
    /// `None` = no timeout.
    pub timeout: Option<Duration>,
    pub ordered: bool,
    pub on_failure: Policy,
    pub on_timeout: Policy,
    pub instances: usize,
    pub allowed_hosts: Vec<HostRule>,
    pub secrets: Vec<Secret>,
    pub http_timeout: Duration,
    pub http_version: HttpVersion,
    /// Bytes of linear memory per plugin instance.
    pub memory_limit: u64,
    pub call_time_limit: Duration,
    /// Requests the plugin may have on the network at once; more wait in the host.
    pub max_requests_in_flight: usize,
    /// How long a `timeout` handler that sent a request may take to complete the record.
    pub timeout_grace: Duration,
    /// The `[operator.config]` table as a JSON object (`{}` when absent).
    pub config_json: String,
    /// A plugin project directory (with `waio-plugin.toml`) that `waio run --build` builds first.
    pub build: Option<PathBuf>,
}

/// One entry of an operator's network allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    /// Lowercase host name or IP address (IPv6 without brackets).
    pub host: String,
    /// `None` = any port.
    pub port: Option<u16>,
}

impl HostRule {
    /// Whether a request to `host:port` passes this rule. Host names compare case-insensitively;
    /// a bracketed IPv6 address (as `url` prints it) and a trailing root dot are accepted.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        host.eq_ignore_ascii_case(&self.host) && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = self.host.contains(':');
        match (bracket, self.port) {
            (false, None) => write!(f, "{}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
        }
    }
}

/// Shortest secret value accepted: the host blanks every occurrence of a secret out of answers,
/// and a short value would blank ordinary text (`ok` in `book`) and so tell a plugin what it is.
pub const MIN_SECRET_BYTES: usize = 8;

/// A named secret, its resolved value and the hosts it may be sent to. `Debug` never shows the
/// value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub value: String,
    /// Requests that carry this secret may go only to these hosts (checked before sending).
    pub hosts: Vec<HostRule>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// The HTTP version an operator's requests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.1, one connection per request in flight (kept alive for the next).
    Http1,
    /// HTTP/2 from the first byte (prior knowledge, also over TLS): every request to a host
    /// shares one connection. Only for servers known to speak it.
    Http2,
}

impl HttpVersion {
    /// The manifest's name for it.
    pub fn name(self) -> &'static str {
        match self {
            HttpVersion::Http1 => "1.1",
            HttpVersion::Http2 => "2",
        }
    }
}

/// What happens to a record whose invocation fails or times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Flink's behaviour: the job fails.
    Fail,
    /// The record goes to the dead-letter file and the job goes on.
    DeadLetter,
}

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Each output's JSON payload on its own line.
    Payload,
    /// `{"key", "timestamp", "payload"}` per line.
    Envelope,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterConfig {
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MockProviderConfig {
    pub listen: SocketAddr,
    pub latency: Duration,
    pub error_rate: f64,
    pub rate_limit_rate: f64,
    pub hang_rate: f64,
    pub drop_rate: f64,
    pub seed: u64,
}

/// Periodic checkpoints (`[checkpoint]`); without it a run keeps no state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// RocksDB directory, resolved against the manifest's directory.
    pub dir: PathBuf,
    /// Time between checkpoints; greater than 0.
    pub interval: Duration,
    /// Complete checkpoints kept (older ones are deleted); at least 1.
    pub retained: usize,
}

/// Event time read from a record field, with generated watermarks (`[event_time]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTimeConfig {
    /// Top-level JSON field of each input record holding its event time.
    pub field: String,
    pub format: TimestampFormat,
    /// Watermark = largest timestamp seen - max_out_of_orderness - 1 ms (Flink's
    /// BoundedOutOfOrderness).
    pub max_out_of_orderness: Duration,
    /// Minimum wall-clock time between two generated watermarks (Flink's autoWatermarkInterval);
    /// zero emits whenever the watermark advances.
    pub watermark_interval: Duration,
}

/// How the event-time field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampFormat {
    /// An integer of milliseconds since the Unix epoch.
    EpochMillis,
    /// A number (integer or fraction) of seconds since the Unix epoch.
    EpochSeconds,
    /// A string such as `2026-11-22T10:00:00.123+02:00`.
    Rfc3339,
}

/// A place in the manifest file; line and column are 1-based, the column counts characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read pipeline file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// TOML syntax and serde errors (unknown keys, wrong types); the message starts with the
    /// field path when one is known.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// A value that parsed but is not acceptable.
    #[error("{at}: {field}: {message}")]
    Invalid {
        at: Location,
        field: String,
        message: String,
    },
    /// A whole section is missing.
    #[error("{}: {message}", path.display())]
    Missing { path: PathBuf, message: String },
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

    /// Parses manifest text; `path` names the file in messages and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        parse_with_env(text, path, &|name| std::env::var(name))
    }
}

// ---------------------------------------------------------------------------------------------
// Raw, file-shaped structs
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<Spanned<String>>,
    source: Option<Spanned<RawSource>>,
    #[serde(default, rename = "operator")]
    operators: Vec<Spanned<RawOperator>>,
    sink: Option<Spanned<RawSink>>,
    #[serde(default)]
    secrets: BTreeMap<Spanned<String>, Spanned<RawSecret>>,
    dead_letter: Option<Spanned<RawDeadLetter>>,
    mock_provider: Option<Spanned<RawMockProvider>>,
    checkpoint: Option<Spanned<RawCheckpoint>>,
    event_time: Option<Spanned<RawEventTime>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    key_field: Option<Spanned<String>>,
    timestamp_field: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    payload_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    name: Option<Spanned<String>>,
    plugin: Option<Spanned<String>>,
    // Signed so that `capacity = -1` gets Flink's message rather than a type error.
    #[serde(alias = "max_concurrent_requests", alias = "max-concurrent-requests")]
    capacity: Option<Spanned<i64>>,
    #[serde(alias = "request_timeout", alias = "request-timeout")]
    timeout: Option<Spanned<DurationValue>>,
    #[serde(alias = "ordered_output", alias = "ordered-output")]
    ordered: Option<Spanned<bool>>,
    #[serde(alias = "output-mode")]
    output_mode: Option<Spanned<String>>,
    on_failure: Option<Spanned<String>>,
    on_timeout: Option<Spanned<String>>,
    instances: Option<Spanned<i64>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    secrets: Option<Vec<Spanned<String>>>,
    http_timeout: Option<Spanned<DurationValue>>,
    http_version: Option<Spanned<String>>,
    memory_limit: Option<Spanned<SizeValue>>,
    call_time_limit: Option<Spanned<DurationValue>>,
    max_requests_in_flight: Option<Spanned<i64>>,
    timeout_grace: Option<Spanned<DurationValue>>,
    build: Option<Spanned<String>>,
    config: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: Option<Spanned<String>>,
    value: Option<Spanned<String>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    watermarks: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadLetter {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMockProvider {
    listen: Option<Spanned<String>>,
    latency: Option<Spanned<DurationValue>>,
    error_rate: Option<Spanned<f64>>,
    rate_limit_rate: Option<Spanned<f64>>,
    hang_rate: Option<Spanned<f64>>,
    drop_rate: Option<Spanned<f64>>,
    seed: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    dir: Option<Spanned<String>>,
    interval: Option<Spanned<DurationValue>>,
    // Signed so that `retained = -1` gets a range message rather than a type error.
    retained: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventTime {
    field: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    #[serde(alias = "out_of_orderness")]
    max_out_of_orderness: Option<Spanned<DurationValue>>,
    #[serde(alias = "auto_watermark_interval")]
    watermark_interval: Option<Spanned<DurationValue>>,
}

/// The names of each field that has aliases (the serde aliases above; the first name is the
/// field's own), by top-level table: a table that sets two of them gets an error naming both.
const ALIASES: &[(&str, &[&str])] = &[
    (
        "operator",
        &[
            "capacity",
            "max_concurrent_requests",
            "max-concurrent-requests",
        ],
    ),
    (
        "operator",
        &["timeout", "request_timeout", "request-timeout"],
    ),
    ("operator", &["ordered", "ordered_output", "ordered-output"]),
    ("operator", &["output_mode", "output-mode"]),
    ("event_time", &["max_out_of_orderness", "out_of_orderness"]),
    (
        "event_time",
        &["watermark_interval", "auto_watermark_interval"],
    ),
];

/// A duration as written: a string for humantime, or an integer of milliseconds.
enum DurationValue {
    Text(String),
    Millis(i64),
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"5s\", \"1m\", or integer milliseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                Ok(DurationValue::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                Ok(DurationValue::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                i64::try_from(v)
                    .map(DurationValue::Millis)
                    .map_err(|_| E::custom("duration too large"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A memory size as written: a string with a unit, or an integer of bytes.
enum SizeValue {
    Text(String),
    Bytes(i64),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512KiB\", \"64MiB\", \"1GiB\", or integer bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeValue, E> {
                i64::try_from(v)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::custom("size too large"))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and resolution
// ---------------------------------------------------------------------------------------------

type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, std::env::VarError>;

/// The environment is passed in so that tests need not mutate the process environment.
fn parse_with_env(text: &str, path: &Path, env: EnvLookup<'_>) -> Result<Manifest, ManifestError> {
    let ctx = Ctx {
        text,
        file: path,
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let raw: RawManifest = toml::from_str(text).map_err(|e| ctx.syntax_error(&e))?;

    let missing: Vec<&str> = [
        (raw.source.is_none(), "[source]"),
        (raw.operators.is_empty(), "[[operator]]"),
        (raw.sink.is_none(), "[sink]"),
    ]
    .into_iter()
    .filter_map(|(absent, section)| absent.then_some(section))
    .collect();
    let (Some(source), Some(sink), true) = (raw.source, raw.sink, missing.is_empty()) else {
        return Err(ctx.missing(&missing));
    };

    let name = match raw.name {
        Some(name) => {
            if name.get_ref().trim().is_empty() {
                return Err(ctx.invalid(name.span(), "name", "must not be empty"));
            }
            name.into_inner()
        }
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".to_owned()),
    };

    let secrets = resolve_secrets(&ctx, raw.secrets, env)?;
    // Taken before resolution consumes the raw source, for the [event_time] conflict below.
    let timestamp_field_span = source.get_ref().timestamp_field.as_ref().map(Spanned::span);
    let source = resolve_source(&ctx, source)?;

    let mut operators = Vec::with_capacity(raw.operators.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, op) in raw.operators.into_iter().enumerate() {
        let span = op.span();
        let name_span = op.get_ref().name.as_ref().map(Spanned::span);
        let op = resolve_operator(&ctx, index, op, &secrets)?;
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

    let sink = resolve_sink(&ctx, sink)?;
    let dead_letter = match raw
        .dead_letter
        .map(Spanned::into_inner)
        .and_then(|d| d.path)
    {
        Some(p) => DeadLetterConfig {
            path: ctx.path_value(&p, "dead_letter.path")?,
        },
        None => DeadLetterConfig {
            path: ctx.base_dir.join(DEFAULT_DEAD_LETTER_FILE),
        },
    };
    let mock_provider = raw
        .mock_provider
        .map(|m| resolve_mock_provider(&ctx, m))
        .transpose()?;
    let checkpoint = raw
        .checkpoint
        .map(|c| resolve_checkpoint(&ctx, c))
        .transpose()?;
    let event_time = match raw.event_time {
        None => None,
        Some(e) => {
            if let SourceConfig::Generator { .. } = source {
                return Err(ctx.invalid(
                    e.span(),
                    "event_time",
                    "does not apply to a generator source: generated records have no fields to read an event time from",
                ));
            }
            // Two settings for one thing would leave the reader guessing which one wins.
            if let Some(span) = timestamp_field_span {
                let line = line_column(ctx.text, e.span().start).0;
                return Err(ctx.invalid(
                    span,
                    "source.timestamp_field",
                    format!(
                        "conflicts with [event_time] (line {line}); name the field with event_time.field only"
                    ),
                ));
            }
            Some(resolve_event_time(&ctx, e)?)
        }
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
    })
}

struct Ctx<'a> {
    text: &'a str,
    file: &'a Path,
    base_dir: PathBuf,
}

impl Ctx<'_> {
    fn location(&self, offset: usize) -> Location {
        let (line, column) = line_column(self.text, offset);
        Location {
            file: self.file.to_path_buf(),
            line,
            column,
        }
    }

    fn invalid(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ManifestError {
        ManifestError::Invalid {
            at: self.location(span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    fn missing(&self, what: &[&str]) -> ManifestError {
        ManifestError::Missing {
            path: self.file.to_path_buf(),
            message: format!(
                "missing {}: a pipeline needs a [source], at least one [[operator]] and a [sink]",
                what.join(", ")
            ),
        }
    }

    fn syntax_error(&self, err: &toml::de::Error) -> ManifestError {
        // toml messages may span lines; one line reads better after "file:line:col: ".
        let message = err
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        // serde says "duplicate field `capacity`" at the table for a key and its alias: name both.
        if err.message().starts_with("duplicate field") {
            if let Some(conflict) = self.alias_conflict() {
                return conflict;
            }
        }
        let Some(span) = err.span() else {
            return ManifestError::Syntax {
                at: self.location(0),
                message,
            };
        };
        let message = match field_path_at(self.text, span.start) {
            Some(field) if !field.is_empty() => format!("{field}: {message}"),
            _ => message,
        };
        ManifestError::Syntax {
            at: self.location(span.start),
            message,
        }
    }

    /// The first table, in file order, that sets a field under two of its names (`ALIASES`).
    fn alias_conflict(&self) -> Option<ManifestError> {
        /// A key with where it starts.
        type Given<'a> = (&'a str, usize);
        let PlainNode(Node::Table(root)) = toml::from_str(self.text).ok()? else {
            return None;
        };
        // (field path, the first key, the second key), the earliest second key wins.
        let mut found: Option<(String, Given<'_>, Given<'_>)> = None;
        for (key, value) in &root {
            // `[[operator]]` is an array of tables (`operator[N]`), `[event_time]` a table.
            let tables: Vec<(String, &Vec<(NodeKey, SpannedNode)>)> = match &value.node {
                Node::Table(entries) => vec![(key.name.clone(), entries)],
                Node::Array(items) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| match &item.node {
                        Node::Table(entries) => Some((format!("{}[{i}]", key.name), entries)),
                        _ => None,
                    })
                    .collect(),
                Node::Leaf => Vec::new(),
            };
            for (_, names) in ALIASES.iter().filter(|(table, _)| *table == key.name) {
                for (table, entries) in &tables {
                    let mut given: Vec<Given<'_>> = entries
                        .iter()
                        .filter(|(k, _)| names.contains(&k.name.as_str()))
                        .filter_map(|(k, _)| Some((k.name.as_str(), k.span.as_ref()?.start)))
                        .collect();
                    given.sort_by_key(|(_, start)| *start);
                    if let [first, second, ..] = given[..] {
                        if found.as_ref().is_none_or(|f| second.1 < f.2 .1) {
                            found = Some((format!("{table}.{}", names[0]), first, second));
                        }
                    }
                }
            }
        }
        let (field, (first, first_at), (second, second_at)) = found?;
        let (first_line, first_column) = line_column(self.text, first_at);
        let (line, column) = line_column(self.text, second_at);
        Some(self.invalid(
            second_at..second_at,
            field,
            format!(
                "set twice, by `{first}` (line {first_line}, column {first_column}) and `{second}` (line {line}, column {column}), which name the same setting; keep one"
            ),
        ))
    }

    /// A non-empty path string, resolved against the manifest's directory.
    fn path_value(&self, value: &Spanned<String>, field: &str) -> Result<PathBuf, ManifestError> {
        if value.get_ref().is_empty() {
            return Err(self.invalid(value.span(), field, "path must not be empty"));
        }
        Ok(self.base_dir.join(value.get_ref()))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn choose<T: Copy>(
    ctx: &Ctx<'_>,
    value: &Spanned<String>,
    field: &str,
    choices: &[(&str, T)],
) -> Result<T, ManifestError> {
    let given = value.get_ref();
    choices
        .iter()
        .find(|(name, _)| *name == given)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let expected: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            ctx.invalid(
                value.span(),
                field,
                format!(
                    "unknown value {given:?}; expected one of {}",
                    expected.join(", ")
                ),
            )
        })
}

/// Rejects a key that does not belong to the chosen kind, so a typo'd kind is not silently
/// combined with settings that would be ignored.
fn reject_for_kind<T>(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<T>>,
    field: &str,
    applies_to: &str,
) -> Result<(), ManifestError> {
    match value {
        Some(v) => Err(ctx.invalid(v.span(), field, format!("applies only to {applies_to}"))),
        None => Ok(()),
    }
}

fn non_empty_string(
    ctx: &Ctx<'_>,
    value: Option<Spanned<String>>,
    field: &str,
) -> Result<Option<String>, ManifestError> {
    match value {
        Some(v) if v.get_ref().is_empty() => Err(ctx.invalid(v.span(), field, "must not be empty")),
        Some(v) => Ok(Some(v.into_inner())),
        None => Ok(None),
    }
}

fn resolve_source(
    ctx: &Ctx<'_>,
    source: Spanned<RawSource>,
) -> Result<SourceConfig, ManifestError> {
    let span = source.span();
    let raw = source.into_inner();
    let Some(kind) = raw.kind.as_ref() else {
        return Err(ctx.invalid(
            span,
            "source.kind",
            "missing; expected one of \"file\", \"stdin\", \"generator\"",
        ));
    };
    #[derive(Clone, Copy)]
    enum Kind {
        File,
        Stdin,
        Generator,
    }
    let kind = choose(
        ctx,
        kind,
        "source.kind",
        &[
            ("file", Kind::File),
            ("stdin", Kind::Stdin),
            ("generator", Kind::Generator),
        ],
    )?;
    match kind {
        Kind::File | Kind::Stdin => {
            let what = "generator sources";
            reject_for_kind(ctx, &raw.count, "source.count", what)?;
            reject_for_kind(ctx, &raw.payload_bytes, "source.payload_bytes", what)?;
            let fields = FieldMapping {
                key_field: non_empty_string(ctx, raw.key_field, "source.key_field")?,
                timestamp_field: non_empty_string(
                    ctx,
                    raw.timestamp_field,
                    "source.timestamp_field",
                )?,
            };
            if let Kind::Stdin = kind {
                reject_for_kind(ctx, &raw.path, "source.path", "file sources")?;
                return Ok(SourceConfig::Stdin { fields });
            }
            let Some(path) = raw.path else {
                return Err(ctx.invalid(
                    span,
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
        Kind::Generator => {
            let what = "file and stdin sources";
            reject_for_kind(ctx, &raw.path, "source.path", "file sources")?;
            reject_for_kind(ctx, &raw.key_field, "source.key_field", what)?;
            reject_for_kind(ctx, &raw.timestamp_field, "source.timestamp_field", what)?;
            let Some(count) = raw.count else {
                return Err(ctx.invalid(
                    span,
                    "source.count",
                    "missing; a generator source needs `count = <records>`",
                ));
            };
            let count_value = *count.get_ref();
            if count_value < 1 {
                return Err(ctx.invalid(
                    count.span(),
                    "source.count",
                    format!("must be at least 1, got {count_value}"),
                ));
            }
            let payload_bytes = match raw.payload_bytes {
                None => DEFAULT_PAYLOAD_BYTES,
                Some(p) => {
                    let v = *p.get_ref();
                    if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&v) {
                        return Err(ctx.invalid(
                            p.span(),
                            "source.payload_bytes",
                            format!(
                                "must be between {MIN_PAYLOAD_BYTES} and {MAX_PAYLOAD_BYTES}, got {v}"
                            ),
                        ));
                    }
                    // In range, so the conversions cannot fail.
                    usize::try_from(v).unwrap_or(DEFAULT_PAYLOAD_BYTES)
                }
            };
            Ok(SourceConfig::Generator {
                count: u64::try_from(count_value).unwrap_or(1),
                payload_bytes,
            })
        }
    }
}

fn resolve_secrets(
    ctx: &Ctx<'_>,
    raw: BTreeMap<Spanned<String>, Spanned<RawSecret>>,
    env: EnvLookup<'_>,
) -> Result<HashMap<String, Secret>, ManifestError> {
    let mut secrets = HashMap::new();
    for (name, secret) in raw {
        let field = format!("secrets.{}", key_segment(name.get_ref()));
        let span = secret.span();
        let secret = secret.into_inner();
        // The value, where it was given (for errors about it) and what to call it there.
        let (value, value_span, value_field, origin) = match (secret.env, secret.value) {
            (Some(var), None) => {
                let var_name = var.get_ref();
                if var_name.is_empty() {
                    return Err(ctx.invalid(
                        var.span(),
                        format!("{field}.env"),
                        "must not be empty",
                    ));
                }
                let value = match env(var_name) {
                    Ok(v) if !v.is_empty() => v,
                    failed => {
                        let problem = match failed {
                            Ok(_) => "is set but empty",
                            Err(std::env::VarError::NotPresent) => "is not set",
                            Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
                        };
                        return Err(ctx.invalid(
                            var.span(),
                            format!("{field}.env"),
                            format!(
                                "secret {:?} reads environment variable {var_name}, which {problem}",
                                name.get_ref()
                            ),
                        ));
                    }
                };
                let origin = format!("environment variable {var_name}");
                (value, var.span(), format!("{field}.env"), origin)
            }
            (None, Some(value)) => {
                let value_span = value.span();
                (
                    value.into_inner(),
                    value_span,
                    format!("{field}.value"),
                    "its value".to_owned(),
                )
            }
            (Some(_), Some(value)) => {
                return Err(ctx.invalid(
                    value.span(),
                    field,
                    "give either `env` or `value`, not both",
                ));
            }
            (None, None) => {
                return Err(ctx.invalid(
                    span,
                    field,
                    "needs `env = \"VARIABLE\"` or `value = \"...\"`",
                ));
            }
        };
        if value.len() < MIN_SECRET_BYTES {
            // The length only: the value itself never goes into a message.
            return Err(ctx.invalid(
                value_span,
                value_field,
                format!(
                    "secret {:?}: {origin} is {} bytes long; a secret must be at least \
                     {MIN_SECRET_BYTES} bytes, because the host blanks it out of every answer and \
                     a short one would blank ordinary text (and show a plugin where it occurs)",
                    name.get_ref(),
                    value.len()
                ),
            ));
        }
        let hosts_field = format!("{field}.hosts");
        let Some(raw_hosts) = secret.hosts else {
            return Err(ctx.invalid(
                span,
                hosts_field,
                format!(
                    "is required: list the hosts secret {:?} may be sent to, as in \
                     allowed_hosts, e.g. hosts = [\"api.openai.com\"]; a request that carries it \
                     to any other host is refused",
                    name.get_ref()
                ),
            ));
        };
        if raw_hosts.get_ref().is_empty() {
            return Err(ctx.invalid(
                raw_hosts.span(),
                hosts_field,
                "must list at least one host, e.g. hosts = [\"api.openai.com\"]",
            ));
        }
        let mut hosts = Vec::with_capacity(raw_hosts.get_ref().len());
        for (i, rule) in raw_hosts.get_ref().iter().enumerate() {
            let parsed = parse_host_rule(rule.get_ref())
                .map_err(|msg| ctx.invalid(rule.span(), format!("{hosts_field}[{i}]"), msg))?;
            hosts.push(parsed);
        }
        let name = name.into_inner();
        secrets.insert(name.clone(), Secret { name, value, hosts });
    }
    Ok(secrets)
}

fn resolve_operator(
    ctx: &Ctx<'_>,
    index: usize,
    op: Spanned<RawOperator>,
    secrets: &HashMap<String, Secret>,
) -> Result<OperatorConfig, ManifestError> {
    let span = op.span();
    let raw = op.into_inner();
    let field = |key: &str| format!("operator[{index}].{key}");

    let name = match raw.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            return Err(ctx.invalid(n.span(), field("name"), "must not be empty"));
        }
        Some(n) => n.into_inner(),
        None => format!("operator-{index}"),
    };

    let Some(plugin) = raw.plugin else {
        return Err(ctx.invalid(
            span,
            field("plugin"),
            "missing; every operator needs `plugin = \"path/to/component.wasm\"`",
        ));
    };
    let plugin_at = ctx.location(plugin.span().start);
    let plugin = ctx.path_value(&plugin, &field("plugin"))?;
    let build = match &raw.build {
        Some(dir) => Some(ctx.path_value(dir, &field("build"))?),
        None => None,
    };

    let capacity = match raw.capacity {
        None => DEFAULT_CAPACITY,
        Some(c) => at_least_one(
            ctx,
            &c,
            &field("capacity"),
            " (Flink rejects a capacity <= 0)",
        )?,
    };

    let timeout = match raw.timeout {
        None => Some(DEFAULT_TIMEOUT),
        // Flink reads a timeout <= 0 as "no timeout"; accept its negative integers too.
        Some(t) if matches!(t.get_ref(), DurationValue::Millis(ms) if *ms <= 0) => None,
        Some(t) => {
            let d = duration_value(ctx, &t, &field("timeout"))?;
            (!d.is_zero()).then_some(d)
        }
    };

    let ordered = match (raw.ordered, raw.output_mode) {
        (None, None) => true,
        (Some(o), None) => *o.get_ref(),
        (o, Some(mode)) => {
            let mode_ordered = choose(
                ctx,
                &mode,
                &field("output_mode"),
                &[("ordered", true), ("unordered", false)],
            )?;
            if let Some(o) = o {
                if *o.get_ref() != mode_ordered {
                    return Err(ctx.invalid(
                        mode.span(),
                        field("output_mode"),
                        format!(
                            "output_mode = {:?} contradicts ordered = {} (line {}); set only one",
                            mode.get_ref(),
                            o.get_ref(),
                            line_column(ctx.text, o.span().start).0
                        ),
                    ));
                }
            }
            mode_ordered
        }
    };

    let policies: &[(&str, Policy)] = &[
        ("fail", Policy::Fail),
        ("dead-letter", Policy::DeadLetter),
        ("dead_letter", Policy::DeadLetter),
    ];
    let on_failure = match raw.on_failure {
        Some(p) => choose(ctx, &p, &field("on_failure"), policies)?,
        None => Policy::Fail,
    };
    let on_timeout = match raw.on_timeout {
        Some(p) => choose(ctx, &p, &field("on_timeout"), policies)?,
        None => Policy::Fail,
    };

    let instances = match raw.instances {
        None => 1,
        Some(i) => {
            let v = *i.get_ref();
            if !(1..=MAX_INSTANCES).contains(&v) {
                return Err(ctx.invalid(
                    i.span(),
                    field("instances"),
                    format!("must be between 1 and {MAX_INSTANCES}, got {v}"),
                ));
            }
            usize::try_from(v).unwrap_or(1)
        }
    };

    let mut allowed_hosts = Vec::new();
    for (i, rule) in raw.allowed_hosts.unwrap_or_default().iter().enumerate() {
        let parsed = parse_host_rule(rule.get_ref()).map_err(|msg| {
            ctx.invalid(rule.span(), format!("{}[{i}]", field("allowed_hosts")), msg)
        })?;
        allowed_hosts.push(parsed);
    }

    let mut op_secrets: Vec<Secret> = Vec::new();
    for (i, name) in raw.secrets.unwrap_or_default().iter().enumerate() {
        let secret_name = name.get_ref();
        let Some(secret) = secrets.get(secret_name) else {
            let mut known: Vec<&str> = secrets.keys().map(String::as_str).collect();
            known.sort_unstable();
            let known = if known.is_empty() {
                "no [secrets] are defined".to_owned()
            } else {
                format!("defined secrets: {}", known.join(", "))
            };
            return Err(ctx.invalid(
                name.span(),
                format!("{}[{i}]", field("secrets")),
                format!("unknown secret {secret_name:?}; {known}"),
            ));
        };
        if op_secrets.iter().all(|s| &s.name != secret_name) {
            op_secrets.push(secret.clone());
        }
    }

    let http_timeout = match raw.http_timeout {
        None => DEFAULT_HTTP_TIMEOUT,
        Some(t) => positive_duration(ctx, &t, &field("http_timeout"))?,
    };
    let http_version = match raw.http_version {
        None => HttpVersion::Http1,
        Some(v) => choose(
            ctx,
            &v,
            &field("http_version"),
            &[HttpVersion::Http1, HttpVersion::Http2].map(|v| (v.name(), v)),
        )?,
    };
    let call_time_limit = match raw.call_time_limit {
        None => DEFAULT_CALL_TIME_LIMIT,
        Some(t) => positive_duration(ctx, &t, &field("call_time_limit"))?,
    };

    let max_requests_in_flight = match raw.max_requests_in_flight {
        // A record may fan out into a few requests; beyond that they queue in the host.
        None => capacity.saturating_mul(4),
        Some(n) => at_least_one(ctx, &n, &field("max_requests_in_flight"), "")?,
    };
    let timeout_grace = match raw.timeout_grace {
        None => DEFAULT_TIMEOUT_GRACE,
        Some(t) => duration_value(ctx, &t, &field("timeout_grace"))?,
    };

    let memory_limit = match raw.memory_limit {
        None => DEFAULT_MEMORY_LIMIT,
        Some(m) => {
            let bytes = match m.get_ref() {
                SizeValue::Bytes(b) => {
                    u64::try_from(*b).map_err(|_| format!("size must not be negative, got {b}"))
                }
                SizeValue::Text(t) => parse_size(t),
            }
            .map_err(|msg| ctx.invalid(m.span(), field("memory_limit"), msg))?;
            if !(MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(&bytes) {
                return Err(ctx.invalid(
                    m.span(),
                    field("memory_limit"),
                    format!("must be between 1MiB and 4GiB (wasm32 memory), got {bytes} bytes"),
                ));
            }
            bytes
        }
    };

    let config_json = match raw.config {
        None => "{}".to_owned(),
        Some(c) => {
            let json = table_to_json(c.get_ref())
                .map_err(|msg| ctx.invalid(c.span(), field("config"), msg))?;
            json.to_string()
        }
    };

    if !op_secrets.is_empty() && allowed_hosts.is_empty() {
        tracing::warn!(
            operator = %name,
            "operator has secrets but no allowed_hosts, so it cannot send any request that uses them"
        );
    }

    Ok(OperatorConfig {
        index,
        name,
        plugin,
        plugin_at,
        capacity,
        timeout,
        ordered,
        on_failure,
        on_timeout,
        instances,
        allowed_hosts,
        secrets: op_secrets,
        http_timeout,
        http_version,
        memory_limit,
        call_time_limit,
        max_requests_in_flight,
        timeout_grace,
        config_json,
        build,
    })
}

fn resolve_sink(ctx: &Ctx<'_>, sink: Spanned<RawSink>) -> Result<SinkConfig, ManifestError> {
    let span = sink.span();
    let raw = sink.into_inner();
    let Some(kind) = raw.kind.as_ref() else {
        return Err(ctx.invalid(
            span,
            "sink.kind",
            "missing; expected one of \"file\", \"stdout\", \"discard\"",
        ));
    };
    #[derive(Clone, Copy)]
    enum Kind {
        File,
        Stdout,
        Discard,
    }
    let kind = choose(
        ctx,
        kind,
        "sink.kind",
        &[
            ("file", Kind::File),
            ("stdout", Kind::Stdout),
            ("discard", Kind::Discard),
        ],
    )?;
    if let Kind::Discard = kind {
        reject_for_kind(ctx, &raw.path, "sink.path", "file sinks")?;
        let what = "file and stdout sinks";
        reject_for_kind(ctx, &raw.format, "sink.format", what)?;
        reject_for_kind(ctx, &raw.watermarks, "sink.watermarks", what)?;
        return Ok(SinkConfig::Discard);
    }
    let format = match raw.format.as_ref() {
        Some(f) => choose(
            ctx,
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
        reject_for_kind(ctx, &raw.path, "sink.path", "file sinks")?;
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

fn resolve_mock_provider(
    ctx: &Ctx<'_>,
    mock: Spanned<RawMockProvider>,
) -> Result<MockProviderConfig, ManifestError> {
    let span = mock.span();
    let raw = mock.into_inner();
    let Some(listen) = raw.listen else {
        return Err(ctx.invalid(
            span,
            "mock_provider.listen",
            "missing; give an address such as \"127.0.0.1:18080\"",
        ));
    };
    let listen_addr: SocketAddr = listen.get_ref().parse().map_err(|_| {
        ctx.invalid(
            listen.span(),
            "mock_provider.listen",
            format!(
                "{:?} is not an IP address with port, such as \"127.0.0.1:18080\"",
                listen.get_ref()
            ),
        )
    })?;
    let latency = match raw.latency {
        None => Duration::ZERO,
        Some(l) => duration_value(ctx, &l, "mock_provider.latency")?,
    };
    let rate = |value: Option<Spanned<f64>>, name: &str| -> Result<f64, ManifestError> {
        let Some(v) = value else { return Ok(0.0) };
        let r = *v.get_ref();
        if !(0.0..=1.0).contains(&r) {
            return Err(ctx.invalid(
                v.span(),
                format!("mock_provider.{name}"),
                format!("must be between 0.0 and 1.0, got {r}"),
            ));
        }
        Ok(r)
    };
    let seed = match raw.seed {
        None => DEFAULT_MOCK_SEED,
        Some(s) => u64::try_from(*s.get_ref())
            .map_err(|_| ctx.invalid(s.span(), "mock_provider.seed", "must not be negative"))?,
    };
    let config = MockProviderConfig {
        listen: listen_addr,
        latency,
        error_rate: rate(raw.error_rate, "error_rate")?,
        rate_limit_rate: rate(raw.rate_limit_rate, "rate_limit_rate")?,
        hang_rate: rate(raw.hang_rate, "hang_rate")?,
        drop_rate: rate(raw.drop_rate, "drop_rate")?,
        seed,
    };
    // Each request gets at most one fault, so the rates are shares of the same whole.
    let total = config.error_rate + config.rate_limit_rate + config.hang_rate + config.drop_rate;
    if total > 1.0 + 1e-9 {
        return Err(ctx.invalid(
            span,
            "mock_provider",
            format!(
                "error_rate + rate_limit_rate + hang_rate + drop_rate must be at most 1.0, got {total}"
            ),
        ));
    }
    Ok(config)
}

fn resolve_checkpoint(
    ctx: &Ctx<'_>,
    checkpoint: Spanned<RawCheckpoint>,
) -> Result<CheckpointConfig, ManifestError> {
    let span = checkpoint.span();
    let raw = checkpoint.into_inner();
    let Some(dir) = raw.dir else {
        return Err(ctx.invalid(
            span,
            "checkpoint.dir",
            "missing; checkpoints need a directory, e.g. `dir = \"state\"`",
        ));
    };
    let dir = ctx.path_value(&dir, "checkpoint.dir")?;
    let interval = match raw.interval {
        None => DEFAULT_CHECKPOINT_INTERVAL,
        Some(i) => positive_duration(ctx, &i, "checkpoint.interval")?,
    };
    let retained = match raw.retained {
        None => DEFAULT_CHECKPOINTS_RETAINED,
        Some(r) => {
            let v = *r.get_ref();
            match usize::try_from(v) {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(ctx.invalid(
                        r.span(),
                        "checkpoint.retained",
                        format!("must be at least 1, got {v}"),
                    ));
                }
            }
        }
    };
    Ok(CheckpointConfig {
        dir,
        interval,
        retained,
    })
}

fn resolve_event_time(
    ctx: &Ctx<'_>,
    event_time: Spanned<RawEventTime>,
) -> Result<EventTimeConfig, ManifestError> {
    let span = event_time.span();
    let raw = event_time.into_inner();
    let Some(field) = non_empty_string(ctx, raw.field, "event_time.field")? else {
        return Err(ctx.invalid(
            span,
            "event_time.field",
            "missing; name the record field holding the event time, e.g. `field = \"ts\"`",
        ));
    };
    let format = match raw.format.as_ref() {
        None => TimestampFormat::EpochMillis,
        Some(f) => choose(
            ctx,
            f,
            "event_time.format",
            &[
                ("epoch_millis", TimestampFormat::EpochMillis),
                ("epoch_seconds", TimestampFormat::EpochSeconds),
                ("rfc3339", TimestampFormat::Rfc3339),
                ("iso8601", TimestampFormat::Rfc3339),
            ],
        )?,
    };
    let max_out_of_orderness = match raw.max_out_of_orderness {
        None => Duration::ZERO,
        Some(d) => duration_value(ctx, &d, "event_time.max_out_of_orderness")?,
    };
    let watermark_interval = match raw.watermark_interval {
        None => DEFAULT_WATERMARK_INTERVAL,
        Some(d) => duration_value(ctx, &d, "event_time.watermark_interval")?,
    };
    Ok(EventTimeConfig {
        field,
        format,
        max_out_of_orderness,
        watermark_interval,
    })
}

fn duration_value(
    ctx: &Ctx<'_>,
    value: &Spanned<DurationValue>,
    field: &str,
) -> Result<Duration, ManifestError> {
    match value.get_ref() {
        DurationValue::Millis(ms) => u64::try_from(*ms)
            .map(Duration::from_millis)
            .map_err(|_| format!("duration must not be negative, got {ms}")),
        DurationValue::Text(t) => parse_duration(t),
    }
    .map_err(|msg| ctx.invalid(value.span(), field, msg))
}

/// A count that must be at least 1; `why` is added to the error.
fn at_least_one(
    ctx: &Ctx<'_>,
    value: &Spanned<i64>,
    field: &str,
    why: &str,
) -> Result<usize, ManifestError> {
    let v = *value.get_ref();
    match usize::try_from(v) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ctx.invalid(
            value.span(),
            field.to_string(),
            format!("must be at least 1, got {v}{why}"),
        )),
    }
}

fn positive_duration(
    ctx: &Ctx<'_>,
    value: &Spanned<DurationValue>,
    field: &str,
) -> Result<Duration, ManifestError> {
    let d = duration_value(ctx, value, field)?;
    if d.is_zero() {
        return Err(ctx.invalid(value.span(), field, "must be greater than 0"));
    }
    Ok(d)
}

/// A humantime duration ("250ms", "5s", "1m 30s") or a string of digits meaning milliseconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("duration {text:?} is too large"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {text:?} ({e}); use e.g. \"250ms\", \"5s\", \"1m\" or integer milliseconds"
        )
    })
}

/// A byte size: digits with an optional unit (B, KB, MB, GB, TB in powers of 1000; KiB, MiB,
/// GiB, TiB in powers of 1024; case-insensitive).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    let bad = || {
        format!(
            "invalid size {text:?}; use e.g. \"512KiB\", \"64MiB\", \"1GiB\", \"64MB\" or integer bytes"
        )
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "tb" => 1000 * 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn normalize_host(host: &str) -> &str {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.strip_suffix('.').unwrap_or(h)
}

/// "host" (any port) or "host:port"; IPv6 as "[::1]" or "[::1]:443".
fn parse_host_rule(text: &str) -> Result<HostRule, String> {
    let t = text.trim();
    let usage =
        "expected \"host\" or \"host:port\", e.g. \"api.openai.com\" or \"127.0.0.1:18080\"";
    if t.is_empty() {
        return Err(format!("empty host rule; {usage}"));
    }
    if t.contains("://") || t.contains('/') {
        return Err(format!("{text:?} looks like a URL; {usage}"));
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("{text:?} has an unclosed '['; {usage}"));
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{inside:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{text:?}: {usage}"))?,
            ),
        };
        (inside, port)
    } else if t.matches(':').count() > 1 {
        if t.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "{text:?}: {usage} (write IPv6 addresses in brackets)"
            ));
        }
        (t, None)
    } else {
        match t.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (t, None),
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{text:?} has no host; {usage}"));
    }
    if host.contains('*') {
        return Err(format!(
            "{text:?}: wildcards are not supported; list each host"
        ));
    }
    let is_ipv6 = host.contains(':');
    if !is_ipv6
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!("{text:?} is not a valid host name; {usage}"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return Err(format!("{text:?} has an invalid port {p:?} (1..=65535)")),
        },
    };
    Ok(HostRule {
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn table_to_json(table: &toml::Table) -> Result<serde_json::Value, String> {
    let mut map = serde_json::Map::new();
    for (k, v) in table {
        map.insert(k.clone(), toml_to_json(v)?);
    }
    Ok(serde_json::Value::Object(map))
}

fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("{f} cannot be represented in JSON"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        // JSON has no date type; plugins get the RFC 3339 text.
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => table_to_json(t)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Field paths for serde errors
// ---------------------------------------------------------------------------------------------

/// The document as a tree of spans, read only when a serde error needs its field path
/// (toml's own error keeps the keys private and leaves out array indices).
enum Node {
    Leaf,
    Table(Vec<(NodeKey, SpannedNode)>),
    Array(Vec<SpannedNode>),
}

/// Like `Spanned<Node>`, but also taking values toml gives no span (implicit tables such as
/// `a` in `[a.b]`), which `Spanned` rejects.
struct SpannedNode {
    span: Option<Range<usize>>,
    node: Node,
}

/// A table key with its span. toml hands keys over with spans, except the single key of the
/// map through which it passes a datetime value, which comes as a plain string.
struct NodeKey {
    name: String,
    span: Option<Range<usize>>,
}

type StructShape = (&'static str, &'static [&'static str]);

/// The struct name and fields (start, end, value) through which `toml::Spanned` asks toml for
/// a span. They are private to serde_spanned, so they are read by letting `Spanned` ask a probe.
fn spanned_shape() -> Option<StructShape> {
    struct Probe<'a>(&'a Cell<Option<StructShape>>);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(Some((name, fields)));
            Err(de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let shape = Cell::new(None);
    let _ = Spanned::<String>::deserialize(Probe(&shape));
    shape.get().filter(|(_, fields)| fields.len() == 3)
}

/// Reads the rest of a span map (start already read) whose value is `T`.
fn finish_spanned<'de, A, T>(
    mut map: A,
    fields: &[&str],
    start: usize,
) -> Result<(Range<usize>, T), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    let (mut end, mut value) = (None, None);
    while let Some(field) = map.next_key::<String>()? {
        if fields.get(1) == Some(&field.as_str()) {
            end = Some(map.next_value::<usize>()?);
        } else {
            value = Some(map.next_value::<T>()?);
        }
    }
    match (end, value) {
        (Some(end), Some(value)) => Ok((start..end, value)),
        _ => Err(de::Error::custom("incomplete span")),
    }
}

impl<'de> Deserialize<'de> for NodeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V(&'static [&'static str]);
        impl<'de> Visitor<'de> for V {
            type Value = NodeKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeKey, E> {
                Ok(NodeKey {
                    name: v.to_owned(),
                    span: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKey, A::Error> {
                let starts = map.next_key::<String>()?;
                if starts.as_deref() != self.0.first().copied() {
                    return Err(de::Error::custom("unexpected key shape"));
                }
                let start = map.next_value::<usize>()?;
                let (span, name) = finish_spanned::<_, String>(map, self.0, start)?;
                Ok(NodeKey {
                    name,
                    span: Some(span),
                })
            }
        }
        match spanned_shape() {
            Some((name, fields)) => d.deserialize_struct(name, fields, V(fields)),
            None => d.deserialize_any(V(&[])),
        }
    }
}

/// Visits one value; with `fields` set it also understands toml's span map.
struct NodeVisitor(&'static [&'static str]);

impl SpannedNode {
    fn leaf() -> Self {
        SpannedNode {
            span: None,
            node: Node::Leaf,
        }
    }
}

/// A value read without asking for its span (the inside of a span map).
struct PlainNode(Node);

impl<'de> Deserialize<'de> for PlainNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor(&[]))
            .map(|n| PlainNode(n.node))
    }
}

impl<'de> Deserialize<'de> for SpannedNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match spanned_shape() {
            Some((name, fields)) => d.deserialize_struct(name, fields, NodeVisitor(fields)),
            None => d.deserialize_any(NodeVisitor(&[])),
        }
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = SpannedNode;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SpannedNode, E> {
        Ok(SpannedNode::leaf())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SpannedNode, E> {
        Ok(SpannedNode::leaf())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SpannedNode, E> {
        Ok(SpannedNode::leaf())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SpannedNode, E> {
        Ok(SpannedNode::leaf())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<SpannedNode, E> {
        Ok(SpannedNode::leaf())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SpannedNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<SpannedNode>()? {
            items.push(item);
        }
        Ok(SpannedNode {
            span: None,
            node: Node::Array(items),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpannedNode, A::Error> {
        let Some(first) = map.next_key::<NodeKey>()? else {
            return Ok(SpannedNode {
                span: None,
                node: Node::Table(Vec::new()),
            });
        };
        if first.span.is_none() {
            if self.0.first() == Some(&first.name.as_str()) {
                let start = map.next_value::<usize>()?;
                let (span, PlainNode(node)) = finish_spanned(map, self.0, start)?;
                return Ok(SpannedNode {
                    span: Some(span),
                    node,
                });
            }
            // toml's datetime map: the whole value is one leaf.
            map.next_value::<IgnoredAny>()?;
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(SpannedNode::leaf());
        }
        let mut entries = vec![(first, map.next_value::<SpannedNode>()?)];
        while let Some(key) = map.next_key::<NodeKey>()? {
            let value = map.next_value::<SpannedNode>()?;
            entries.push((key, value));
        }
        Ok(SpannedNode {
            span: None,
            node: Node::Table(entries),
        })
    }
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path (`operator[1].capacity`) of the narrowest key or value whose span holds `offset`.
fn field_path_at(text: &str, offset: usize) -> Option<String> {
    let root: PlainNode = toml::from_str(text).ok()?;
    let mut best: Option<(usize, Vec<Segment<'_>>)> = None;
    let mut trail = Vec::new();
    find_offset(&root.0, offset, &mut trail, &mut best);
    let (_, segments) = best?;
    let mut path = String::new();
    for seg in segments {
        match seg {
            Segment::Key(k) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key_segment(k));
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    Some(path)
}

fn find_offset<'a>(
    node: &'a Node,
    offset: usize,
    trail: &mut Vec<Segment<'a>>,
    best: &mut Option<(usize, Vec<Segment<'a>>)>,
) {
    let consider = |span: &Option<Range<usize>>, trail: &Vec<Segment<'a>>, best: &mut Option<_>| {
        let Some(span) = span else { return };
        // Empty spans (toml gives some at end of input) still count at their start.
        let hit = span.contains(&offset) || (span.is_empty() && span.start == offset);
        let width = span.end - span.start;
        // `<=`: on a tie the deeper entry, visited later, wins.
        if hit && best.as_ref().is_none_or(|(w, _)| width <= *w) {
            *best = Some((width, trail.clone()));
        }
    };
    match node {
        Node::Leaf => {}
        Node::Table(entries) => {
            for (key, child) in entries {
                trail.push(Segment::Key(&key.name));
                consider(&key.span, trail, best);
                consider(&child.span, trail, best);
                find_offset(&child.node, offset, trail, best);
                trail.pop();
            }
        }
        Node::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                trail.push(Segment::Index(i));
                consider(&child.span, trail, best);
                find_offset(&child.node, offset, trail, best);
                trail.pop();
            }
        }
    }
}

/// A key as it would be written in a dotted TOML path: bare when possible, quoted otherwise.
fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/pipelines/demo/pipeline.toml";

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        parse_with_env(text, Path::new(FILE), &|_| {
            Err(std::env::VarError::NotPresent)
        })
    }

    fn parse_err(text: &str) -> ManifestError {
        match parse(text) {
            Ok(m) => panic!("expected an error, got {m:?}"),
            Err(e) => e,
        }
    }

    /// 1-based line and column of `needle` inside the first line that contains `line_marker`.
    fn pos(text: &str, line_marker: &str, needle: &str) -> (usize, usize) {
        for (i, line) in text.lines().enumerate() {
            if line.contains(line_marker) {
                let col = line.find(needle).expect("needle on marked line");
                return (i + 1, line[..col].chars().count() + 1);
            }
        }
        panic!("no line contains {line_marker:?}");
    }

    /// (line, column, field) of an `Invalid` error.
    fn invalid(e: &ManifestError) -> (usize, usize, &str) {
        match e {
            ManifestError::Invalid { at, field, .. } => {
                assert_eq!(at.file, Path::new(FILE));
                (at.line, at.column, field.as_str())
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// (line, column, message) of a `Syntax` error.
    fn syntax(e: &ManifestError) -> (usize, usize, String) {
        match e {
            ManifestError::Syntax { at, message } => {
                assert_eq!(at.file, Path::new(FILE));
                (at.line, at.column, message.clone())
            }
            other => panic!("expected Syntax, got {other:?}"),
        }
    }

    /// A small valid manifest with `extra` appended to its only operator.
    fn with_operator(extra: &str) -> String {
        format!(
            "[source]\nkind = \"stdin\"\n\n[[operator]]\nplugin = \"p.wasm\"\n{extra}\n\n[sink]\nkind = \"stdout\"\n"
        )
    }

    const FULL: &str = r#"name = "quickstart"

[source]
kind = "file"
path = "events.jsonl"
key_field = "id"
timestamp_field = "ts"

[[operator]]
name = "classify"
plugin = "../../dist/plugins/openai.wasm"
max_concurrent_requests = 7
request_timeout = "1m 30s"
ordered_output = false
output-mode = "unordered"
on_failure = "dead-letter"
on_timeout = "fail"
instances = 4
allowed_hosts = ["127.0.0.1:18080", "API.OpenAI.com"]
secrets = ["openai", "literal"]
http_timeout = "5s"
http_version = "2"
memory_limit = "96MiB"
call_time_limit = "150ms"
[operator.config]
model = "mock-small"
temperature = 0.5
labels = ["a", "b"]
limits = { max_tokens = 64 }

[[operator]]
plugin = "/opt/plugins/second.wasm"
capacity = 3
timeout = 250
ordered = true
memory_limit = 2097152

[secrets.openai]
env = "WAIO_TEST_OPENAI_KEY"
hosts = ["API.OpenAI.com"]

[secrets.literal]
value = "sk-test-literal"
hosts = ["127.0.0.1:18080", "[::1]"]

[sink]
kind = "file"
path = "out/result.jsonl"
format = "envelope"
watermarks = true

[dead_letter]
path = "/var/dlq.jsonl"

[mock_provider]
listen = "127.0.0.1:18080"
latency = "20ms"
error_rate = 0.1
rate_limit_rate = 0.2
hang_rate = 0
drop_rate = 0.25
seed = 7

[checkpoint]
dir = "state"
interval = "30s"
retained = 2
"#;

    #[test]
    fn full_manifest_resolves_with_flink_aliases() {
        let env = |name: &str| match name {
            "WAIO_TEST_OPENAI_KEY" => Ok("sk-from-env".to_owned()),
            _ => Err(std::env::VarError::NotPresent),
        };
        let m = parse_with_env(FULL, Path::new(FILE), &env).unwrap();
        assert_eq!(m.path, Path::new(FILE));
        assert_eq!(m.name, "quickstart");
        assert_eq!(
            m.source,
            SourceConfig::File {
                path: PathBuf::from("/pipelines/demo/events.jsonl"),
                path_at: Location {
                    file: PathBuf::from(FILE),
                    line: 5,
                    column: 8
                },
                fields: FieldMapping {
                    key_field: Some("id".into()),
                    timestamp_field: Some("ts".into()),
                },
            }
        );
        assert_eq!(m.operators.len(), 2);

        let op = &m.operators[0];
        assert_eq!(op.index, 0);
        assert_eq!(op.name, "classify");
        assert_eq!(
            op.plugin,
            PathBuf::from("/pipelines/demo/../../dist/plugins/openai.wasm")
        );
        assert_eq!(
            op.plugin_at,
            Location {
                file: PathBuf::from(FILE),
                line: 11,
                column: 10
            }
        );
        assert_eq!(op.capacity, 7);
        assert_eq!(op.timeout, Some(Duration::from_secs(90)));
        assert!(!op.ordered);
        assert_eq!(op.on_failure, Policy::DeadLetter);
        assert_eq!(op.on_timeout, Policy::Fail);
        assert_eq!(op.instances, 4);
        assert_eq!(
            op.allowed_hosts,
            vec![
                HostRule {
                    host: "127.0.0.1".into(),
                    port: Some(18080)
                },
                HostRule {
                    host: "api.openai.com".into(),
                    port: None
                },
            ]
        );
        assert_eq!(
            op.secrets,
            vec![
                Secret {
                    name: "openai".into(),
                    value: "sk-from-env".into(),
                    hosts: vec![HostRule {
                        host: "api.openai.com".into(),
                        port: None
                    }],
                },
                Secret {
                    name: "literal".into(),
                    value: "sk-test-literal".into(),
                    hosts: vec![
                        HostRule {
                            host: "127.0.0.1".into(),
                            port: Some(18080)
                        },
                        HostRule {
                            host: "::1".into(),
                            port: None
                        },
                    ],
                },
            ]
        );
        assert_eq!(op.http_timeout, Duration::from_secs(5));
        assert_eq!(op.http_version, HttpVersion::Http2);
        assert_eq!(op.memory_limit, 96 * 1024 * 1024);
        assert_eq!(op.call_time_limit, Duration::from_millis(150));
        let config: serde_json::Value = serde_json::from_str(&op.config_json).unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "model": "mock-small",
                "temperature": 0.5,
                "labels": ["a", "b"],
                "limits": {"max_tokens": 64}
            })
        );

        let op = &m.operators[1];
        assert_eq!(op.index, 1);
        assert_eq!(op.name, "operator-1");
        assert_eq!(op.plugin, PathBuf::from("/opt/plugins/second.wasm"));
        assert_eq!(op.capacity, 3);
        assert_eq!(op.timeout, Some(Duration::from_millis(250)));
        assert!(op.ordered);
        assert_eq!(op.memory_limit, 2 * 1024 * 1024);
        assert_eq!(op.config_json, "{}");
        assert!(op.secrets.is_empty());
        assert!(op.allowed_hosts.is_empty());

        assert_eq!(
            m.sink,
            SinkConfig::File {
                path: PathBuf::from("/pipelines/demo/out/result.jsonl"),
                format: OutputFormat::Envelope,
                watermarks: true,
            }
        );
        assert_eq!(m.dead_letter.path, PathBuf::from("/var/dlq.jsonl"));
        assert_eq!(
            m.mock_provider,
            Some(MockProviderConfig {
                listen: "127.0.0.1:18080".parse().unwrap(),
                latency: Duration::from_millis(20),
                error_rate: 0.1,
                rate_limit_rate: 0.2,
                hang_rate: 0.0,
                drop_rate: 0.25,
                seed: 7,
            })
        );
        assert_eq!(
            m.checkpoint,
            Some(CheckpointConfig {
                dir: PathBuf::from("/pipelines/demo/state"),
                interval: Duration::from_secs(30),
                retained: 2,
            })
        );
        assert_eq!(m.event_time, None);
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = parse(&with_operator("")).unwrap();
        assert_eq!(m.name, "pipeline", "name defaults to the file stem");
        assert_eq!(
            m.source,
            SourceConfig::Stdin {
                fields: FieldMapping::default()
            }
        );
        let op = &m.operators[0];
        assert_eq!(op.name, "operator-0");
        assert_eq!(op.capacity, 100);
        assert_eq!(op.timeout, Some(Duration::from_secs(30)));
        assert!(op.ordered);
        assert_eq!((op.on_failure, op.on_timeout), (Policy::Fail, Policy::Fail));
        assert_eq!(op.instances, 1);
        assert!(op.allowed_hosts.is_empty());
        assert_eq!(op.http_timeout, Duration::from_secs(30));
        assert_eq!(op.http_version, HttpVersion::Http1);
        assert_eq!(op.memory_limit, 64 * 1024 * 1024);
        assert_eq!(op.call_time_limit, Duration::from_millis(200));
        assert_eq!(op.config_json, "{}");
        assert_eq!(
            m.sink,
            SinkConfig::Stdout {
                format: OutputFormat::Payload,
                watermarks: false
            }
        );
        assert_eq!(
            m.dead_letter.path,
            PathBuf::from("/pipelines/demo/dead-letters.jsonl")
        );
        assert!(m.mock_provider.is_none());
        assert!(m.checkpoint.is_none());
        assert!(m.event_time.is_none());
    }

    #[test]
    fn checkpoint_section_resolves() {
        let text = format!(
            "{}[checkpoint]\ndir = \"state\"\ninterval = \"1s\"\nretained = 5\n",
            with_operator("")
        );
        let m = parse(&text).unwrap();
        assert_eq!(
            m.checkpoint,
            Some(CheckpointConfig {
                dir: PathBuf::from("/pipelines/demo/state"),
                interval: Duration::from_secs(1),
                retained: 5,
            })
        );
    }

    #[test]
    fn checkpoint_defaults() {
        let text = format!("{}[checkpoint]\ndir = \"/var/waio\"\n", with_operator(""));
        let m = parse(&text).unwrap();
        assert_eq!(
            m.checkpoint,
            Some(CheckpointConfig {
                dir: PathBuf::from("/var/waio"),
                interval: Duration::from_secs(10),
                retained: 3,
            })
        );
        // Integer milliseconds, like every other duration.
        let text = format!(
            "{}[checkpoint]\ndir = \"s\"\ninterval = 1500\n",
            with_operator("")
        );
        let m = parse(&text).unwrap();
        assert_eq!(
            m.checkpoint.map(|c| c.interval),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn checkpoint_needs_a_dir() {
        let text = format!("{}[checkpoint]\ninterval = \"1s\"\n", with_operator(""));
        let e = parse_err(&text);
        let (line, _) = pos(&text, "[checkpoint]", "[");
        assert_eq!(invalid(&e), (line, 1, "checkpoint.dir"));
        let text = format!("{}[checkpoint]\ndir = \"\"\n", with_operator(""));
        let e = parse_err(&text);
        assert_eq!(
            invalid(&e),
            (pos(&text, "dir =", "\"\"").0, 7, "checkpoint.dir")
        );
    }

    #[test]
    fn zero_checkpoint_interval_or_retained_is_rejected() {
        for value in ["\"0s\"", "0"] {
            let text = format!(
                "{}[checkpoint]\ndir = \"s\"\ninterval = {value}\n",
                with_operator("")
            );
            let e = parse_err(&text);
            let (line, column) = pos(&text, "interval =", value);
            assert_eq!(
                invalid(&e),
                (line, column, "checkpoint.interval"),
                "{value}"
            );
            assert!(e.to_string().contains("greater than 0"), "{e}");
        }
        let text = format!(
            "{}[checkpoint]\ndir = \"s\"\ninterval = -5\n",
            with_operator("")
        );
        assert_eq!(invalid(&parse_err(&text)).2, "checkpoint.interval");
        for value in ["0", "-1"] {
            let text = format!(
                "{}[checkpoint]\ndir = \"s\"\nretained = {value}\n",
                with_operator("")
            );
            let e = parse_err(&text);
            let (line, column) = pos(&text, "retained =", value);
            assert_eq!(
                invalid(&e),
                (line, column, "checkpoint.retained"),
                "{value}"
            );
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
    }

    #[test]
    fn unknown_key_in_checkpoint_or_event_time() {
        let text = format!(
            "{}[checkpoint]\ndir = \"s\"\ninterval_ms = 5\n",
            with_operator("")
        );
        let (line, column, message) = syntax(&parse_err(&text));
        assert_eq!((line, column), pos(&text, "interval_ms", "interval_ms"));
        assert!(
            message.starts_with("checkpoint.interval_ms: unknown field `interval_ms`"),
            "{message}"
        );
        let text = format!(
            "{}[event_time]\nfield = \"ts\"\nlateness = \"1s\"\n",
            with_operator("")
        );
        let (line, column, message) = syntax(&parse_err(&text));
        assert_eq!((line, column), pos(&text, "lateness", "lateness"));
        assert!(
            message.starts_with("event_time.lateness: unknown field `lateness`"),
            "{message}"
        );
    }

    #[test]
    fn event_time_section_resolves_with_aliases() {
        let text = format!(
            "{}[event_time]\nfield = \"created_at\"\nformat = \"rfc3339\"\nmax_out_of_orderness = \"5s\"\nwatermark_interval = \"1s\"\n",
            with_operator("")
        );
        let m = parse(&text).unwrap();
        assert_eq!(
            m.event_time,
            Some(EventTimeConfig {
                field: "created_at".into(),
                format: TimestampFormat::Rfc3339,
                max_out_of_orderness: Duration::from_secs(5),
                watermark_interval: Duration::from_secs(1),
            })
        );
        let text = format!(
            "{}[event_time]\nfield = \"t\"\nformat = \"iso8601\"\nout_of_orderness = 250\nauto_watermark_interval = \"0s\"\n",
            with_operator("")
        );
        let et = parse(&text).unwrap().event_time.unwrap();
        assert_eq!(et.format, TimestampFormat::Rfc3339);
        assert_eq!(et.max_out_of_orderness, Duration::from_millis(250));
        assert_eq!(et.watermark_interval, Duration::ZERO);
        let text = format!(
            "{}[event_time]\nfield = \"t\"\nformat = \"epoch_seconds\"\n",
            with_operator("")
        );
        let et = parse(&text).unwrap().event_time.unwrap();
        assert_eq!(et.format, TimestampFormat::EpochSeconds);
        // A key and its alias together are ambiguous (every pair: `a_key_and_its_alias_...`).
        let text = format!(
            "{}[event_time]\nfield = \"t\"\nmax_out_of_orderness = \"1s\"\nout_of_orderness = \"2s\"\n",
            with_operator("")
        );
        assert_eq!(
            invalid(&parse_err(&text)).2,
            "event_time.max_out_of_orderness"
        );
    }

    /// serde alone says "duplicate field `capacity`" at the table header; the error names both
    /// keys where they stand, for every pair of names of every aliased field, in either order.
    #[test]
    fn a_key_and_its_alias_together_are_an_error_naming_both() {
        let value = |field: &str| match field {
            "capacity" => "3",
            "ordered" => "true",
            "output_mode" => "\"ordered\"",
            _ => "\"1s\"",
        };
        let mut checked = 0;
        for (table, names) in ALIASES {
            for first in names.iter() {
                for second in names.iter().filter(|n| *n != first) {
                    let v = value(names[0]);
                    // Another key between the two, and the second indented: lines and columns
                    // must be each key's own.
                    let (text, field) = match *table {
                        "operator" => (
                            format!(
                                "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"a.wasm\"\n[[operator]]\nplugin = \"p.wasm\"\n{first} = {v}\nname = \"x\"\n  {second} = {v}\n[sink]\nkind = \"stdout\"\n"
                            ),
                            format!("operator[1].{}", names[0]),
                        ),
                        "event_time" => (
                            format!(
                                "{}[event_time]\nfield = \"t\"\n{first} = {v}\nformat = \"epoch_millis\"\n  {second} = {v}\n",
                                with_operator("")
                            ),
                            format!("event_time.{}", names[0]),
                        ),
                        other => panic!("no test text for table {other}"),
                    };
                    let error = parse_err(&text);
                    let (line, column) = pos(&text, &format!("  {second} ="), second);
                    assert_eq!(invalid(&error), (line, column, field.as_str()), "{error}");
                    let (first_line, first_column) = pos(&text, &format!("{first} ="), first);
                    let message = error.to_string();
                    assert!(
                        message.contains(&format!(
                            "`{first}` (line {first_line}, column {first_column}) and `{second}` (line {line}, column {column})"
                        )),
                        "{message}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 24, "every ordered pair of names");
    }

    #[test]
    fn event_time_defaults() {
        let text = format!("{}[event_time]\nfield = \"ts\"\n", with_operator(""));
        let m = parse(&text).unwrap();
        assert_eq!(
            m.event_time,
            Some(EventTimeConfig {
                field: "ts".into(),
                format: TimestampFormat::EpochMillis,
                max_out_of_orderness: Duration::ZERO,
                watermark_interval: Duration::from_millis(200),
            })
        );
        assert_eq!(
            m.source,
            SourceConfig::Stdin {
                fields: FieldMapping::default()
            }
        );
    }

    #[test]
    fn event_time_needs_a_field() {
        let text = format!(
            "{}[event_time]\nformat = \"epoch_millis\"\n",
            with_operator("")
        );
        let e = parse_err(&text);
        assert_eq!(
            invalid(&e),
            (pos(&text, "[event_time]", "[").0, 1, "event_time.field")
        );
        let text = format!("{}[event_time]\nfield = \"\"\n", with_operator(""));
        let e = parse_err(&text);
        assert_eq!(
            invalid(&e),
            (pos(&text, "field =", "\"\"").0, 9, "event_time.field")
        );
    }

    #[test]
    fn bad_event_time_values() {
        let text = format!(
            "{}[event_time]\nfield = \"ts\"\nformat = \"unix\"\n",
            with_operator("")
        );
        let e = parse_err(&text);
        let (line, column) = pos(&text, "format =", "\"unix\"");
        assert_eq!(invalid(&e), (line, column, "event_time.format"));
        let message = e.to_string();
        assert!(
            message.contains("\"unix\"")
                && message.contains("\"epoch_millis\"")
                && message.contains("\"rfc3339\""),
            "{message}"
        );
        let text = format!(
            "{}[event_time]\nfield = \"ts\"\nmax_out_of_orderness = \"a while\"\n",
            with_operator("")
        );
        let e = parse_err(&text);
        let (line, column) = pos(&text, "max_out_of_orderness", "\"a while\"");
        assert_eq!(
            invalid(&e),
            (line, column, "event_time.max_out_of_orderness")
        );
        let text = format!(
            "{}[event_time]\nfield = \"ts\"\nauto_watermark_interval = -1\n",
            with_operator("")
        );
        let e = parse_err(&text);
        let (line, column) = pos(&text, "auto_watermark_interval", "-1");
        assert_eq!(invalid(&e), (line, column, "event_time.watermark_interval"));
    }

    #[test]
    fn event_time_conflicts_with_timestamp_field() {
        let text = "[source]\nkind = \"file\"\npath = \"in.jsonl\"\ntimestamp_field = \"ts\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n[event_time]\nfield = \"ts\"\n";
        let e = parse_err(text);
        assert_eq!(invalid(&e), (4, 19, "source.timestamp_field"));
        let message = e.to_string();
        assert!(
            message.contains("event_time.field") && message.contains("line 9"),
            "{message}"
        );
        // key_field is unrelated and stays allowed.
        let text = "[source]\nkind = \"stdin\"\nkey_field = \"id\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n[event_time]\nfield = \"ts\"\n";
        let m = parse(text).unwrap();
        assert_eq!(m.event_time.map(|e| e.field), Some("ts".to_owned()));
    }

    #[test]
    fn event_time_conflicts_with_generator_source() {
        let text = "[source]\nkind = \"generator\"\ncount = 3\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\n\n[event_time]\nfield = \"ts\"\n";
        let e = parse_err(text);
        assert_eq!(invalid(&e), (9, 1, "event_time"));
        assert!(e.to_string().contains("generator"), "{e}");
    }

    #[test]
    fn other_source_and_sink_kinds() {
        let m = parse(
            "[source]\nkind = \"generator\"\ncount = 5\npayload_bytes = 128\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\n",
        )
        .unwrap();
        assert_eq!(
            m.source,
            SourceConfig::Generator {
                count: 5,
                payload_bytes: 128
            }
        );
        assert_eq!(m.sink, SinkConfig::Discard);

        let m = parse(
            "[source]\nkind = \"generator\"\ncount = 1\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\nformat = \"envelope\"\n",
        )
        .unwrap();
        assert_eq!(
            m.source,
            SourceConfig::Generator {
                count: 1,
                payload_bytes: 64
            }
        );
        assert_eq!(
            m.sink,
            SinkConfig::Stdout {
                format: OutputFormat::Envelope,
                watermarks: false
            }
        );
    }

    #[test]
    fn zero_or_negative_timeout_means_none() {
        for t in ["\"0s\"", "0", "-1"] {
            let m = parse(&with_operator(&format!("timeout = {t}"))).unwrap();
            assert_eq!(m.operators[0].timeout, None, "timeout = {t}");
        }
        let m = parse(&with_operator("request-timeout = \"1500\"")).unwrap();
        assert_eq!(m.operators[0].timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn unknown_key_names_field_and_place() {
        let text = with_operator("capacty = 5");
        let e = parse_err(&text);
        let (line, column, message) = syntax(&e);
        assert_eq!((line, column), (6, 1));
        assert!(
            message.starts_with("operator[0].capacty: unknown field `capacty`"),
            "{message}"
        );

        let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n\n[sinkk]\n";
        let (line, column, message) = syntax(&parse_err(text));
        assert_eq!((line, column), (8, 2));
        assert!(message.starts_with("sinkk: unknown field"), "{message}");
    }

    #[test]
    fn wrong_type_names_field_and_place() {
        let text = format!(
            "{}\n[[operator]]\nplugin = \"q.wasm\"\ncapacity = \"ten\"\n",
            with_operator("")
        );
        let (line, column, message) = syntax(&parse_err(&text));
        assert_eq!((line, column), pos(&text, "capacity = \"ten\"", "\"ten\""));
        assert!(
            message.starts_with("operator[1].capacity: invalid type: string"),
            "{message}"
        );

        let text = with_operator("ordered = \"yes\"");
        let (line, column, message) = syntax(&parse_err(&text));
        assert_eq!((line, column), (6, 11));
        assert!(
            message.starts_with("operator[0].ordered: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn toml_syntax_error_is_located() {
        let text = "[source]\nkind = \"stdin\n";
        let (line, column, _) = syntax(&parse_err(text));
        assert_eq!(line, 2);
        assert!(column > 1);
    }

    #[test]
    fn requests_in_flight_default_to_four_times_capacity_and_must_be_positive() {
        let op = &parse(&with_operator("capacity = 7")).unwrap().operators[0];
        assert_eq!(op.max_requests_in_flight, 28);
        assert_eq!(op.timeout_grace, Duration::from_secs(5));
        let op = &parse(&with_operator(
            "max_requests_in_flight = 3\ntimeout_grace = \"250ms\"",
        ))
        .unwrap()
        .operators[0];
        assert_eq!(op.max_requests_in_flight, 3);
        assert_eq!(op.timeout_grace, Duration::from_millis(250));
        let e = parse_err(&with_operator("max_requests_in_flight = 0"));
        assert_eq!(invalid(&e), (6, 26, "operator[0].max_requests_in_flight"));
        assert!(e.to_string().contains("at least 1, got 0"), "{e}");
    }

    #[test]
    fn capacity_below_one_is_rejected_like_flink() {
        for value in ["0", "-1"] {
            let text = with_operator(&format!("capacity = {value}"));
            let e = parse_err(&text);
            assert_eq!(
                invalid(&e),
                (6, 12, "operator[0].capacity"),
                "capacity = {value}"
            );
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
        // The alias points at the same field.
        let e = parse_err(&with_operator("max-concurrent-requests = 0"));
        assert_eq!(invalid(&e), (6, 27, "operator[0].capacity"));
    }

    #[test]
    fn bad_durations_are_rejected() {
        let text = with_operator("timeout = \"soon\"");
        let e = parse_err(&text);
        assert_eq!(invalid(&e), (6, 11, "operator[0].timeout"));
        assert!(e.to_string().contains("\"soon\""), "{e}");

        let e = parse_err(&with_operator("http_timeout = \"0s\""));
        assert_eq!(invalid(&e), (6, 16, "operator[0].http_timeout"));
        let e = parse_err(&with_operator("http_version = \"3\""));
        assert_eq!(invalid(&e), (6, 16, "operator[0].http_version"));
        assert!(
            e.to_string().contains(r#"expected one of "1.1", "2""#),
            "{e}"
        );
        let e = parse_err(&with_operator("call_time_limit = -5"));
        assert_eq!(invalid(&e), (6, 19, "operator[0].call_time_limit"));
    }

    #[test]
    fn conflicting_ordered_and_output_mode() {
        let text = with_operator("ordered = true\noutput_mode = \"unordered\"");
        let e = parse_err(&text);
        assert_eq!(invalid(&e), (7, 15, "operator[0].output_mode"));
        // Agreeing settings are fine.
        let m = parse(&with_operator(
            "ordered-output = false\noutput_mode = \"unordered\"",
        ))
        .unwrap();
        assert!(!m.operators[0].ordered);
        let e = parse_err(&with_operator("output_mode = \"sorted\""));
        assert_eq!(invalid(&e), (6, 15, "operator[0].output_mode"));
    }

    #[test]
    fn unknown_policy() {
        let e = parse_err(&with_operator("on_timeout = \"retry\""));
        assert_eq!(invalid(&e), (6, 14, "operator[0].on_timeout"));
        assert!(e.to_string().contains("\"dead-letter\""), "{e}");
    }

    #[test]
    fn unknown_secret_name() {
        let text = format!(
            "{}\n[secrets.known]\nvalue = \"sk-known-1\"\nhosts = [\"a.example\"]\n",
            with_operator("secrets = [\"known\", \"nope\"]")
        );
        let e = parse_err(&text);
        assert_eq!(invalid(&e), (6, 21, "operator[0].secrets[1]"));
        let message = e.to_string();
        assert!(
            message.contains("\"nope\"") && message.contains("known"),
            "{message}"
        );
    }

    #[test]
    fn unset_env_var_for_secret() {
        let text = format!(
            "{}\n[secrets.openai]\nenv = \"WAIO_TEST_SURELY_UNSET_VARIABLE_4711\"\n",
            with_operator("")
        );
        // Through the public API, i.e. the real environment.
        let e = Manifest::parse(&text, Path::new(FILE)).unwrap_err();
        let (line, column) = pos(&text, "env =", "\"WAIO");
        assert_eq!(column, 7);
        assert_eq!(invalid(&e), (line, column, "secrets.openai.env"));
        let message = e.to_string();
        assert!(
            message.contains("\"openai\"")
                && message.contains("WAIO_TEST_SURELY_UNSET_VARIABLE_4711"),
            "{message}"
        );
    }

    #[test]
    fn secret_needs_exactly_one_of_env_and_value() {
        let both = format!(
            "{}\n[secrets.s]\nenv = \"A\"\nvalue = \"b\"\n",
            with_operator("")
        );
        let e = parse_err(&both);
        assert_eq!(invalid(&e).2, "secrets.s");
        let neither = format!("{}\n[secrets.s]\n", with_operator(""));
        let e = parse_err(&neither);
        assert_eq!(invalid(&e).2, "secrets.s");
    }

    #[test]
    fn a_secret_shorter_than_8_bytes_is_refused_where_it_is_written() {
        let text = format!(
            "{}\n[secrets.s]\nvalue = \"sk-1234\"\nhosts = [\"a.example\"]\n",
            with_operator("secrets = [\"s\"]")
        );
        let e = parse_err(&text);
        let (line, column) = pos(&text, "value =", "\"sk-1234\"");
        assert_eq!(invalid(&e), (line, column, "secrets.s.value"));
        let message = e.to_string();
        assert!(
            message.contains("7 bytes")
                && message.contains("at least 8 bytes")
                && !message.contains("sk-1234"),
            "{message}"
        );
        // Eight bytes are enough.
        assert!(parse(&text.replace("sk-1234", "sk-12345")).is_ok());

        // The same for a value from the environment, located at `env`.
        let text = format!(
            "{}\n[secrets.s]\nenv = \"SHORT_KEY\"\nhosts = [\"a.example\"]\n",
            with_operator("")
        );
        let env = |_: &str| Ok("abc".to_owned());
        let e = parse_with_env(&text, Path::new(FILE), &env).unwrap_err();
        let (line, column) = pos(&text, "env =", "\"SHORT_KEY\"");
        assert_eq!(invalid(&e), (line, column, "secrets.s.env"));
        let message = e.to_string();
        assert!(
            message.contains("SHORT_KEY") && message.contains("3 bytes"),
            "{message}"
        );
    }

    #[test]
    fn a_secret_must_name_the_hosts_it_may_be_sent_to() {
        let text = format!(
            "{}\n[secrets.s]\nvalue = \"sk-12345678\"\n",
            with_operator("secrets = [\"s\"]")
        );
        let e = parse_err(&text);
        let (line, _) = pos(&text, "[secrets.s]", "[");
        let (at_line, _, field) = invalid(&e);
        assert_eq!((at_line, field), (line, "secrets.s.hosts"));
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("{FILE}:{line}:"))
                && message.contains("hosts = [\"api.openai.com\"]"),
            "{message}"
        );

        let empty = text.replace(
            "value = \"sk-12345678\"\n",
            "value = \"sk-12345678\"\nhosts = []\n",
        );
        let e = parse_err(&empty);
        let (line, column) = pos(&empty, "hosts = []", "[]");
        assert_eq!(invalid(&e), (line, column, "secrets.s.hosts"));

        // Entries follow allowed_hosts' rules and are located one by one.
        let url = text.replace(
            "value = \"sk-12345678\"\n",
            "value = \"sk-12345678\"\nhosts = [\"a.example\", \"https://b.example/v1\"]\n",
        );
        let e = parse_err(&url);
        let (line, column) = pos(&url, "hosts =", "\"https");
        assert_eq!(invalid(&e), (line, column, "secrets.s.hosts[1]"));
    }

    #[test]
    fn duplicate_operator_names() {
        let text = "[source]\nkind = \"stdin\"\n[[operator]]\nname = \"a\"\nplugin = \"p.wasm\"\n[[operator]]\nplugin = \"q.wasm\"\nname = \"a\"\n[sink]\nkind = \"stdout\"\n";
        let e = parse_err(text);
        assert_eq!(invalid(&e), (8, 8, "operator[1].name"));
        // An explicit name may also clash with a default one.
        let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[[operator]]\nplugin = \"q.wasm\"\nname = \"operator-0\"\n[sink]\nkind = \"stdout\"\n";
        assert_eq!(invalid(&parse_err(text)), (7, 8, "operator[1].name"));
    }

    #[test]
    fn missing_sections_are_named() {
        let e = parse_err("[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n");
        match &e {
            ManifestError::Missing { path, message } => {
                assert_eq!(path, Path::new(FILE));
                assert!(message.starts_with("missing [sink]"), "{message}");
            }
            other => panic!("expected Missing, got {other:?}"),
        }
        let e = parse_err("name = \"x\"\n");
        let message = e.to_string();
        assert!(
            message.contains("missing [source], [[operator]], [sink]"),
            "{message}"
        );
    }

    #[test]
    fn file_source_without_path() {
        let text = "[[operator]]\nplugin = \"p.wasm\"\n\n[source]\nkind = \"file\"\n[sink]\nkind = \"stdout\"\n";
        let e = parse_err(text);
        assert_eq!(invalid(&e), (4, 1, "source.path"));
    }

    #[test]
    fn settings_of_another_kind_are_rejected() {
        let text = "[source]\nkind = \"stdin\"\ncount = 3\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n";
        assert_eq!(invalid(&parse_err(text)), (3, 9, "source.count"));
        let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\npath = \"x\"\n";
        assert_eq!(invalid(&parse_err(text)), (7, 8, "sink.path"));
        let text = "[source]\nkind = \"generator\"\ncount = 0\n[[operator]]\nplugin = \"p.wasm\"\n[sink]\nkind = \"discard\"\n";
        assert_eq!(invalid(&parse_err(text)), (3, 9, "source.count"));
    }

    #[test]
    fn bad_host_rule() {
        let text = with_operator("allowed_hosts = [\"ok.example\", \"https://api.openai.com/v1\"]");
        let e = parse_err(&text);
        assert_eq!(invalid(&e), (6, 32, "operator[0].allowed_hosts[1]"));
        for bad in [
            "",
            "host:0",
            "host:99999",
            "host:x",
            "a b",
            "*.example.com",
            "[::1",
            "1::2::3",
        ] {
            assert!(parse_host_rule(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn host_rules_match_case_insensitively_and_by_port() {
        let any_port = parse_host_rule("API.Example.com").unwrap();
        assert_eq!(any_port.host, "api.example.com");
        assert!(any_port.allows("api.example.COM", 443));
        assert!(any_port.allows("api.example.com.", 8080));
        assert!(!any_port.allows("evil-api.example.com", 443));
        assert!(!any_port.allows("api.example.com.evil", 443));

        let one_port = parse_host_rule("127.0.0.1:18080").unwrap();
        assert!(one_port.allows("127.0.0.1", 18080));
        assert!(!one_port.allows("127.0.0.1", 18081));

        let v6 = parse_host_rule("[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(8080)));
        assert!(v6.allows("[::1]", 8080));
        assert_eq!(v6.to_string(), "[::1]:8080");
    }

    #[test]
    fn bad_size() {
        let e = parse_err(&with_operator("memory_limit = \"64 potatoes\""));
        assert_eq!(invalid(&e), (6, 16, "operator[0].memory_limit"));
        let e = parse_err(&with_operator("memory_limit = \"512KiB\""));
        assert_eq!(
            invalid(&e),
            (6, 16, "operator[0].memory_limit"),
            "below 1MiB"
        );
        let e = parse_err(&with_operator("memory_limit = -1"));
        assert_eq!(invalid(&e), (6, 16, "operator[0].memory_limit"));
    }

    #[test]
    fn size_and_duration_parsers() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("64 mb"), Ok(64_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());

        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("750"), Ok(Duration::from_millis(750)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_manifest_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("pipe.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            "[source]\nkind = \"file\"\npath = \"data/in.jsonl\"\n[[operator]]\nplugin = \"../p.wasm\"\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[dead_letter]\npath = \"dl/x.jsonl\"\n",
        )
        .unwrap();
        let m = Manifest::load(&file).unwrap();
        let base = dir.path().join("sub");
        assert_eq!(m.name, "pipe");
        assert_eq!(
            m.source,
            SourceConfig::File {
                path: base.join("data/in.jsonl"),
                path_at: Location {
                    file: file.clone(),
                    line: 3,
                    column: 8
                },
                fields: FieldMapping::default()
            }
        );
        assert_eq!(m.operators[0].plugin, base.join("../p.wasm"));
        assert_eq!(
            m.sink,
            SinkConfig::File {
                path: base.join("out.jsonl"),
                format: OutputFormat::Payload,
                watermarks: false
            }
        );
        assert_eq!(m.dead_letter.path, base.join("dl/x.jsonl"));
        assert_eq!(m.operators[0].plugin_at.file, file);
    }

    #[test]
    fn loading_a_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nope.toml");
        match Manifest::load(&file) {
            Err(e @ ManifestError::Read { .. }) => {
                assert!(e.to_string().contains(&file.display().to_string()), "{e}");
            }
            other => panic!("expected Read, got {other:?}"),
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret {
            name: "openai".into(),
            value: "sk-very-secret".into(),
            hosts: vec![],
        };
        let shown = format!("{s:?}");
        assert!(
            shown.contains("openai") && !shown.contains("sk-very-secret"),
            "{shown}"
        );
        let text = format!(
            "{}\n[secrets.k]\nvalue = \"sk-very-secret\"\nhosts = [\"a.example\"]\n",
            with_operator("secrets = [\"k\"]")
        );
        let m = parse(&text).unwrap();
        assert!(!format!("{m:?}").contains("sk-very-secret"));
    }

    #[test]
    fn mock_provider_checks() {
        let base = with_operator("");
        let e = parse_err(&format!(
            "{base}[mock_provider]\nlisten = \"localhost:80\"\n"
        ));
        assert_eq!(invalid(&e).2, "mock_provider.listen");
        let e = parse_err(&format!(
            "{base}[mock_provider]\nlisten = \"127.0.0.1:1\"\nerror_rate = 1.5\n"
        ));
        assert_eq!(invalid(&e).2, "mock_provider.error_rate");
        let e = parse_err(&format!("{base}[mock_provider]\nseed = 1\n"));
        assert_eq!(invalid(&e).2, "mock_provider.listen");
        let e = parse_err(&format!(
            "{base}[mock_provider]\nlisten = \"127.0.0.1:1\"\nerror_rate = 0.6\ndrop_rate = 0.6\n"
        ));
        assert_eq!(invalid(&e).2, "mock_provider");
        let m = parse(&format!(
            "{base}[mock_provider]\nlisten = \"127.0.0.1:1\"\n"
        ))
        .unwrap();
        let mock = m.mock_provider.unwrap();
        assert_eq!(
            (mock.seed, mock.latency, mock.error_rate),
            (42, Duration::ZERO, 0.0)
        );
    }

    #[test]
    fn error_display_reads_file_line_column() {
        let e = parse_err(&with_operator("instances = 65"));
        assert_eq!(
            e.to_string(),
            format!("{FILE}:6:13: operator[0].instances: must be between 1 and 64, got 65")
        );
    }

    #[test]
    fn field_path_survives_datetimes_and_dotted_headers() {
        let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\n[operator.config]\nwhen = 1979-05-27T07:32:00Z\n[sink]\nkind = \"stdout\"\n[secrets.a]\nenv = 5\n";
        let (line, column, message) = syntax(&parse_err(text));
        assert_eq!((line, column), (10, 7));
        assert!(
            message.starts_with("secrets.a.env: invalid type"),
            "{message}"
        );
    }
}
