//! Event time over Kafka partitions, as Flink's Kafka source does it: a watermark per partition
//! (largest timestamp seen - max_out_of_orderness - 1 ms), combined as the minimum over the
//! partitions; a partition with no record for `idle_timeout` is idle and does not hold the
//! combined watermark back until it has records again. The combined watermark only increases
//! and goes out at most once per watermark interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::manifest::EventTimeConfig;

type Partition = (Arc<str>, i32);

pub struct PartitionWatermarks {
    out_of_orderness_ms: i64,
    interval: Duration,
    idle_timeout: Option<Duration>,
    partitions: BTreeMap<Partition, Part>,
    emitted: Option<i64>,
    last_emission: Option<Instant>,
}

struct Part {
    /// The partition's own watermark: from its records, or from a `$watermark` in it.
    watermark: Option<i64>,
    last_record: Instant,
}

impl PartitionWatermarks {
    pub fn new(config: &EventTimeConfig, idle_timeout: Option<Duration>) -> Self {
        PartitionWatermarks {
            out_of_orderness_ms: i64::try_from(config.max_out_of_orderness.as_millis())
                .unwrap_or(i64::MAX),
            interval: config.watermark_interval,
            idle_timeout,
            partitions: BTreeMap::new(),
            emitted: None,
            last_emission: None,
        }
    }

    /// The partition is this reader's now: it holds the watermark back until it has records
    /// (or goes idle).
    pub fn assign(&mut self, partition: Partition, now: Instant) {
        self.partitions.entry(partition).or_insert(Part {
            watermark: None,
            last_record: now,
        });
    }

    /// The partition went to another reader: it no longer holds anything back.
    pub fn revoke(&mut self, partition: &Partition) {
        self.partitions.remove(partition);
    }

    /// A record with event time `ts`: the combined watermark to emit now, if it advanced.
    pub fn on_record(&mut self, partition: &Partition, ts: i64, now: Instant) -> Option<i64> {
        let candidate = ts
            .saturating_sub(self.out_of_orderness_ms)
            .saturating_sub(1);
        self.advance(partition, candidate, now);
        self.poll(now)
    }

    /// A `{"$watermark": ts}` value in a partition.
    pub fn on_input_watermark(
        &mut self,
        partition: &Partition,
        ts: i64,
        now: Instant,
    ) -> Option<i64> {
        self.advance(partition, ts, now);
        self.poll(now)
    }

    fn advance(&mut self, partition: &Partition, watermark: i64, now: Instant) {
        let part = self
            .partitions
            .entry((Arc::clone(&partition.0), partition.1))
            .or_insert(Part {
                watermark: None,
                last_record: now,
            });
        part.watermark = Some(part.watermark.map_or(watermark, |w| w.max(watermark)));
        part.last_record = now;
    }

    /// The combined watermark, if it advanced and the interval has passed (also as partitions
    /// go idle).
    pub fn poll(&mut self, now: Instant) -> Option<i64> {
        let combined = self.combined(now)?;
        if self.emitted.is_some_and(|e| combined <= e) {
            return None;
        }
        let too_soon = self
            .last_emission
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval);
        if too_soon {
            return None;
        }
        self.emitted = Some(combined);
        self.last_emission = Some(now);
        Some(combined)
    }

    /// End of a bounded input: the largest watermark any partition reached, if above the last
    /// emitted one (every partition is finished, none holds the others back).
    pub fn flush(&mut self) -> Option<i64> {
        let max = self.partitions.values().filter_map(|p| p.watermark).max()?;
        if self.emitted.is_some_and(|e| max <= e) {
            return None;
        }
        self.emitted = Some(max);
        Some(max)
    }

    /// The minimum over the active partitions; `None` while an active one has no watermark yet
    /// or every partition is idle.
    fn combined(&self, now: Instant) -> Option<i64> {
        let idle = |part: &Part| {
            self.idle_timeout
                .is_some_and(|t| now.saturating_duration_since(part.last_record) >= t)
        };
        let mut min: Option<i64> = None;
        for part in self.partitions.values().filter(|p| !idle(p)) {
            let w = part.watermark?;
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        min
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::TimestampFormat;

    fn config(interval_ms: u64) -> EventTimeConfig {
        EventTimeConfig {
            field: "ts".into(),
            format: TimestampFormat::EpochMillis,
            max_out_of_orderness: Duration::from_millis(100),
            watermark_interval: Duration::from_millis(interval_ms),
        }
    }

    fn p(n: i32) -> Partition {
        (Arc::from("in"), n)
    }

    /// The slowest partition holds the watermark back; an idle one stops holding it back after
    /// `idle_timeout`, and holds it again once it has records.
    #[test]
    fn the_minimum_over_partitions_with_idle_ones_left_out() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = PartitionWatermarks::new(&config(0), Some(Duration::from_secs(5)));
        w.assign(p(0), at(0));
        w.assign(p(1), at(0));
        // Partition 1 has no record yet: nothing goes out.
        assert_eq!(w.on_record(&p(0), 1_000, at(10)), None);
        assert_eq!(w.on_record(&p(1), 500, at(20)), Some(399));
        assert_eq!(
            w.on_record(&p(0), 2_000, at(30)),
            None,
            "partition 1 is behind"
        );
        assert_eq!(w.on_record(&p(1), 1_500, at(40)), Some(1_399));
        // Partition 1 falls silent: after 5 s it is idle, and partition 0 alone counts.
        assert_eq!(w.on_record(&p(0), 3_000, at(1_000)), None);
        assert_eq!(w.poll(at(5_039)), None);
        assert_eq!(w.poll(at(5_040)), Some(2_899));
        // Back with a late record: it holds time again, which never goes backwards.
        assert_eq!(w.on_record(&p(1), 1_600, at(6_000)), None);
        // Partition 0 has been silent for 5 s by now: partition 1 alone counts.
        assert_eq!(w.on_record(&p(1), 4_000, at(6_010)), Some(3_899));
        // Partition 0 is back, ahead: the minimum is still partition 1's.
        assert_eq!(w.on_record(&p(0), 5_000, at(6_020)), None);
        // A revoked partition holds nothing back.
        w.revoke(&p(1));
        assert_eq!(w.on_record(&p(0), 6_000, at(6_030)), Some(5_899));
        assert_eq!(w.flush(), None);
    }

    /// Without `idle_timeout` a silent partition holds the watermark back for good (Flink's
    /// default); the interval spaces emissions; the end of a bounded input flushes the maximum.
    #[test]
    fn without_idleness_a_silent_partition_holds_time_and_the_interval_spaces_emissions() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = PartitionWatermarks::new(&config(200), None);
        w.assign(p(0), at(0));
        w.assign(p(1), at(0));
        w.on_record(&p(1), 100, at(0));
        assert_eq!(w.on_record(&p(0), 1_000, at(0)), Some(-1));
        assert_eq!(
            w.on_record(&p(1), 2_000, at(100)),
            None,
            "within the interval"
        );
        assert_eq!(w.poll(at(200)), Some(899));
        assert_eq!(w.poll(at(60_000)), None, "partition 0 is silent, not idle");
        assert_eq!(w.flush(), Some(1_899));
    }
}
