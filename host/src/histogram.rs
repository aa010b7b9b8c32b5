//! A histogram of u64 values (latencies in microseconds) made of atomic buckets, so the record
//! path records without a lock and any thread reads quantiles while the run goes on.
//!
//! Buckets are log-linear: values below 64 have a bucket each; above, every power of two is cut
//! into 64 buckets, so a quantile is within 1/64 (about 1.6 %) of the true value. A leaf module:
//! the outbound stack and the telemetry registry both keep histograms.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Exponents 6..=63 get 64 buckets each after the 64 exact ones.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
    /// Every value added up (for a Prometheus histogram's `_sum`).
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("max", &self.max())
            .finish()
    }
}

/// Values on their way into a [`Histogram`] (see [`Histogram::batch`]): readers may see a
/// bucket counted before the count until the batch is dropped. Values in a row that fall in one
/// bucket (records emitted together mostly do) are counted there with one atomic add.
pub struct HistogramBatch<'a> {
    histogram: &'a Histogram,
    count: u64,
    sum: u64,
    max: u64,
    /// The bucket of the last values, and how many of them are not counted in it yet.
    run: Option<(usize, u64)>,
}

impl HistogramBatch<'_> {
    pub fn record(&mut self, value: u64) {
        let bucket = bucket_of(value);
        match &mut self.run {
            Some((last, n)) if *last == bucket => *n += 1,
            run => {
                if let Some((last, n)) = run.replace((bucket, 1)) {
                    self.histogram.buckets[last].fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(value);
        self.max = self.max.max(value);
    }
}

impl Drop for HistogramBatch<'_> {
    fn drop(&mut self) {
        if self.count == 0 {
            return;
        }
        let h = self.histogram;
        if let Some((last, n)) = self.run.take() {
            h.buckets[last].fetch_add(n, Ordering::Relaxed);
        }
        h.count.fetch_add(self.count, Ordering::Relaxed);
        h.max.fetch_max(self.max, Ordering::Relaxed);
        h.sum.fetch_add(self.sum, Ordering::Relaxed);
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    let sub = (value >> shift) & (SUB - 1);
    ((exponent - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
}

/// The smallest value and the width of bucket `index`.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, 1);
    }
    let exponent = index / SUB - 1 + u64::from(SUB_BITS);
    let sub = index % SUB;
    let shift = exponent - u64::from(SUB_BITS);
    ((SUB | sub) << shift, 1 << shift)
}

impl Histogram {
    pub fn record(&self, value: u64) {
        // Relaxed: readers see a consistent enough picture; no other memory depends on it.
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records many values with one update of the count, sum and maximum (when the batch is
    /// dropped) instead of one per value: the operator records a latency per record it emits.
    pub fn batch(&self) -> HistogramBatch<'_> {
        HistogramBatch {
            histogram: self,
            count: 0,
            sum: 0,
            max: 0,
            run: None,
        }
    }

    /// Every value recorded, added up.
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// For each bound (ascending), how many values were at most that bound: the cumulative
    /// counts of a Prometheus histogram. A bucket is counted under a bound when its whole range
    /// is, so a value up to 1/64 below a bound may be counted under the next one.
    pub fn cumulative_counts(&self, bounds: &[u64]) -> Vec<u64> {
        let mut counts = Vec::with_capacity(bounds.len());
        let mut seen = 0;
        let mut buckets = self.buckets.iter().enumerate().peekable();
        for &bound in bounds {
            while let Some((index, bucket)) = buckets.peek() {
                let (low, width) = bucket_range(*index);
                if low.saturating_add(width - 1) > bound {
                    break;
                }
                seen += bucket.load(Ordering::Relaxed);
                buckets.next();
            }
            counts.push(seen);
        }
        counts
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The value below which a fraction `q` (0..=1) of the recorded values lie: the middle of
    /// that value's bucket, never above the largest value recorded. 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                let (low, width) = bucket_range(index);
                return (low + width / 2).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for value in (0..5000u64).chain([u64::MAX / 3, u64::MAX]) {
            let index = bucket_of(value);
            assert!(index >= last && index < BUCKETS, "{value} -> {index}");
            let (low, width) = bucket_range(index);
            assert!(
                low <= value && value - low < width,
                "{value} in [{low}, +{width})"
            );
            last = index;
        }
    }

    #[test]
    fn a_batch_records_what_one_call_per_value_records() {
        let (one_by_one, batched) = (Histogram::default(), Histogram::default());
        // Runs in one bucket, in the middle and at the end.
        let values = [5, 70, 70, 1_000_000, 3, 64, 64];
        let mut batch = batched.batch();
        for v in values {
            one_by_one.record(v);
            batch.record(v);
        }
        drop(batch);
        let bounds = [0, 3, 5, 64, 70, 1000, 2_000_000];
        assert_eq!(
            batched.cumulative_counts(&bounds),
            one_by_one.cumulative_counts(&bounds)
        );
        assert_eq!(
            (batched.count(), batched.sum(), batched.max()),
            (7, 1_000_276, 1_000_000)
        );
        drop(batched.batch());
        assert_eq!(batched.count(), 7, "an empty batch adds nothing");
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, expected) in [(0.5, 5000.0), (0.99, 9900.0), (0.01, 100.0)] {
            let got = h.value_at_quantile(q) as f64;
            assert!((got - expected).abs() / expected < 0.02, "q{q}: {got}");
        }
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.value_at_quantile(1.0), 10_000);
    }

    #[test]
    fn cumulative_counts_count_values_at_most_each_bound() {
        let h = Histogram::default();
        for v in [1, 5, 5, 63, 64, 1000, 5000, 1_000_000] {
            h.record(v);
        }
        assert_eq!(
            // 1000 is the start of the bucket [1000, 1008): counted from bound 1007 on.
            h.cumulative_counts(&[0, 5, 63, 1000, 1007, 10_000, u64::MAX]),
            vec![0, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(h.sum(), 1 + 5 + 5 + 63 + 64 + 1000 + 5000 + 1_000_000);
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let h = Histogram::default();
        assert_eq!(h.value_at_quantile(0.5), 0);
        h.record(3);
        h.record(3);
        h.record(40);
        assert_eq!(h.value_at_quantile(0.5), 3);
        assert_eq!(h.value_at_quantile(0.99), 40);
    }
}
