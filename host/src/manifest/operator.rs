//! `[[operator]]`: one async operator of the chain, its Flink settings, its plugin's limits and
//! what it may reach on the network.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::async_retry::{self, AsyncRetryConfig, RawAsyncRetry};
use super::batch::{self, BatchConfig, RawBatch};
use super::cache::{self, RawCache, RequestCacheConfig, ResultCacheConfig};
use super::context::Ctx;
use super::error::{Location, ManifestError};
use super::rate_limit::{self, NamedLimit, RateLimitConfig, RawRateLimit};
use super::resilience::{
    self, CircuitBreakerConfig, RawCircuitBreaker, RawResilience, RawRetry, RetryConfig,
};
use super::secrets::Secret;
use super::values::{host_rules, Count, DurationValue, HostRule, SizeValue};

const DEFAULT_CAPACITY: usize = 100;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CALL_TIME_LIMIT: Duration = Duration::from_millis(200);
/// How long a `timeout` handler that sent a request (a fallback call) may take to complete.
const DEFAULT_TIMEOUT_GRACE: Duration = Duration::from_secs(5);
const MIB: u64 = 1024 * 1024;
const DEFAULT_MEMORY_LIMIT: u64 = 64 * MIB;
const MIN_MEMORY_LIMIT: u64 = MIB;
/// A wasm32 linear memory cannot grow beyond 4 GiB, so a larger limit would only mislead.
const MAX_MEMORY_LIMIT: u64 = 4 * 1024 * MIB;
const MAX_INSTANCES: i64 = 64;

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
    /// Request retries (`max_retries`, `[operator.retry]`); none by default.
    pub retry: RetryConfig,
    /// `[operator.circuit_breaker]`; `None` (no breaker) unless the table is there.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// `rate_limit.*`: its own limit or a shared one (`rate_limit.use`); `None`: no keys.
    pub rate_limit: Option<RateLimitConfig>,
    /// How long a `timeout` handler that sent a request may take to complete the record.
    pub timeout_grace: Duration,
    /// `[operator.async_retry]`: when a record is invoked again (FLINK-SEMANTICS 19-26).
    pub async_retry: AsyncRetryConfig,
    /// `batch.*`: records per plugin call, and how long one may wait to fill a batch.
    pub batch: BatchConfig,
    /// `cache.*`: the result cache in front of the plugin; `None`: off.
    pub cache: Option<ResultCacheConfig>,
    /// `request_cache.*`: identical requests answered once; `None`: off.
    pub request_cache: Option<RequestCacheConfig>,
    /// The `[operator.config]` table as a JSON object (`{}` when absent).
    pub config_json: String,
    /// A plugin project directory (with `waio-plugin.toml`) that `waio run --build` builds first.
    pub build: Option<PathBuf>,
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

/// The aliases (Flink's names) are listed in `syntax::ALIASES` too, so that setting both names
/// is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperator {
    pub(super) name: Option<Spanned<String>>,
    plugin: Option<Spanned<String>>,
    #[serde(alias = "max_concurrent_requests", alias = "max-concurrent-requests")]
    capacity: Option<Spanned<Count>>,
    #[serde(alias = "request_timeout", alias = "request-timeout")]
    timeout: Option<Spanned<DurationValue>>,
    #[serde(alias = "ordered_output", alias = "ordered-output")]
    ordered: Option<Spanned<bool>>,
    #[serde(alias = "output-mode")]
    output_mode: Option<Spanned<String>>,
    on_failure: Option<Spanned<String>>,
    on_timeout: Option<Spanned<String>>,
    instances: Option<Spanned<Count>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    secrets: Option<Vec<Spanned<String>>>,
    http_timeout: Option<Spanned<DurationValue>>,
    http_version: Option<Spanned<String>>,
    memory_limit: Option<Spanned<SizeValue>>,
    call_time_limit: Option<Spanned<DurationValue>>,
    max_requests_in_flight: Option<Spanned<Count>>,
    max_retries: Option<Spanned<Count>>,
    retry: Option<RawRetry>,
    circuit_breaker: Option<RawCircuitBreaker>,
    rate_limit: Option<RawRateLimit>,
    timeout_grace: Option<Spanned<DurationValue>>,
    async_retry: Option<RawAsyncRetry>,
    batch: Option<RawBatch>,
    cache: Option<RawCache>,
    request_cache: Option<RawCache>,
    build: Option<Spanned<String>>,
    config: Option<Spanned<toml::Table>>,
}

impl RawOperator {
    /// The keys of resilience.rs; `span` is the operator's.
    fn resilience(&self, span: &Range<usize>) -> RawResilience<'_> {
        RawResilience {
            operator: span.clone(),
            max_retries: &self.max_retries,
            retry: &self.retry,
            circuit_breaker: &self.circuit_breaker,
        }
    }
}

/// Resolves `operator[index]`; `secrets` are the pipeline's, which it may name.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    index: usize,
    op: Spanned<RawOperator>,
    secrets: &HashMap<String, Secret>,
    named_limits: &BTreeMap<String, NamedLimit>,
) -> Result<OperatorConfig, ManifestError> {
    let span = op.span();
    let raw = op.into_inner();
    let field = |key: &str| format!("operator[{index}].{key}");

    let name = match &raw.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            return Err(ctx.invalid(n.span(), field("name"), "must not be empty"));
        }
        Some(n) => n.get_ref().clone(),
        None => format!("operator-{index}"),
    };
    let Some(plugin) = &raw.plugin else {
        return Err(ctx.invalid(
            span,
            field("plugin"),
            "missing; every operator needs `plugin = \"path/to/component.wasm\"`",
        ));
    };
    let plugin_at = ctx.location(plugin.span().start);
    let plugin = ctx.path_value(plugin, &field("plugin"))?;
    let build = match &raw.build {
        Some(dir) => Some(ctx.path_value(dir, &field("build"))?),
        None => None,
    };
    let capacity = ctx.setting(&raw.capacity, &field("capacity"), DEFAULT_CAPACITY, |c| {
        c.at_least_one(" (Flink rejects a capacity <= 0)")
    })?;
    let timeout = ctx.setting(
        &raw.timeout,
        &field("timeout"),
        Some(DEFAULT_TIMEOUT),
        DurationValue::optional,
    )?;
    let ordered = ordered(ctx, &field("output_mode"), &raw.ordered, &raw.output_mode)?;
    let on_failure = policy(ctx, &raw.on_failure, &field("on_failure"))?;
    let on_timeout = policy(ctx, &raw.on_timeout, &field("on_timeout"))?;
    let instances = ctx.setting(&raw.instances, &field("instances"), 1, |i| {
        i.between(1, MAX_INSTANCES)
    })?;
    let Network {
        allowed_hosts,
        secrets: op_secrets,
        http_timeout,
        http_version,
    } = network(ctx, &field, &raw, secrets)?;
    let call_time_limit = ctx.setting(
        &raw.call_time_limit,
        &field("call_time_limit"),
        DEFAULT_CALL_TIME_LIMIT,
        DurationValue::positive,
    )?;
    let max_requests_in_flight = ctx.setting(
        &raw.max_requests_in_flight,
        &field("max_requests_in_flight"),
        // A record may fan out into a few requests; beyond that they queue in the host.
        capacity.saturating_mul(4),
        |n| n.at_least_one(""),
    )?;
    let (retry, circuit_breaker) = resilience::resolve(ctx, &field, raw.resilience(&span))?;
    let rate_limit =
        rate_limit::resolve_operator(ctx, &field, &raw.rate_limit, span.clone(), named_limits)?;
    let timeout_grace = ctx.setting(
        &raw.timeout_grace,
        &field("timeout_grace"),
        DEFAULT_TIMEOUT_GRACE,
        DurationValue::duration,
    )?;
    let async_retry = async_retry::resolve(ctx, &field, raw.async_retry, (timeout, &raw.timeout))?;
    let batch = batch::resolve(ctx, &field, raw.batch, timeout)?;
    let memory_limit = ctx.setting(
        &raw.memory_limit,
        &field("memory_limit"),
        DEFAULT_MEMORY_LIMIT,
        memory_limit,
    )?;
    let result_cache = cache::result_cache(ctx, &field, &name, raw.cache)?;
    let request_cache = cache::request_cache(ctx, &field, &name, raw.request_cache)?;
    let config_json = config_json(ctx, &field("config"), &raw.config)?;

    warn_unusable_secrets(&name, &op_secrets, &allowed_hosts);

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
        retry,
        circuit_breaker,
        rate_limit,
        timeout_grace,
        async_retry,
        batch,
        cache: result_cache,
        request_cache,
        config_json,
        build,
    })
}

/// What an operator may reach on the network and how its requests go.
struct Network {
    allowed_hosts: Vec<HostRule>,
    secrets: Vec<Secret>,
    http_timeout: Duration,
    http_version: HttpVersion,
}

fn network(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    raw: &RawOperator,
    secrets: &HashMap<String, Secret>,
) -> Result<Network, ManifestError> {
    let allowed_hosts = host_rules(
        ctx,
        raw.allowed_hosts.as_deref().unwrap_or_default(),
        &field("allowed_hosts"),
    )?;
    let named = named_secrets(
        ctx,
        raw.secrets.as_deref().unwrap_or_default(),
        &field("secrets"),
        secrets,
    )?;
    let http_timeout = ctx.setting(
        &raw.http_timeout,
        &field("http_timeout"),
        DEFAULT_HTTP_TIMEOUT,
        DurationValue::positive,
    )?;
    let http_version = match &raw.http_version {
        None => HttpVersion::Http1,
        Some(v) => ctx.choose(
            v,
            &field("http_version"),
            &[HttpVersion::Http1, HttpVersion::Http2].map(|v| (v.name(), v)),
        )?,
    };
    Ok(Network {
        allowed_hosts,
        secrets: named,
        http_timeout,
        http_version,
    })
}

/// `ordered` (Flink's ordered-output) or `output_mode`; both may be given if they agree.
fn ordered(
    ctx: &Ctx<'_>,
    mode_field: &str,
    ordered: &Option<Spanned<bool>>,
    output_mode: &Option<Spanned<String>>,
) -> Result<bool, ManifestError> {
    let Some(mode) = output_mode else {
        return Ok(ordered.as_ref().is_none_or(|o| *o.get_ref()));
    };
    let mode_ordered = ctx.choose(mode, mode_field, &[("ordered", true), ("unordered", false)])?;
    if let Some(o) = ordered {
        if *o.get_ref() != mode_ordered {
            return Err(ctx.invalid(
                mode.span(),
                mode_field,
                format!(
                    "output_mode = {:?} contradicts ordered = {} (line {}); set only one",
                    mode.get_ref(),
                    o.get_ref(),
                    ctx.line_of(o.span().start)
                ),
            ));
        }
    }
    Ok(mode_ordered)
}

fn policy(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    field: &str,
) -> Result<Policy, ManifestError> {
    let policies: &[(&str, Policy)] = &[
        ("fail", Policy::Fail),
        ("dead-letter", Policy::DeadLetter),
        ("dead_letter", Policy::DeadLetter),
    ];
    match value {
        Some(p) => ctx.choose(p, field, policies),
        None => Ok(Policy::Fail),
    }
}

/// The pipeline's secrets an operator names, each once, in the order first named.
fn named_secrets(
    ctx: &Ctx<'_>,
    names: &[Spanned<String>],
    field: &str,
    secrets: &HashMap<String, Secret>,
) -> Result<Vec<Secret>, ManifestError> {
    let mut named: Vec<Secret> = Vec::new();
    for (i, name) in names.iter().enumerate() {
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
                format!("{field}[{i}]"),
                format!("unknown secret {secret_name:?}; {known}"),
            ));
        };
        if named.iter().all(|s| &s.name != secret_name) {
            named.push(secret.clone());
        }
    }
    Ok(named)
}

fn warn_unusable_secrets(name: &str, op_secrets: &[Secret], allowed_hosts: &[HostRule]) {
    if !op_secrets.is_empty() && allowed_hosts.is_empty() {
        tracing::warn!(
            operator = %name,
            "operator has secrets but no allowed_hosts, so it cannot send any request that uses them"
        );
    }
}

/// The `[operator.config]` table as JSON text (`{}` when absent).
fn config_json(
    ctx: &Ctx<'_>,
    field: &str,
    table: &Option<Spanned<toml::Table>>,
) -> Result<String, ManifestError> {
    Ok(match table {
        None => "{}".to_owned(),
        Some(c) => ctx.check(c, field, table_to_json)?.to_string(),
    })
}

fn memory_limit(size: &SizeValue) -> Result<u64, String> {
    let bytes = size.bytes()?;
    if !(MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(&bytes) {
        return Err(format!(
            "must be between 1MiB and 4GiB (wasm32 memory), got {bytes} bytes"
        ));
    }
    Ok(bytes)
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
