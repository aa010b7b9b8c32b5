//! An operator's rate limit (`rate_limit.*` in an `[[operator]]`) and the named limits that
//! several operators share (`[rate_limits.NAME]`, used with `rate_limit.use = "NAME"`). The
//! keys are the seed's (Flink ML_PREDICT style): `requests_per_second`, `tokens_per_minute`,
//! `algorithm`, `burst`; and this project's: `use`, `adaptive`, `backend`, `redis_url`,
//! `instances`, `fallback_share`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
pub use crate::outbound::rate_limit::{Algorithm, RateLimitOptions};

/// One operator's limit: its own, or a shared one (`name`).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// The shared limit's name (`[rate_limits.NAME]`); `None`: the operator's own.
    pub name: Option<String>,
    pub options: RateLimitOptions,
    pub backend: RateLimitBackend,
    /// Slow down on the provider's rate-limit headers and 429s (default true).
    pub adaptive: bool,
}

/// Where a limit is kept.
#[derive(Clone, Debug, PartialEq)]
pub enum RateLimitBackend {
    /// In this process.
    Local,
    /// In a Redis server shared by several processes; while it is unreachable each process
    /// keeps `fallback_share` of the limit on its own.
    Redis { url: String, fallback_share: f64 },
}

impl RateLimitConfig {
    /// Whether it limits anything (a config with only `adaptive` does not).
    pub fn limits(&self) -> bool {
        self.options.requests_per_second.is_some() || self.options.tokens_per_minute.is_some()
    }

    /// How long a full queue (`capacity` records) takes to get through the request limit:
    /// records that wait longer than their timeout time out waiting.
    pub fn queue_time(&self, capacity: usize) -> Option<Duration> {
        let rps = self.options.requests_per_second?;
        Some(Duration::from_secs_f64(capacity as f64 / rps))
    }
}

/// The manifest's name of an algorithm.
pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::TokenBucket => "token_bucket",
        Algorithm::SlidingWindow => "sliding_window",
    }
}

/// For `waio check`: e.g. `50 requests/s (burst 10), 100000 tokens/min, token_bucket, in
/// this process, adaptive`.
impl fmt::Display for RateLimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "shared limit {name:?}: ")?;
        }
        let o = &self.options;
        let mut parts: Vec<String> = Vec::new();
        if let Some(rps) = o.requests_per_second {
            match (o.algorithm, o.burst) {
                (Algorithm::TokenBucket, Some(burst)) => {
                    parts.push(format!("{rps} requests/s (burst {burst})"))
                }
                _ => parts.push(format!("{rps} requests/s")),
            }
        }
        if let Some(tpm) = o.tokens_per_minute {
            parts.push(format!("{tpm} tokens/min"));
        }
        if parts.is_empty() {
            parts.push("no limit of its own".into());
        } else {
            parts.push(algorithm_name(o.algorithm).into());
        }
        match &self.backend {
            RateLimitBackend::Local => parts.push("in this process".into()),
            RateLimitBackend::Redis {
                url,
                fallback_share,
            } => {
                let host = crate::redis_url::host_port(url);
                parts.push(format!(
                    "shared through redis at {host} (fallback share {fallback_share})"
                ));
            }
        }
        parts.push(
            if self.adaptive {
                "adaptive"
            } else {
                "not adaptive"
            }
            .into(),
        );
        f.write_str(&parts.join(", "))
    }
}

/// `rate_limit` in an operator, or a `[rate_limits.NAME]` table. Not `Spanned` itself: toml
/// 0.8 cannot read a `Spanned` table written with dotted keys (`rate_limit.burst = 10`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    requests_per_second: Option<Spanned<Number>>,
    tokens_per_minute: Option<Spanned<Number>>,
    algorithm: Option<Spanned<String>>,
    burst: Option<Spanned<Number>>,
    #[serde(rename = "use")]
    use_name: Option<Spanned<String>>,
    adaptive: Option<Spanned<bool>>,
    backend: Option<Spanned<String>>,
    redis_url: Option<Spanned<String>>,
    instances: Option<Spanned<Number>>,
    fallback_share: Option<Spanned<Number>>,
}

impl RawRateLimit {
    /// The keys that set the limit (all but `use` and `adaptive`), with their names.
    fn limit_keys(&self) -> [(&'static str, Option<Range<usize>>); 8] {
        [
            ("requests_per_second", span(&self.requests_per_second)),
            ("tokens_per_minute", span(&self.tokens_per_minute)),
            ("algorithm", span(&self.algorithm)),
            ("burst", span(&self.burst)),
            ("backend", span(&self.backend)),
            ("redis_url", span(&self.redis_url)),
            ("instances", span(&self.instances)),
            ("fallback_share", span(&self.fallback_share)),
        ]
    }

    /// Where the first key of the table that is set stands.
    fn first_key(&self) -> Option<Range<usize>> {
        let others = [span(&self.use_name), span(&self.adaptive)];
        let keys = self.limit_keys().into_iter().map(|(_, s)| s);
        keys.chain(others).flatten().min_by_key(|s| s.start)
    }
}

fn span<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
    value.as_ref().map(Spanned::span)
}

/// A shared limit as resolved, with where it is defined (for messages).
pub(super) struct NamedLimit {
    config: RateLimitConfig,
    line: usize,
}

/// The named limits, `[rate_limits.NAME]`.
pub(super) fn resolve_named(
    ctx: &Ctx<'_>,
    raw: BTreeMap<Spanned<String>, RawRateLimit>,
) -> Result<BTreeMap<String, NamedLimit>, ManifestError> {
    let mut named = BTreeMap::new();
    for (name, table) in raw {
        let field = |key: &str| {
            format!(
                "rate_limits.{}.{key}",
                super::syntax::key_segment(name.get_ref())
            )
        };
        let at = table.first_key().unwrap_or(name.span());
        if let Some(used) = &table.use_name {
            return Err(ctx.invalid(
                used.span(),
                field("use"),
                "a shared limit cannot use another; give its rates here",
            ));
        }
        let (options, backend) = limit(ctx, &field, &table, at.clone())?;
        if options.requests_per_second.is_none() && options.tokens_per_minute.is_none() {
            return Err(ctx.invalid(
                at,
                format!("rate_limits.{}", super::syntax::key_segment(name.get_ref())),
                "sets neither requests_per_second nor tokens_per_minute, so it limits nothing",
            ));
        }
        let config = RateLimitConfig {
            name: Some(name.get_ref().clone()),
            options,
            backend,
            adaptive: table.adaptive.as_ref().is_none_or(|a| *a.get_ref()),
        };
        let line = ctx.line_of(name.span().start);
        named.insert(name.into_inner(), NamedLimit { config, line });
    }
    Ok(named)
}

/// The shared limits as the manifest keeps them.
pub(super) fn configs(named: &BTreeMap<String, NamedLimit>) -> BTreeMap<String, RateLimitConfig> {
    named
        .iter()
        .map(|(name, limit)| (name.clone(), limit.config.clone()))
        .collect()
}

/// An operator's `rate_limit`; `operator` is where the operator stands.
pub(super) fn resolve_operator(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    raw: &Option<RawRateLimit>,
    operator: Range<usize>,
    named: &BTreeMap<String, NamedLimit>,
) -> Result<Option<RateLimitConfig>, ManifestError> {
    let Some(table) = raw else {
        return Ok(None);
    };
    let key = |name: &str| field(&format!("rate_limit.{name}"));
    let at = table.first_key().unwrap_or(operator);
    let adaptive = table.adaptive.as_ref().map(|a| *a.get_ref());
    if let Some(used) = &table.use_name {
        let Some(shared) = named.get(used.get_ref()) else {
            let known: Vec<String> = named.keys().map(|n| format!("{n:?}")).collect();
            let known = if known.is_empty() {
                "no [rate_limits] are defined".to_owned()
            } else {
                format!("defined limits: {}", known.join(", "))
            };
            return Err(ctx.invalid(
                used.span(),
                key("use"),
                format!("unknown rate limit {:?}; {known}", used.get_ref()),
            ));
        };
        if let Some((name, Some(span))) = table.limit_keys().into_iter().find(|(_, s)| s.is_some())
        {
            return Err(ctx.invalid(
                span,
                key(name),
                format!(
                    "cannot be set with rate_limit.use: the limit is [rate_limits.{}] (line {}); set it there",
                    used.get_ref(),
                    shared.line
                ),
            ));
        }
        let mut config = shared.config.clone();
        config.adaptive = adaptive.unwrap_or(config.adaptive);
        return Ok(Some(config));
    }
    let (options, backend) = limit(ctx, &key, table, at.clone())?;
    let limits = options.requests_per_second.is_some() || options.tokens_per_minute.is_some();
    if !limits {
        // Only `adaptive` may stand alone: anything else would be silently ignored.
        if let Some((name, Some(span))) = table.limit_keys().into_iter().find(|(_, s)| s.is_some())
        {
            return Err(ctx.invalid(
                span,
                key(name),
                "has no effect without rate_limit.requests_per_second or rate_limit.tokens_per_minute",
            ));
        }
    }
    Ok(Some(RateLimitConfig {
        name: None,
        options,
        backend,
        adaptive: adaptive.unwrap_or(true),
    }))
}

/// The limit keys of a table; `key` names them, `at` is where the table's first key stands.
fn limit(
    ctx: &Ctx<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawRateLimit,
    at: Range<usize>,
) -> Result<(RateLimitOptions, RateLimitBackend), ManifestError> {
    let requests_per_second = ctx.setting(
        &raw.requests_per_second,
        &key("requests_per_second"),
        None,
        |n| n.positive_rate("requests per second").map(Some),
    )?;
    let tokens_per_minute = ctx.setting(
        &raw.tokens_per_minute,
        &key("tokens_per_minute"),
        None,
        |n| n.whole(1, u64::MAX, "tokens per minute").map(Some),
    )?;
    let algorithm = match &raw.algorithm {
        None => Algorithm::default(),
        Some(a) => ctx.choose(
            a,
            &key("algorithm"),
            &[Algorithm::TokenBucket, Algorithm::SlidingWindow].map(|a| (algorithm_name(a), a)),
        )?,
    };
    let burst = ctx.setting(&raw.burst, &key("burst"), None, |n| {
        n.whole(1, u64::from(u32::MAX), "requests")
            .map(|b| Some(b as u32))
    })?;
    if let Some(b) = &raw.burst {
        if algorithm == Algorithm::SlidingWindow {
            return Err(ctx.invalid(
                b.span(),
                key("burst"),
                "applies only to algorithm = \"token_bucket\" (a sliding window has no bucket)",
            ));
        }
        if requests_per_second.is_none() {
            return Err(ctx.invalid(
                b.span(),
                key("burst"),
                "is a number of requests: set rate_limit.requests_per_second too",
            ));
        }
    }
    let backend = backend(ctx, key, raw, at)?;
    let options = RateLimitOptions {
        requests_per_second,
        tokens_per_minute,
        algorithm,
        burst,
    };
    Ok((options, backend))
}

fn backend(
    ctx: &Ctx<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawRateLimit,
    at: Range<usize>,
) -> Result<RateLimitBackend, ManifestError> {
    let redis = match &raw.backend {
        None => false,
        Some(b) => ctx.choose(b, &key("backend"), &[("local", false), ("redis", true)])?,
    };
    if !redis {
        let only = "backend = \"redis\"";
        ctx.reject_for_kind(&raw.redis_url, &key("redis_url"), only)?;
        ctx.reject_for_kind(&raw.instances, &key("instances"), only)?;
        ctx.reject_for_kind(&raw.fallback_share, &key("fallback_share"), only)?;
        return Ok(RateLimitBackend::Local);
    }
    let Some(url) = &raw.redis_url else {
        let at = span(&raw.backend).unwrap_or(at);
        return Err(ctx.invalid(
            at,
            key("redis_url"),
            "missing; backend = \"redis\" needs e.g. redis_url = \"redis://127.0.0.1:6379\"",
        ));
    };
    let url = ctx.check(url, &key("redis_url"), |u| redis_url(u))?;
    let instances = ctx.setting(&raw.instances, &key("instances"), None, |n| {
        n.whole(1, 1 << 20, "processes").map(Some)
    })?;
    let default_share = instances.map_or(1.0, |n| 1.0 / n as f64);
    let fallback_share = ctx.setting(
        &raw.fallback_share,
        &key("fallback_share"),
        default_share,
        Number::share,
    )?;
    Ok(RateLimitBackend::Redis {
        url,
        fallback_share,
    })
}

/// A `redis_url` value (of a rate limit or a request cache): a redis:// URL with a host.
pub(super) fn redis_url(text: &str) -> Result<String, String> {
    // rediss:// (TLS) is not offered: the client is built without TLS, for a Redis on a
    // private network or the same host.
    let usage = "use e.g. \"redis://127.0.0.1:6379\" (TLS, rediss://, is not supported)";
    let url = url::Url::parse(text).map_err(|e| format!("invalid URL {text:?} ({e}); {usage}"))?;
    if url.scheme() != "redis" || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{text:?} is not a redis:// URL with a host; {usage}"
        ));
    }
    Ok(text.to_owned())
}

/// A number as written: TOML's integer or float, or a string (refused with a hint: a rate is
/// written `50`, not `"50 per sec"`).
pub(super) enum Number {
    Integer(i64),
    Float(f64),
    Text(String),
}

impl Number {
    fn shown(&self) -> String {
        match self {
            Number::Integer(i) => i.to_string(),
            Number::Float(f) => f.to_string(),
            Number::Text(t) => format!("{t:?}"),
        }
    }

    /// A rate: a number more than 0.
    fn positive_rate(&self, unit: &str) -> Result<f64, String> {
        let value = match self {
            Number::Integer(i) => *i as f64,
            Number::Float(f) => *f,
            Number::Text(_) => {
                return Err(format!(
                    "must be a number of {unit} such as 50 (no unit, no quotes), got {}",
                    self.shown()
                ))
            }
        };
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("must be more than 0 {unit}, got {}", self.shown()));
        }
        Ok(value)
    }

    /// A whole number within `low..=high`.
    fn whole(&self, low: u64, high: u64, unit: &str) -> Result<u64, String> {
        let Number::Integer(i) = self else {
            return Err(format!(
                "must be a whole number of {unit} such as 10 (no unit, no quotes), got {}",
                self.shown()
            ));
        };
        match u64::try_from(*i) {
            Ok(n) if (low..=high).contains(&n) => Ok(n),
            _ if high == u64::MAX => Err(format!("must be at least {low}, got {i}")),
            _ => Err(format!("must be between {low} and {high}, got {i}")),
        }
    }

    /// A share of a limit: more than 0, at most 1.
    fn share(&self) -> Result<f64, String> {
        let value = match self {
            Number::Integer(i) => *i as f64,
            Number::Float(f) => *f,
            Number::Text(_) => f64::NAN,
        };
        if !(value > 0.0 && value <= 1.0) {
            return Err(format!(
                "must be a fraction more than 0 and at most 1 (e.g. 0.5), got {}",
                self.shown()
            ));
        }
        Ok(value)
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number such as 50")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
                Ok(Number::Text(v.to_owned()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Float(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(i64::try_from(v).map_or(Number::Float(v as f64), Number::Integer))
            }
        }
        d.deserialize_any(V)
    }
}
