//! The budget guard (`[budget]`): how much may be spent in the run and in any rolling hour,
//! and what happens when it is: pause admitting records until the hour allows, or stop the
//! run. Pure logic: time is passed in, so the tests drive it with a fake clock.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// The length of the rolling window of `max_cost_per_hour`.
pub const HOUR: Duration = Duration::from_secs(3600);

/// What to do when a limit is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BudgetAction {
    /// Admit no new record until the rolling hour allows; in-flight records finish. A total
    /// limit never comes back: reaching it stops the run.
    Pause,
    /// Stop the run cleanly, as a graceful stop does.
    #[default]
    Stop,
}

/// `[budget]`, in US dollars.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetOptions {
    /// For the run, and across resumes from a checkpoint.
    pub max_cost_total: Option<f64>,
    /// Over any rolling hour.
    pub max_cost_per_hour: Option<f64>,
    pub action: BudgetAction,
}

/// Which limit was reached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    Total(f64),
    PerHour(f64),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Total(max) => write!(f, "max_cost_total ${max}"),
            Limit::PerHour(max) => write!(f, "max_cost_per_hour ${max}"),
        }
    }
}

/// A limit reached: the spend that reached it (the run's total, or the last hour's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reached {
    pub limit: Limit,
    pub spent: f64,
}

/// Whether new records may enter the pipeline now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    Open,
    /// The rolling hour is spent: admit nothing before this time.
    PausedUntil(Instant),
    /// The run is to stop.
    Stopped,
}

/// What a charge changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Charged {
    /// Nothing: within the limits, or already paused or stopped.
    Within,
    /// The hour's limit was reached under `pause`: admissions pause until then.
    Paused(Reached, Instant),
    /// A limit was reached that stops the run.
    Stop(Reached),
}

/// The spend so far and in the rolling hour, checked against the limits.
#[derive(Debug)]
pub struct BudgetGuard {
    options: BudgetOptions,
    total: f64,
    /// Spends of the last hour, oldest first, and their sum.
    hour: VecDeque<(Instant, f64)>,
    hour_sum: f64,
    paused: bool,
    stopped: Option<Reached>,
}

impl BudgetGuard {
    /// A guard that starts from `total` spent before (a resumed run), of which `last_hour`
    /// was spent at `last_hour_at` (within the hour before `now`).
    pub fn new(options: BudgetOptions, total: f64, last_hour: f64, last_hour_at: Instant) -> Self {
        let mut guard = BudgetGuard {
            options,
            total,
            hour: VecDeque::new(),
            hour_sum: 0.0,
            paused: false,
            stopped: None,
        };
        if last_hour > 0.0 {
            guard.hour.push_back((last_hour_at, last_hour));
            guard.hour_sum = last_hour;
        }
        guard
    }

    /// Adds a spend made at `now` and says whether it reached a limit.
    pub fn charge(&mut self, cost: f64, now: Instant) -> Charged {
        self.total += cost;
        self.hour.push_back((now, cost));
        self.hour_sum += cost;
        self.check(now)
    }

    /// Checks the limits as they stand at `now` (also at the start of a resumed run).
    pub fn check(&mut self, now: Instant) -> Charged {
        if self.stopped.is_some() {
            return Charged::Within;
        }
        if let Some(max) = self.options.max_cost_total {
            if self.total >= max {
                return self.stop(Limit::Total(max), self.total);
            }
        }
        self.forget_before(now);
        let Some(max) = self.options.max_cost_per_hour else {
            return Charged::Within;
        };
        if self.hour_sum < max {
            return Charged::Within;
        }
        let reached = Reached {
            limit: Limit::PerHour(max),
            spent: self.hour_sum,
        };
        match self.options.action {
            BudgetAction::Stop => self.stop(reached.limit, reached.spent),
            BudgetAction::Pause if self.paused => Charged::Within,
            BudgetAction::Pause => {
                self.paused = true;
                Charged::Paused(reached, self.allows_at(max))
            }
        }
    }

    fn stop(&mut self, limit: Limit, spent: f64) -> Charged {
        let reached = Reached { limit, spent };
        self.stopped = Some(reached);
        Charged::Stop(reached)
    }

    /// Whether new records may enter at `now`; the end of a pause is noticed here.
    pub fn admission(&mut self, now: Instant) -> Admission {
        if self.stopped.is_some() {
            return Admission::Stopped;
        }
        if !self.paused {
            return Admission::Open;
        }
        self.forget_before(now);
        match self.options.max_cost_per_hour {
            Some(max) if self.hour_sum >= max => Admission::PausedUntil(self.allows_at(max)),
            _ => {
                self.paused = false;
                Admission::Open
            }
        }
    }

    pub fn options(&self) -> &BudgetOptions {
        &self.options
    }

    pub fn action(&self) -> BudgetAction {
        self.options.action
    }

    /// Whether admissions are paused (as last checked).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The limit that stopped the run, if one did.
    pub fn stopped(&self) -> Option<Reached> {
        self.stopped
    }

    pub fn total(&self) -> f64 {
        self.total
    }

    /// The spend of the hour before `now`.
    pub fn last_hour(&mut self, now: Instant) -> f64 {
        self.forget_before(now);
        self.hour_sum
    }

    /// Drops the spends that left the rolling hour by `now`.
    fn forget_before(&mut self, now: Instant) {
        while let Some(&(at, cost)) = self.hour.front() {
            if at + HOUR > now {
                break;
            }
            self.hour.pop_front();
            self.hour_sum -= cost;
        }
        if self.hour.is_empty() {
            // No drift from adding and taking away floats.
            self.hour_sum = 0.0;
        }
    }

    /// When enough of the hour's spend will have left the window to be below `max` again.
    fn allows_at(&self, max: f64) -> Instant {
        let mut left = self.hour_sum;
        for &(at, cost) in &self.hour {
            left -= cost;
            if left < max {
                return at + HOUR;
            }
        }
        self.hour
            .back()
            .map_or_else(Instant::now, |(at, _)| *at + HOUR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(total: Option<f64>, per_hour: Option<f64>, action: BudgetAction) -> BudgetOptions {
        BudgetOptions {
            max_cost_total: total,
            max_cost_per_hour: per_hour,
            action,
        }
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(60 * m)
    }

    #[test]
    fn the_total_limit_stops_at_the_charge_that_reaches_it() {
        let t0 = Instant::now();
        let mut guard =
            BudgetGuard::new(options(Some(1.0), None, BudgetAction::Stop), 0.0, 0.0, t0);
        for i in 0..3 {
            assert_eq!(guard.charge(0.3, t0 + minutes(i)), Charged::Within);
        }
        assert_eq!(guard.admission(t0), Admission::Open);
        // 1.2 >= 1.0: the fourth charge trips it, within one charge of the limit.
        let Charged::Stop(reached) = guard.charge(0.3, t0 + minutes(4)) else {
            panic!("not stopped")
        };
        assert_eq!(reached.limit, Limit::Total(1.0));
        assert!((reached.spent - 1.2).abs() < 1e-9);
        assert_eq!(guard.admission(t0 + HOUR * 5), Admission::Stopped);
        // Reported once.
        assert_eq!(guard.charge(0.3, t0 + minutes(5)), Charged::Within);
    }

    #[test]
    fn pause_cannot_help_a_total_limit_it_stops_too() {
        let t0 = Instant::now();
        let mut guard =
            BudgetGuard::new(options(Some(1.0), None, BudgetAction::Pause), 0.0, 0.0, t0);
        assert!(matches!(guard.charge(1.0, t0), Charged::Stop(_)));
        assert_eq!(guard.admission(t0), Admission::Stopped);
    }

    #[test]
    fn a_resumed_run_over_its_total_stops_at_once() {
        let t0 = Instant::now();
        let mut guard =
            BudgetGuard::new(options(Some(1.0), None, BudgetAction::Stop), 1.5, 0.0, t0);
        assert!(matches!(guard.check(t0), Charged::Stop(r) if r.spent == 1.5));
        assert_eq!(guard.admission(t0), Admission::Stopped);
    }

    /// A fake clock: $0.40 at 0, 10 and 20 minutes reach the $1 hour; admissions pause until
    /// the first spend leaves the window (60 min), then open; the hour after that is counted
    /// afresh.
    #[test]
    fn the_hour_limit_pauses_until_the_rolling_hour_allows() {
        let t0 = Instant::now();
        let mut guard =
            BudgetGuard::new(options(None, Some(1.0), BudgetAction::Pause), 0.0, 0.0, t0);
        assert_eq!(guard.charge(0.4, t0), Charged::Within);
        assert_eq!(guard.charge(0.4, t0 + minutes(10)), Charged::Within);
        let Charged::Paused(reached, until) = guard.charge(0.4, t0 + minutes(20)) else {
            panic!("not paused")
        };
        assert_eq!(reached.limit, Limit::PerHour(1.0));
        assert!((reached.spent - 1.2).abs() < 1e-9);
        // Once the first $0.40 is an hour old, $0.80 is left in the window: below $1.
        assert_eq!(until, t0 + minutes(60));
        assert_eq!(
            guard.admission(t0 + minutes(30)),
            Admission::PausedUntil(until)
        );
        assert_eq!(
            guard.admission(t0 + minutes(59)),
            Admission::PausedUntil(until)
        );
        // A record in flight finishing during the pause adds to the hour, not to the pause count.
        assert_eq!(guard.charge(0.1, t0 + minutes(59)), Charged::Within);
        assert_eq!(guard.admission(t0 + minutes(60)), Admission::Open);
        assert!(!guard.paused());
        assert!((guard.last_hour(t0 + minutes(60)) - 0.9).abs() < 1e-9);
        assert!((guard.total() - 1.3).abs() < 1e-9);
        // Two hours later everything has left the window.
        assert_eq!(guard.last_hour(t0 + minutes(200)), 0.0);
    }

    #[test]
    fn the_pause_lasts_until_enough_spend_has_left_not_just_the_oldest() {
        let t0 = Instant::now();
        let mut guard =
            BudgetGuard::new(options(None, Some(1.0), BudgetAction::Pause), 0.0, 0.0, t0);
        guard.charge(0.1, t0);
        guard.charge(0.5, t0 + minutes(5));
        let Charged::Paused(_, until) = guard.charge(0.6, t0 + minutes(6)) else {
            panic!("not paused")
        };
        // Without the first 0.1, 1.1 is still spent: the second must leave too.
        assert_eq!(until, t0 + minutes(65));
    }

    #[test]
    fn the_hour_limit_under_stop_stops() {
        let t0 = Instant::now();
        let mut guard = BudgetGuard::new(
            options(Some(10.0), Some(1.0), BudgetAction::Stop),
            0.0,
            0.0,
            t0,
        );
        let Charged::Stop(reached) = guard.charge(1.0, t0) else {
            panic!("not stopped")
        };
        assert_eq!(reached.limit, Limit::PerHour(1.0));
    }

    #[test]
    fn a_resumed_run_keeps_the_last_hour_it_restored() {
        let t0 = Instant::now() + HOUR;
        // $0.90 spent in the hour before a checkpoint taken 30 minutes before the restart.
        let mut guard = BudgetGuard::new(
            options(None, Some(1.0), BudgetAction::Pause),
            5.0,
            0.9,
            t0 - minutes(30),
        );
        let Charged::Paused(_, until) = guard.charge(0.2, t0) else {
            panic!("not paused")
        };
        assert_eq!(until, t0 + minutes(30));
        assert!((guard.total() - 5.2).abs() < 1e-9);
    }
}
