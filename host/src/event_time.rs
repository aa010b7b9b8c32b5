//! Event time (`[event_time]` in the manifest): reading each record's timestamp from one of its
//! JSON fields, and generating watermarks from the timestamps seen, as Flink's
//! `WatermarkStrategy.forBoundedOutOfOrderness` does with periodic emission.
//!
//! The generator only decides *which* watermarks to emit and *when*; records later than the
//! current watermark are kept by the pipeline, never dropped here.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::manifest::{EventTimeConfig, TimestampFormat};
use crate::record::WatermarkState;

/// Values quoted in messages are cut here, so that a huge field does not flood a dead letter.
const MAX_SHOWN_CHARS: usize = 64;

const EXPECTED_MILLIS: &str = "an integer of milliseconds since the epoch";
const EXPECTED_SECONDS: &str = "a number of seconds since the epoch";
const EXPECTED_RFC3339: &str = "an RFC 3339 timestamp";

const MILLIS_PER_SECOND: i64 = 1000;
const MILLIS_PER_DAY: i64 = 86_400_000;

/// Reads the event time of one JSON record, in milliseconds since the Unix epoch. The error names
/// the field and what is wrong with it (missing, null, wrong type, unparseable, out of range).
pub fn extract_timestamp(record: &Value, config: &EventTimeConfig) -> Result<i64, String> {
    let field = &config.field;
    let at_field = |what: String| format!("field {field:?}: {what}");
    let value = match record {
        Value::Object(map) => map.get(field),
        other => {
            return Err(at_field(format!(
                "missing: the record is {}, not a JSON object",
                json_kind(other)
            )));
        }
    };
    let Some(value) = value else {
        return Err(at_field("missing from the record".to_owned()));
    };
    let expected = match config.format {
        TimestampFormat::EpochMillis => EXPECTED_MILLIS,
        TimestampFormat::EpochSeconds => EXPECTED_SECONDS,
        TimestampFormat::Rfc3339 => EXPECTED_RFC3339,
    };
    if value.is_null() {
        return Err(at_field(format!("is null; expected {expected}")));
    }
    match config.format {
        TimestampFormat::EpochMillis => epoch_millis(value),
        TimestampFormat::EpochSeconds => epoch_seconds(value),
        TimestampFormat::Rfc3339 => match value {
            Value::String(text) => rfc3339_millis(text).map_err(|reason| {
                let reason = reason.map(|r| format!(": {r}")).unwrap_or_default();
                format!("expected {EXPECTED_RFC3339}, got {}{reason}", shown(value))
            }),
            other => Err(wrong_type(EXPECTED_RFC3339, other)),
        },
    }
    .map_err(at_field)
}

fn epoch_millis(value: &Value) -> Result<i64, String> {
    let Value::Number(n) = value else {
        return Err(wrong_type(EXPECTED_MILLIS, value));
    };
    if let Some(ms) = n.as_i64() {
        return Ok(ms);
    }
    if n.is_u64() {
        return Err(format!("{n} is out of range for a timestamp"));
    }
    // `1.7e12` is how some producers write integers; a real fraction of a millisecond is refused.
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 => float_millis(f).ok_or_else(|| out_of_range(n)),
        _ => Err(format!("expected {EXPECTED_MILLIS}, got {n}")),
    }
}

fn epoch_seconds(value: &Value) -> Result<i64, String> {
    let Value::Number(n) = value else {
        return Err(wrong_type(EXPECTED_SECONDS, value));
    };
    if let Some(seconds) = n.as_i64() {
        return seconds
            .checked_mul(MILLIS_PER_SECOND)
            .ok_or_else(|| out_of_range(n));
    }
    if n.is_u64() {
        return Err(out_of_range(n));
    }
    // Rounded rather than truncated: 1.001 s is 1000.9999... ms in binary floating point.
    n.as_f64()
        .and_then(|seconds| float_millis((seconds * 1000.0).round()))
        .ok_or_else(|| out_of_range(n))
}

/// An integral float as i64 milliseconds, if it fits.
fn float_millis(f: f64) -> Option<i64> {
    // i64::MIN and i64::MAX + 1 are both exact in f64, so this half-open range is exact.
    let fits = (i64::MIN as f64..i64::MAX as f64).contains(&f);
    fits.then_some(f as i64)
}

fn out_of_range(n: &serde_json::Number) -> String {
    format!("{n} is out of range for a timestamp")
}

fn wrong_type(expected: &str, got: &Value) -> String {
    format!("expected {expected}, got {} {}", json_kind(got), shown(got))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value as JSON text, shortened when long.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` into ms since the epoch. Digits past
/// milliseconds are truncated. `Err(None)` means the text does not have that shape at all;
/// `Err(Some(reason))` that it does but names a date, time or offset that does not exist.
fn rfc3339_millis(text: &str) -> Result<i64, Option<String>> {
    let b = text.as_bytes();
    let at = |i: usize| b.get(i).copied();
    let year = digits(b, 0, 4).ok_or(None)?;
    let month = digits(b, 5, 2).ok_or(None)?;
    let day = digits(b, 8, 2).ok_or(None)?;
    let hour = digits(b, 11, 2).ok_or(None)?;
    let minute = digits(b, 14, 2).ok_or(None)?;
    let mut second = digits(b, 17, 2).ok_or(None)?;
    // RFC 3339 allows a lowercase `t` and, by agreement, a space between date and time.
    let separators_ok = at(4) == Some(b'-')
        && at(7) == Some(b'-')
        && matches!(at(10), Some(b'T' | b't' | b' '))
        && at(13) == Some(b':')
        && at(16) == Some(b':');
    if !separators_ok {
        return Err(None);
    }

    let mut i = 19;
    let mut millis = 0;
    if at(i) == Some(b'.') {
        i += 1;
        let start = i;
        while at(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        if i == start {
            return Err(None);
        }
        for k in 0..3 {
            let digit = b
                .get(start + k)
                .filter(|_| start + k < i)
                .map_or(0, |c| c - b'0');
            millis = millis * 10 + i64::from(digit);
        }
    }

    let offset_minutes = match at(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3) == Some(b':') => {
            let hours = digits(b, i + 1, 2).ok_or(None)?;
            let minutes = digits(b, i + 4, 2).ok_or(None)?;
            if hours > 23 || minutes > 59 {
                return Err(Some(format!(
                    "offset {} is not a valid UTC offset",
                    &text[i..]
                )));
            }
            let offset = hours * 60 + minutes;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return Err(None),
    };

    if !(1..=12).contains(&month) {
        return Err(Some(format!("month {month:02} does not exist")));
    }
    // Four digits and a month in 1..=12 are always in jiff's range.
    let first = jiff::civil::Date::new(year as i16, month as i8, 1).map_err(|_| None)?;
    let month_days = i64::from(first.days_in_month());
    if !(1..=month_days).contains(&day) {
        return Err(Some(format!(
            "day {day:02} does not exist in {year:04}-{month:02}, which has {month_days} days"
        )));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(Some(format!(
            "time {hour:02}:{minute:02}:{second:02} does not exist"
        )));
    }
    if second == 60 {
        // A leap second. Unix time has none, so it becomes the last millisecond of its minute:
        // after every earlier instant of the minute, before the next minute.
        second = 59;
        millis = 999;
    }

    let date = jiff::civil::Date::new(year as i16, month as i8, day as i8).map_err(|_| None)?;
    let days = days_since_epoch(date)?;
    let seconds_of_day = (hour * 60 + minute) * 60 + second;
    Ok(
        days * MILLIS_PER_DAY + seconds_of_day * MILLIS_PER_SECOND + millis
            - offset_minutes * 60 * MILLIS_PER_SECOND,
    )
}

/// Days from 1970-01-01 to `date`; negative before 1970. Counted in civil days, so it also
/// covers dates past the range of a `jiff::Timestamp` (9999-12-31).
fn days_since_epoch(date: jiff::civil::Date) -> Result<i64, Option<String>> {
    let span = jiff::civil::date(1970, 1, 1)
        .until(date)
        .map_err(|e| Some(e.to_string()))?;
    Ok(i64::from(span.get_days()))
}

/// Exactly `len` ASCII digits at `start`, as a number.
fn digits(b: &[u8], start: usize, len: usize) -> Option<i64> {
    let run = b.get(start..start + len)?;
    run.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// Generates watermarks from the event times of the records a source reads (Flink's bounded
/// out-of-orderness strategy), merged with the watermarks already present in the input.
/// Emitted watermarks only ever increase.
#[derive(Clone, Debug)]
pub struct WatermarkGenerator {
    out_of_orderness_ms: i64,
    interval: Duration,
    max_timestamp: Option<i64>,
    emitted: Option<i64>,
    /// When the last generated watermark went out; `None` before the first (and after a
    /// restore, so that a resumed job need not wait an interval).
    last_emission: Option<Instant>,
}

impl WatermarkGenerator {
    pub fn new(config: &EventTimeConfig, restored: WatermarkState) -> Self {
        WatermarkGenerator {
            // Saturates: a bound of centuries just means the watermark stays at the minimum.
            out_of_orderness_ms: i64::try_from(config.max_out_of_orderness.as_millis())
                .unwrap_or(i64::MAX),
            interval: config.watermark_interval,
            max_timestamp: restored.max_timestamp,
            emitted: restored.emitted,
            last_emission: None,
        }
    }

    /// What a checkpoint stores to resume this generator.
    pub fn state(&self) -> WatermarkState {
        WatermarkState {
            max_timestamp: self.max_timestamp,
            emitted: self.emitted,
        }
    }

    /// After a record with event time `ts`: `Some(w)` when a watermark should be emitted now,
    /// that is when `w` (largest timestamp - out-of-orderness - 1 ms) is above the last emitted
    /// watermark and at least the watermark interval has passed since the last generated one.
    pub fn on_record(&mut self, ts: i64, now: Instant) -> Option<i64> {
        self.max_timestamp = Some(self.max_timestamp.map_or(ts, |max| max.max(ts)));
        self.poll(now)
    }

    /// The watermark held back by the interval, if the interval has passed by `now`. For a
    /// source that waits for input (stdin) and wants to emit it without a new record.
    pub fn poll(&mut self, now: Instant) -> Option<i64> {
        let candidate = self.candidate()?;
        let too_soon = self
            .last_emission
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval);
        if too_soon {
            return None;
        }
        self.emitted = Some(candidate);
        self.last_emission = Some(now);
        Some(candidate)
    }

    /// A watermark present in the input (`{"$watermark": ms}`): `Some(ts)` to pass on when it is
    /// above the last emitted watermark, `None` when it would move time backwards.
    pub fn on_input_watermark(&mut self, ts: i64) -> Option<i64> {
        if self.emitted.is_some_and(|emitted| ts <= emitted) {
            return None;
        }
        self.emitted = Some(ts);
        Some(ts)
    }

    /// End of input: the watermark held back by the interval, if any.
    pub fn flush(&mut self) -> Option<i64> {
        let candidate = self.candidate()?;
        self.emitted = Some(candidate);
        Some(candidate)
    }

    /// The watermark the timestamps seen call for, if it is above the last emitted one.
    fn candidate(&self) -> Option<i64> {
        let watermark = self
            .max_timestamp?
            .saturating_sub(self.out_of_orderness_ms)
            .saturating_sub(1);
        match self.emitted {
            Some(emitted) if watermark <= emitted => None,
            _ => Some(watermark),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(format: TimestampFormat, ooo_ms: u64, interval_ms: u64) -> EventTimeConfig {
        EventTimeConfig {
            field: "ts".into(),
            format,
            max_out_of_orderness: Duration::from_millis(ooo_ms),
            watermark_interval: Duration::from_millis(interval_ms),
        }
    }

    fn extract(format: TimestampFormat, value: Value) -> Result<i64, String> {
        extract_timestamp(&json!({ "id": 1, "ts": value }), &config(format, 0, 0))
    }

    fn rfc(text: &str) -> Result<i64, String> {
        extract(TimestampFormat::Rfc3339, json!(text))
    }

    fn generator(ooo_ms: u64, interval_ms: u64) -> WatermarkGenerator {
        WatermarkGenerator::new(
            &config(TimestampFormat::EpochMillis, ooo_ms, interval_ms),
            WatermarkState::default(),
        )
    }

    #[test]
    fn epoch_millis_integers() {
        let f = TimestampFormat::EpochMillis;
        assert_eq!(
            extract(f, json!(1_700_000_000_123_i64)),
            Ok(1_700_000_000_123)
        );
        assert_eq!(extract(f, json!(-5)), Ok(-5));
        assert_eq!(extract(f, json!(1.7e12)), Ok(1_700_000_000_000));
        assert_eq!(extract(f, json!(12.0)), Ok(12));
    }

    #[test]
    fn epoch_seconds_integers_and_floats() {
        let f = TimestampFormat::EpochSeconds;
        assert_eq!(extract(f, json!(1_700_000_000)), Ok(1_700_000_000_000));
        assert_eq!(extract(f, json!(1_700_000_000.5)), Ok(1_700_000_000_500));
        assert_eq!(extract(f, json!(1.001)), Ok(1001));
        assert_eq!(extract(f, json!(0.0015)), Ok(2));
        assert_eq!(extract(f, json!(-1.5)), Ok(-1500));
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(rfc("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(rfc("2026-11-22T10:00:00Z"), Ok(1_795_341_600_000));
        assert_eq!(
            rfc("2026-11-22T10:00:00.123+02:00"),
            Ok(1_795_341_600_123 - 2 * 3_600_000)
        );
        assert_eq!(
            rfc("2026-11-22T10:00:00.5-05:30"),
            Ok(1_795_341_600_500 + 5 * 3_600_000 + 30 * 60_000)
        );
        // Digits past milliseconds are truncated.
        assert_eq!(rfc("1970-01-01T00:00:01.987654321Z"), Ok(1987));
        assert_eq!(rfc("1970-01-01t00:00:00.1z"), Ok(100));
        assert_eq!(rfc("1970-01-01 00:00:00-00:00"), Ok(0));
        assert_eq!(rfc("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(rfc("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(rfc("0000-01-01T00:00:00Z"), Ok(-62_167_219_200_000));
        assert_eq!(rfc("9999-12-31T23:59:59Z"), Ok(253_402_300_799_000));
        // A leap second sorts between the end of its minute and the next minute.
        assert_eq!(rfc("2016-12-31T23:59:60Z"), Ok(1_483_228_799_999));
    }

    #[test]
    fn every_day_of_four_centuries_is_one_day_after_the_last() {
        let mut expected = rfc("1600-01-01T00:00:00Z").expect("a valid date");
        let mut date = jiff::civil::date(1600, 1, 1);
        while date.year() <= 2400 {
            let text = format!("{}T00:00:00Z", date);
            assert_eq!(rfc(&text), Ok(expected), "{text}");
            expected += MILLIS_PER_DAY;
            date = date.tomorrow().expect("in range");
        }
        assert_eq!(rfc("1970-01-01T00:00:00Z"), Ok(0));
    }

    #[test]
    fn bad_rfc3339_values_name_field_and_problem() {
        let cases = [
            (
                "yesterday",
                "expected an RFC 3339 timestamp, got \"yesterday\"",
            ),
            ("2026-11-22", "got \"2026-11-22\""),
            ("2026-11-22T10:00:00", "got \"2026-11-22T10:00:00\""),
            ("2026-11-22T10:00Z", "got"),
            ("2026-11-22T10:00:00.Z", "got"),
            ("2026-11-22T10:00:00+0200", "got"),
            ("2026-11-22T10:00:00Z ", "got"),
            ("2026-13-01T00:00:00Z", "month 13 does not exist"),
            ("2026-00-01T00:00:00Z", "month 00 does not exist"),
            (
                "2026-02-29T00:00:00Z",
                "day 29 does not exist in 2026-02, which has 28 days",
            ),
            ("1900-02-29T00:00:00Z", "day 29 does not exist in 1900-02"),
            ("2026-04-31T00:00:00Z", "day 31 does not exist"),
            ("2026-04-00T00:00:00Z", "day 00 does not exist"),
            ("2026-04-01T24:00:00Z", "time 24:00:00 does not exist"),
            ("2026-04-01T23:60:00Z", "time 23:60:00 does not exist"),
            ("2026-04-01T23:59:61Z", "time 23:59:61 does not exist"),
            (
                "2026-04-01T23:59:59+24:00",
                "offset +24:00 is not a valid UTC offset",
            ),
        ];
        for (text, needle) in cases {
            let message = rfc(text).expect_err(text);
            assert!(message.starts_with("field \"ts\": "), "{message}");
            assert!(message.contains(needle), "{text}: {message}");
        }
        let message = extract(TimestampFormat::Rfc3339, json!(1_700_000_000)).unwrap_err();
        assert_eq!(
            message,
            "field \"ts\": expected an RFC 3339 timestamp, got a number 1700000000"
        );
    }

    #[test]
    fn bad_epoch_values_name_field_and_problem() {
        let millis = TimestampFormat::EpochMillis;
        let seconds = TimestampFormat::EpochSeconds;
        let cases = [
            (millis, json!("1700000000000"), "expected an integer of milliseconds since the epoch, got a string \"1700000000000\""),
            (millis, json!(1.5), "expected an integer of milliseconds since the epoch, got 1.5"),
            (millis, json!(true), "got a boolean true"),
            (millis, json!([1]), "got an array [1]"),
            (millis, json!({"ms": 1}), "got an object {\"ms\":1}"),
            (millis, json!(u64::MAX), "out of range"),
            (millis, json!(1e300), "out of range"),
            (millis, Value::Null, "is null; expected an integer of milliseconds"),
            (seconds, json!("1700000000"), "expected a number of seconds since the epoch, got a string"),
            (seconds, json!(i64::MAX), "out of range"),
            (seconds, json!(1e300), "out of range"),
            (seconds, Value::Null, "is null; expected a number of seconds"),
        ];
        for (format, value, needle) in cases {
            let message = extract(format, value.clone()).expect_err("should fail");
            assert!(message.starts_with("field \"ts\": "), "{message}");
            assert!(message.contains(needle), "{value}: {message}");
        }
        let message = extract(TimestampFormat::Rfc3339, Value::Null).unwrap_err();
        assert_eq!(
            message,
            "field \"ts\": is null; expected an RFC 3339 timestamp"
        );
    }

    #[test]
    fn missing_field_and_non_object_records() {
        let c = config(TimestampFormat::EpochMillis, 0, 0);
        assert_eq!(
            extract_timestamp(&json!({"time": 5}), &c),
            Err("field \"ts\": missing from the record".to_owned())
        );
        let message = extract_timestamp(&json!([1, 2]), &c).unwrap_err();
        assert_eq!(
            message,
            "field \"ts\": missing: the record is an array, not a JSON object"
        );
        // Long values are shortened in the message.
        let long = "x".repeat(1000);
        let message = extract(TimestampFormat::Rfc3339, json!(long)).unwrap_err();
        assert!(message.len() < 200 && message.contains("..."), "{message}");
    }

    #[test]
    fn in_order_stream_with_zero_interval_emits_every_advance() {
        let mut g = generator(0, 0);
        let now = Instant::now();
        assert_eq!(g.on_record(1000, now), Some(999));
        assert_eq!(g.on_record(1000, now), None, "no advance, no watermark");
        assert_eq!(g.on_record(1001, now), Some(1000));
        assert_eq!(g.on_record(2500, now), Some(2499));
        assert_eq!(
            g.state(),
            WatermarkState {
                max_timestamp: Some(2500),
                emitted: Some(2499)
            }
        );
        assert_eq!(g.flush(), None, "nothing held back");
    }

    #[test]
    fn out_of_order_within_bound_never_goes_backwards() {
        let mut g = generator(100, 0);
        let now = Instant::now();
        assert_eq!(g.on_record(1000, now), Some(899));
        assert_eq!(g.on_record(950, now), None);
        assert_eq!(g.on_record(905, now), None, "within the bound");
        assert_eq!(g.on_record(1050, now), Some(949));
        // Below the watermark: the record is kept by the pipeline; the generator stays put.
        assert_eq!(g.on_record(10, now), None);
        assert_eq!(g.state().max_timestamp, Some(1050));
        assert_eq!(g.state().emitted, Some(949));
    }

    #[test]
    fn interval_holds_back_then_flush_emits() {
        let mut g = generator(0, 200);
        let t0 = Instant::now();
        assert_eq!(
            g.on_record(1000, t0),
            Some(999),
            "the first one goes out at once"
        );
        assert_eq!(g.on_record(1100, t0 + Duration::from_millis(50)), None);
        assert_eq!(g.on_record(1200, t0 + Duration::from_millis(199)), None);
        assert_eq!(g.poll(t0 + Duration::from_millis(150)), None);
        assert_eq!(
            g.on_record(1300, t0 + Duration::from_millis(200)),
            Some(1299)
        );
        assert_eq!(g.on_record(1400, t0 + Duration::from_millis(300)), None);
        assert_eq!(g.poll(t0 + Duration::from_millis(400)), Some(1399));
        assert_eq!(g.on_record(1500, t0 + Duration::from_millis(401)), None);
        assert_eq!(g.flush(), Some(1499));
        assert_eq!(g.flush(), None);
        assert_eq!(g.state().emitted, Some(1499));
    }

    #[test]
    fn restore_continues_monotonic() {
        let restored = WatermarkState {
            max_timestamp: Some(5000),
            emitted: Some(4899),
        };
        let mut g =
            WatermarkGenerator::new(&config(TimestampFormat::EpochMillis, 100, 1000), restored);
        assert_eq!(g.state(), restored);
        let now = Instant::now();
        // Records replayed from before the checkpoint do not move anything.
        assert_eq!(g.on_record(4000, now), None);
        assert_eq!(g.on_record(5000, now), None);
        assert_eq!(g.on_input_watermark(4899), None);
        // The interval does not delay the first watermark after a restore.
        assert_eq!(g.on_record(5001, now), Some(4900));
        assert_eq!(g.state().max_timestamp, Some(5001));
        // Restoring a max timestamp with nothing emitted yet: flush emits it.
        let mut g = WatermarkGenerator::new(
            &config(TimestampFormat::EpochMillis, 0, 0),
            WatermarkState {
                max_timestamp: Some(10),
                emitted: None,
            },
        );
        assert_eq!(g.flush(), Some(9));
    }

    #[test]
    fn input_watermarks_merge_without_going_back() {
        let mut g = generator(0, 0);
        let now = Instant::now();
        assert_eq!(g.on_input_watermark(500), Some(500));
        assert_eq!(g.on_input_watermark(500), None);
        assert_eq!(g.on_input_watermark(400), None);
        assert_eq!(
            g.on_record(450, now),
            None,
            "generated 449 is below the input's 500"
        );
        assert_eq!(g.on_record(700, now), Some(699));
        assert_eq!(g.on_input_watermark(600), None);
        assert_eq!(g.on_input_watermark(800), Some(800));
        assert_eq!(g.on_record(801, now), None);
        assert_eq!(g.on_record(802, now), Some(801));
        assert_eq!(
            g.state(),
            WatermarkState {
                max_timestamp: Some(802),
                emitted: Some(801)
            }
        );
    }

    #[test]
    fn extreme_values_saturate() {
        let mut g = WatermarkGenerator::new(
            &EventTimeConfig {
                field: "ts".into(),
                format: TimestampFormat::EpochMillis,
                max_out_of_orderness: Duration::from_secs(u64::MAX),
                watermark_interval: Duration::ZERO,
            },
            WatermarkState::default(),
        );
        let now = Instant::now();
        assert_eq!(g.on_record(i64::MIN, now), Some(i64::MIN));
        assert_eq!(g.on_record(0, now), None);
        let mut g = generator(0, 0);
        assert_eq!(g.on_record(i64::MIN, now), Some(i64::MIN));
        assert_eq!(g.on_record(i64::MIN, now), None);
    }
}
