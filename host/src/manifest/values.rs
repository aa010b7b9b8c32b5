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

/// One entry of an operator's network allowlist, as parsed. Requests are matched against it by
/// `outbound::HostPattern` (built from it when the outbound stack is made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    /// Lowercase host name or IP address (IPv6 without brackets).
    pub host: String,
    /// `None` = any port.
    pub port: Option<u16>,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// One value of each type, as a section would hold it.
    #[derive(Deserialize)]
    struct Values {
        duration: Option<Spanned<DurationValue>>,
        size: Option<Spanned<SizeValue>>,
        count: Option<Spanned<Count>>,
        fraction: Option<Spanned<Fraction>>,
        #[serde(default)]
        hosts: Vec<Spanned<String>>,
    }

    const FILE: &str = "/p/m.toml";

    /// The values of `text` and the context that locates them.
    fn read(text: &str) -> (Values, Ctx<'_>) {
        let values = toml::from_str(text).unwrap();
        (values, Ctx::new(text, Path::new(FILE)))
    }

    /// (line, column, field, message) of an `Invalid` error.
    fn located(e: ManifestError) -> (usize, usize, String, String) {
        match e {
            ManifestError::Invalid { at, field, message } => {
                assert_eq!(at.file, Path::new(FILE));
                (at.line, at.column, field, message)
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn durations_read_text_or_integer_milliseconds() {
        let (v, ctx) = read("duration = \"1m 30s\"");
        let d = v.duration.unwrap();
        assert_eq!(
            ctx.check(&d, "x", DurationValue::duration).unwrap(),
            Duration::from_secs(90)
        );
        let (v, ctx) = read("duration = 250");
        let d = v.duration.unwrap();
        assert_eq!(
            ctx.check(&d, "x", DurationValue::positive).unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn a_bad_duration_is_located_at_its_value() {
        let (v, ctx) = read("count = 1\n  duration = \"soon\"\n");
        let d = v.duration.unwrap();
        let (line, column, field, message) = located(
            ctx.check(&d, "op.timeout", DurationValue::duration)
                .unwrap_err(),
        );
        assert_eq!((line, column, field.as_str()), (2, 14, "op.timeout"));
        assert!(
            message.starts_with("invalid duration \"soon\""),
            "{message}"
        );

        let (v, ctx) = read("duration = -5");
        let d = v.duration.unwrap();
        let (_, column, _, message) =
            located(ctx.check(&d, "x", DurationValue::duration).unwrap_err());
        assert_eq!(
            (column, message.as_str()),
            (12, "duration must not be negative, got -5")
        );
    }

    #[test]
    fn a_positive_duration_refuses_zero_and_an_optional_one_reads_it_as_none() {
        for zero in ["\"0s\"", "0"] {
            let text = format!("duration = {zero}");
            let (v, ctx) = read(&text);
            let d = v.duration.unwrap();
            let (_, _, _, message) =
                located(ctx.check(&d, "x", DurationValue::positive).unwrap_err());
            assert_eq!(message, "must be greater than 0");
            assert_eq!(d.get_ref().optional(), Ok(None));
        }
        // Flink's "no timeout": negative milliseconds too, but not negative text.
        let (v, _) = read("duration = -1");
        assert_eq!(v.duration.unwrap().get_ref().optional(), Ok(None));
        let (v, _) = read("duration = \"2s\"");
        assert_eq!(
            v.duration.unwrap().get_ref().optional(),
            Ok(Some(Duration::from_secs(2)))
        );
        assert!(DurationValue::Text("-1s".into()).optional().is_err());
    }

    #[test]
    fn a_bad_size_is_located_at_its_value() {
        let (v, ctx) = read("size = \"64MiB\"");
        let s = v.size.unwrap();
        assert_eq!(ctx.check(&s, "x", SizeValue::bytes).unwrap(), 64 << 20);
        let (v, ctx) = read("\nsize = \"64 potatoes\"");
        let s = v.size.unwrap();
        let (line, column, field, message) = located(
            ctx.check(&s, "op.memory_limit", SizeValue::bytes)
                .unwrap_err(),
        );
        assert_eq!((line, column, field.as_str()), (2, 8, "op.memory_limit"));
        assert!(
            message.starts_with("invalid size \"64 potatoes\""),
            "{message}"
        );
        let (v, _) = read("size = -1");
        assert_eq!(
            v.size.unwrap().get_ref().bytes(),
            Err("size must not be negative, got -1".to_owned())
        );
    }

    #[test]
    fn counts_check_their_range_and_say_why() {
        let (v, ctx) = read("count = 0");
        let c = v.count.unwrap();
        let (line, column, field, message) = located(
            ctx.check(&c, "op.capacity", |c| {
                c.at_least_one::<usize>(" (as Flink)")
            })
            .unwrap_err(),
        );
        assert_eq!((line, column, field.as_str()), (1, 9, "op.capacity"));
        assert_eq!(message, "must be at least 1, got 0 (as Flink)");

        let (v, _) = read("count = 65");
        let c = *v.count.unwrap().get_ref();
        assert_eq!(
            c.between::<usize>(1, 64),
            Err("must be between 1 and 64, got 65".into())
        );
        assert_eq!(c.between::<usize>(1, 65), Ok(65));
        assert_eq!(c.at_least_one::<u64>(""), Ok(65));
        assert_eq!(c.non_negative(), Ok(65));
        // A count that does not fit the target type is out of range, not a panic.
        let (v, _) = read("count = 300");
        assert_eq!(
            v.count.unwrap().get_ref().at_least_one::<u8>(""),
            Err("must be at least 1, got 300".into())
        );
        let (v, _) = read("count = -3");
        assert_eq!(
            v.count.unwrap().get_ref().non_negative(),
            Err("must not be negative".into())
        );
    }

    #[test]
    fn a_fraction_is_between_zero_and_one() {
        let (v, _) = read("fraction = 1");
        assert_eq!(v.fraction.unwrap().get_ref().get(), Ok(1.0));
        let (v, ctx) = read("fraction = 1.5");
        let f = v.fraction.unwrap();
        let (_, column, _, message) = located(ctx.check(&f, "x", |f| f.get()).unwrap_err());
        assert_eq!(
            (column, message.as_str()),
            (12, "must be between 0.0 and 1.0, got 1.5")
        );
    }

    #[test]
    fn host_rules_are_located_one_by_one() {
        let (v, ctx) = read("hosts = [\"a.example\", \"[::1]:8080\"]");
        let rules = host_rules(&ctx, &v.hosts, "op.allowed_hosts").unwrap();
        assert_eq!(
            rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["a.example", "[::1]:8080"]
        );
        let (v, ctx) = read("hosts = [\n  \"a.example\",\n  \"https://b.example/v1\",\n]");
        let e = host_rules(&ctx, &v.hosts, "op.allowed_hosts").unwrap_err();
        let (line, column, field, message) = located(e);
        assert_eq!(
            (line, column, field.as_str()),
            (3, 3, "op.allowed_hosts[1]")
        );
        assert!(message.contains("looks like a URL"), "{message}");
    }

    #[test]
    fn host_rule_refusals_say_why() {
        let cases = [
            ("", "empty host rule"),
            ("host:0", "invalid port \"0\""),
            ("host:99999", "invalid port \"99999\""),
            ("a b", "is not a valid host name"),
            ("*.example.com", "wildcards are not supported"),
            ("[::1", "unclosed '['"),
            ("[nope]", "\"nope\" is not an IPv6 address"),
            ("1::2::3", "write IPv6 addresses in brackets"),
            (":80", "has no host"),
        ];
        for (rule, why) in cases {
            let message = parse_host_rule(rule).unwrap_err();
            assert!(message.contains(why), "{rule:?}: {message}");
        }
        assert_eq!(
            parse_host_rule("Example.COM.:443"),
            Ok(HostRule {
                host: "example.com".into(),
                port: Some(443)
            })
        );
        assert_eq!(
            parse_host_rule("::1").map(|r| r.to_string()),
            Ok("[::1]".into())
        );
    }
}
