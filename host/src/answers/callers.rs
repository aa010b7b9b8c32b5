//! What `waio serve` counts per caller (the `X-Waio-Caller` header): batches, records, answers
//! by kind, records in flight. Read by `/metrics` (`waio_serve_*`) and the summary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::counters::{Counter, Gauge};

/// How a record was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Retriable,
    Fatal,
    Timeout,
    Lost,
    Invalid,
}

impl Answer {
    pub const ALL: [Answer; 6] = [
        Answer::Ok,
        Answer::Retriable,
        Answer::Fatal,
        Answer::Timeout,
        Answer::Lost,
        Answer::Invalid,
    ];

    /// The answer line's `error.kind` (and the metric's `outcome` label).
    pub fn name(self) -> &'static str {
        match self {
            Answer::Ok => "ok",
            Answer::Retriable => "retriable",
            Answer::Fatal => "fatal",
            Answer::Timeout => "timeout",
            Answer::Lost => "lost",
            Answer::Invalid => "invalid",
        }
    }
}

/// One caller's counts.
#[derive(Debug, Default)]
pub struct CallerStats {
    pub batches: Counter,
    pub records: Counter,
    pub in_flight: Gauge,
    answers: [Counter; 6],
}

impl CallerStats {
    pub fn answered(&self, answer: Answer) {
        self.answers[answer as usize].inc();
    }

    pub fn count(&self, answer: Answer) -> u64 {
        self.answers[answer as usize].get()
    }
}

/// Callers beyond this many are counted together as `other`: the header comes from outside,
/// and every distinct value would be a time series.
const MAX_CALLERS: usize = 256;

/// Every caller seen so far.
#[derive(Debug, Default)]
pub struct ServeTelemetry {
    callers: Mutex<BTreeMap<String, Arc<CallerStats>>>,
}

impl ServeTelemetry {
    /// The caller's counts (made on first sight).
    pub fn caller(&self, name: &str) -> Arc<CallerStats> {
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stats) = callers.get(name) {
            return Arc::clone(stats);
        }
        let name = if callers.len() < MAX_CALLERS {
            name
        } else {
            "other"
        };
        Arc::clone(callers.entry(name.to_string()).or_default())
    }

    /// Each caller's name and counts, by name.
    pub fn callers(&self) -> Vec<(String, Arc<CallerStats>)> {
        let callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        callers
            .iter()
            .map(|(name, stats)| (name.clone(), Arc::clone(stats)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_past_the_limit_share_one_entry() {
        let t = ServeTelemetry::default();
        for n in 0..MAX_CALLERS + 5 {
            t.caller(&format!("job/{n}")).records.inc();
        }
        let callers = t.callers();
        assert_eq!(callers.len(), MAX_CALLERS + 1);
        let other = callers.iter().find(|(name, _)| name == "other");
        assert_eq!(other.map(|(_, s)| s.records.get()), Some(5));
        assert_eq!(t.caller("job/0").records.get(), 1);
    }
}
