//! Value types shared by the sections. Each reads itself from the file and checks itself; a
//! check returns the complaint as text, and `Ctx::check` places it at the value, so every
//! section reports a bad duration, size, count or host rule with the same words and location.

use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;

/// A duration as written: a string for humantime, or an integer of milliseconds.
pub(super) enum DurationValue {
    Text(String),
    Millis(i64),
}

impl DurationValue {
    /// Zero or more.
    pub(super) fn duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Millis(ms) => u64::try_from(*ms)
                .map(Duration::from_millis)
                .map_err(|_| format!("duration must not be negative, got {ms}")),
            DurationValue::Text(t) => parse_duration(t),
        }
    }

    /// More than zero.
    pub(super) fn positive(&self) -> Result<Duration, String> {
        let d = self.duration()?;
        if d.is_zero() {
            return Err("must be greater than 0".to_owned());
        }
        Ok(d)
    }

    /// Flink's reading of a timeout: zero or negative (integer milliseconds) means none.
    pub(super) fn optional(&self) -> Result<Option<Duration>, String> {
        if matches!(self, DurationValue::Millis(ms) if *ms <= 0) {
            return Ok(None);
        }
        let d = self.duration()?;
        Ok((!d.is_zero()).then_some(d))
    }
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

/// A humantime duration ("250ms", "5s", "1m 30s") or a string of digits meaning milliseconds.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// A memory size as written: a string with a unit, or an integer of bytes.
pub(super) enum SizeValue {
    Text(String),
    Bytes(i64),
}

impl SizeValue {
    pub(super) fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(b) => {
                u64::try_from(*b).map_err(|_| format!("size must not be negative, got {b}"))
            }
            SizeValue::Text(t) => parse_size(t),
        }
    }
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

/// A byte size: digits with an optional unit (B, KB, MB, GB, TB in powers of 1000; KiB, MiB,
/// GiB, TiB in powers of 1024; case-insensitive).
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
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

/// An integer setting that counts something. Signed, so that `capacity = -1` gets a range
/// message rather than a type error.
#[derive(Clone, Copy, Deserialize)]
#[serde(transparent)]
pub(super) struct Count(i64);

impl Count {
    /// At least 1; `why` is added to the complaint.
    pub(super) fn at_least_one<T: TryFrom<i64>>(self, why: &str) -> Result<T, String> {
        let v = self.0;
        match T::try_from(v) {
            Ok(n) if v >= 1 => Ok(n),
            _ => Err(format!("must be at least 1, got {v}{why}")),
        }
    }

    /// Within `low..=high`.
    pub(super) fn between<T: TryFrom<i64>>(self, low: i64, high: i64) -> Result<T, String> {
        let v = self.0;
        match T::try_from(v) {
            Ok(n) if (low..=high).contains(&v) => Ok(n),
            _ => Err(format!("must be between {low} and {high}, got {v}")),
        }
    }

    pub(super) fn non_negative(self) -> Result<u64, String> {
        u64::try_from(self.0).map_err(|_| "must not be negative".to_owned())
    }
}

/// A share of a whole, from 0.0 to 1.0.
#[derive(Clone, Copy, Deserialize)]
#[serde(transparent)]
pub(super) struct Fraction(f64);

impl Fraction {
    pub(super) fn get(self) -> Result<f64, String> {
        let r = self.0;
        if !(0.0..=1.0).contains(&r) {
            return Err(format!("must be between 0.0 and 1.0, got {r}"));
        }
        Ok(r)
    }
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

fn normalize_host(host: &str) -> &str {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.strip_suffix('.').unwrap_or(h)
}

/// A list of host rules (`allowed_hosts`, a secret's `hosts`), each located at its own entry.
pub(super) fn host_rules(
    ctx: &Ctx<'_>,
    rules: &[Spanned<String>],
    field: &str,
) -> Result<Vec<HostRule>, ManifestError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| ctx.check(rule, &format!("{field}[{i}]"), |r| parse_host_rule(r)))
        .collect()
}

/// "host" (any port) or "host:port"; IPv6 as "[::1]" or "[::1]:443".
pub(super) fn parse_host_rule(text: &str) -> Result<HostRule, String> {
    let t = text.trim();
    let usage =
        "expected \"host\" or \"host:port\", e.g. \"api.openai.com\" or \"127.0.0.1:18080\"";
    if t.is_empty() {
        return Err(format!("empty host rule; {usage}"));
    }
    if t.contains("://") || t.contains('/') {
        return Err(format!("{text:?} looks like a URL; {usage}"));
    }
    let (host, port) = split_host_port(text, t, usage)?;
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

/// Host and port text of a trimmed rule `t` (as given: `text`), IPv6 brackets taken off.
fn split_host_port<'t>(
    text: &str,
    t: &'t str,
    usage: &str,
) -> Result<(&'t str, Option<&'t str>), String> {
    if let Some(rest) = t.strip_prefix('[') {
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
        Ok((inside, port))
    } else if t.matches(':').count() > 1 {
        if t.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "{text:?}: {usage} (write IPv6 addresses in brackets)"
            ));
        }
        Ok((t, None))
    } else {
        Ok(match t.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (t, None),
        })
    }
}
