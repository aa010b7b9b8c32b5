//! Cost accounting and the budget guard.
//!
//! The pieces, one concern each:
//! - [`pricing`]: the price table (`[pricing."MODEL"]`), dollars per million tokens.
//! - [`usage`]: live tokens and cost per model, one set per operator (in its telemetry).
//! - [`budget`]: the guard's logic (`[budget]`: a total, a rolling hour, pause or stop), with
//!   time passed in.
//!
//! [`CostControl`] ties them together for a run: every operator's core hands it the usage its
//! plugin reports, at the moment it is reported; it prices the tokens (warning once per model
//! without a price), adds them to the operator's counters and charges the budget, which may
//! pause admissions or stop the run there, within one request's cost. Nothing here knows the
//! manifest or the pipeline: `pipeline::build` makes it, and gives it the hook that stops the
//! run.

pub mod budget;
pub mod pricing;
pub mod usage;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub use budget::{Admission, BudgetAction, BudgetGuard, BudgetOptions, Charged, Limit, Reached};
pub use pricing::{Price, PriceTable};
pub use usage::{ModelUsage, UsageByModel};

/// What a checkpoint keeps of the spend, so that a resumed run goes on counting from it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpendState {
    /// Dollars spent by the run so far (priced usage only), resumed runs included.
    pub total_usd: f64,
    /// Of which in the hour before the checkpoint.
    pub last_hour_usd: f64,
}

/// Why the run was stopped by its budget: the message `waio run` ends with (exit code 3).
/// Where a budget guard is, as an observer (metrics, the status page) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetState {
    /// Records are admitted.
    Open,
    /// The per-hour limit holds admissions until the rolling hour allows again.
    Paused,
    /// A limit stopped the run.
    Stopped,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BudgetStop {
    pub reached: Reached,
    /// When the limit was reached (wall clock).
    pub at: SystemTime,
    /// It was already reached when the run started (a resumed run).
    pub at_start: bool,
    pub action: BudgetAction,
}

impl std::fmt::Display for BudgetStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Reached { limit, spent } = self.reached;
        let time = humantime::format_rfc3339_seconds(self.at);
        let what = match limit {
            Limit::Total(_) => "spent",
            Limit::PerHour(_) => "spent in the last hour",
        };
        if self.at_start {
            write!(f, "budget: {limit} was already reached when the run started (${spent:.6} {what}, at {time}); nothing new was invoked")?;
        } else {
            write!(f, "budget: {limit} reached at {time} (${spent:.6} {what}); the run was stopped cleanly: nothing new was invoked, records in flight were finished")?;
        }
        if let (Limit::Total(_), BudgetAction::Pause) = (limit, self.action) {
            write!(
                f,
                " (action \"pause\" cannot wait for a total limit: it stops)"
            )?;
        }
        match limit {
            Limit::Total(_) => write!(f, "; raise max_cost_total to go on"),
            Limit::PerHour(_) => write!(f, "; run again later to go on"),
        }
    }
}

/// The run's cost accounts and budget guard, shared by its operators.
#[derive(Debug, Default)]
pub struct CostControl {
    prices: PriceTable,
    /// Whether a `[budget]` guards the run: without one, admission is asked per record and
    /// answered without taking the lock.
    guarded: bool,
    state: Mutex<State>,
    /// Pauses of admissions the guard made (`pause` on the hour's limit).
    pauses: AtomicU64,
    /// Set once, when a limit stops the run.
    stop: OnceLock<BudgetStop>,
    /// What stops the run (the pipeline's graceful stop), set once the run has started.
    stop_hook: OnceLock<StopHook>,
}

#[derive(Debug, Default)]
struct State {
    /// Dollars spent, resumed runs included (also kept without a budget, for checkpoints).
    total: f64,
    /// Spent before this run (restored from the checkpoint).
    restored: f64,
    guard: Option<BudgetGuard>,
    action: BudgetAction,
    /// Models without a price already warned about.
    warned: HashSet<String>,
}

/// What stops the run.
struct StopHook(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for StopHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopHook")
    }
}

impl CostControl {
    /// Pauses of admissions the guard made (`pause` on the hour's limit).
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Accounts priced by `prices`, guarded by `budget` if given, going on from `restored`
    /// (the spend a checkpoint kept, `age` old at `now`).
    pub fn new(
        prices: PriceTable,
        budget: Option<BudgetOptions>,
        restored: SpendState,
        age: Duration,
        now: Instant,
    ) -> Self {
        let guard = budget.map(|options| {
            let last_hour = if age < budget::HOUR {
                restored.last_hour_usd
            } else {
                0.0
            };
            let at = now.checked_sub(age).unwrap_or(now);
            BudgetGuard::new(options, restored.total_usd, last_hour, at)
        });
        let control = CostControl {
            prices,
            guarded: guard.is_some(),
            state: Mutex::new(State {
                total: restored.total_usd,
                restored: restored.total_usd,
                action: guard
                    .as_ref()
                    .map_or_else(BudgetAction::default, |g| g.action()),
                guard,
                warned: HashSet::new(),
            }),
            ..CostControl::default()
        };
        let charged = control.lock().guard.as_mut().map(|g| g.check(now));
        if let Some(charged) = charged {
            control.react(charged, true);
        }
        control
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `input_tokens` and `output_tokens` of `model` cost at the run's prices (`None`:
    /// the model has no price). Charges nothing: for what a cache saved.
    pub fn price(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Option<f64> {
        self.prices
            .price(model)
            .map(|p| p.cost(input_tokens, output_tokens))
    }

    /// Usage a plugin reported at `now`: added to its operator's `counters`, priced, charged
    /// to the budget. A model without a price is counted, never costed, and warned about once
    /// when the manifest prices any model.
    pub fn record(
        &self,
        counters: &UsageByModel,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
        now: Instant,
    ) {
        let cost = self
            .prices
            .price(model)
            .map(|p| p.cost(input_tokens, output_tokens));
        counters.add(model, input_tokens, output_tokens, cost);
        let mut state = self.lock();
        let Some(cost) = cost else {
            // Without any [pricing] nobody asked for costs: the summary alone says unknown.
            let asked = !self.prices.is_empty() || state.guard.is_some();
            if asked && state.warned.insert(model.to_string()) {
                let guard = if state.guard.is_some() {
                    "; the [budget] guard cannot count them"
                } else {
                    ""
                };
                tracing::warn!(
                    model,
                    "model {model:?} has no price in [pricing]; its {} tokens (and any later ones) are not costed: the summary shows its cost as unknown{guard}",
                    input_tokens.saturating_add(output_tokens)
                );
            }
            return;
        };
        state.total += cost;
        let charged = state.guard.as_mut().map(|g| g.charge(cost, now));
        drop(state);
        if let Some(charged) = charged {
            self.react(charged, false);
        }
    }

    /// Logs a pause or stops the run, as the guard decided.
    fn react(&self, charged: Charged, at_start: bool) {
        match charged {
            Charged::Within => {}
            Charged::Paused(Reached { limit, spent }, until) => {
                // Relaxed: a count read on its own.
                self.pauses.fetch_add(1, Ordering::Relaxed);
                let wait = until.saturating_duration_since(Instant::now());
                let resume = humantime::format_rfc3339_seconds(SystemTime::now() + wait);
                tracing::warn!(
                    "budget: {limit} reached (${spent:.6} spent in the last hour): no new record is admitted until {resume} (in {}), when the rolling hour allows; records in flight finish",
                    humantime::format_duration(Duration::from_secs(wait.as_secs()))
                );
            }
            Charged::Stop(reached) => {
                let stop = BudgetStop {
                    reached,
                    at: SystemTime::now(),
                    at_start,
                    action: self.lock().action,
                };
                tracing::warn!("{stop}");
                if self.stop.set(stop).is_ok() {
                    if let Some(hook) = self.stop_hook.get() {
                        (hook.0)();
                    }
                }
            }
        }
    }

    /// Sets what stops the run when a limit is reached; called at once if one already was.
    pub fn on_stop(&self, hook: impl Fn() + Send + Sync + 'static) {
        if self.stop_hook.set(StopHook(Box::new(hook))).is_err() {
            return;
        }
        if self.stop.get().is_some() {
            if let Some(hook) = self.stop_hook.get() {
                (hook.0)();
            }
        }
    }

    /// Whether a `[budget]` guards the run (else every admission is open).
    pub fn guarded(&self) -> bool {
        self.guarded
    }

    /// Whether new records may enter the pipeline at `now`. Logs the end of a pause.
    pub fn admission(&self, now: Instant) -> Admission {
        if !self.guarded {
            return Admission::Open;
        }
        let mut state = self.lock();
        let Some(guard) = state.guard.as_mut() else {
            return Admission::Open;
        };
        let was_paused = guard.paused();
        let admission = guard.admission(now);
        if was_paused && admission == Admission::Open {
            tracing::info!("budget: the rolling hour allows again: admitting records");
        }
        admission
    }

    /// The limit that stopped the run, if one did.
    pub fn stopped(&self) -> Option<&BudgetStop> {
        self.stop.get()
    }

    /// Dollars spent so far (priced usage), resumed runs included.
    pub fn spent(&self) -> f64 {
        self.lock().total
    }

    /// Dollars spent before this run (restored from its checkpoint).
    pub fn restored(&self) -> f64 {
        self.lock().restored
    }

    /// What a checkpoint taken at `now` keeps.
    pub fn spend_state(&self, now: Instant) -> SpendState {
        let mut state = self.lock();
        let last_hour_usd = state.guard.as_mut().map_or(0.0, |g| g.last_hour(now));
        SpendState {
            total_usd: state.total,
            last_hour_usd,
        }
    }

    /// The limits, if a budget is set.
    pub fn budget(&self) -> Option<BudgetOptions> {
        self.lock().guard.as_ref().map(|g| g.options().clone())
    }

    /// Where the budget guard is now (open without a budget).
    pub fn budget_state(&self) -> BudgetState {
        if self.stop.get().is_some() {
            return BudgetState::Stopped;
        }
        match self.lock().guard.as_ref() {
            Some(guard) if guard.stopped().is_some() => BudgetState::Stopped,
            Some(guard) if guard.paused() => BudgetState::Paused,
            _ => BudgetState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn prices() -> PriceTable {
        PriceTable::new(BTreeMap::from([(
            "small".to_string(),
            Price {
                input_per_million: 1.0,
                output_per_million: 2.0,
            },
        )]))
    }

    fn stop_at(total: f64) -> Option<BudgetOptions> {
        Some(BudgetOptions {
            max_cost_total: Some(total),
            ..BudgetOptions::default()
        })
    }

    #[test]
    fn usage_is_priced_per_model_and_an_unpriced_one_is_counted_not_costed() {
        let control = CostControl::new(
            prices(),
            None,
            SpendState::default(),
            Duration::ZERO,
            Instant::now(),
        );
        let counters = UsageByModel::default();
        let now = Instant::now();
        control.record(&counters, "small", 1_000_000, 500_000, now);
        control.record(&counters, "mystery", 10, 10, now);
        control.record(&counters, "mystery", 5, 0, now);
        let read = counters.read();
        assert_eq!(read[0].model, "mystery");
        assert_eq!((read[0].input_tokens, read[0].cost_usd), (15, None));
        assert_eq!(read[1].cost_usd, Some(2.0));
        assert_eq!(control.spent(), 2.0);
        assert_eq!(control.lock().warned.len(), 1, "warned once per model");
        assert_eq!(control.admission(now), Admission::Open);
    }

    #[test]
    fn without_any_prices_usage_is_counted_and_nobody_is_warned() {
        let control = CostControl::new(
            PriceTable::default(),
            None,
            SpendState::default(),
            Duration::ZERO,
            Instant::now(),
        );
        let counters = UsageByModel::default();
        control.record(&counters, "mystery", 10, 10, Instant::now());
        assert_eq!(counters.read()[0].cost_usd, None);
        assert!(control.lock().warned.is_empty());
    }

    #[test]
    fn reaching_the_total_calls_the_stop_hook_once_with_the_spend() {
        let control = CostControl::new(
            prices(),
            stop_at(1.0),
            SpendState::default(),
            Duration::ZERO,
            Instant::now(),
        );
        let stops = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&stops);
        control.on_stop(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let counters = UsageByModel::default();
        let now = Instant::now();
        control.record(&counters, "small", 600_000, 0, now);
        assert_eq!(stops.load(Ordering::SeqCst), 0);
        control.record(&counters, "small", 600_000, 0, now);
        control.record(&counters, "small", 600_000, 0, now);
        assert_eq!(stops.load(Ordering::SeqCst), 1);
        let stop = control.stopped().expect("stopped");
        assert_eq!(stop.reached.limit, Limit::Total(1.0));
        assert!((stop.reached.spent - 1.2).abs() < 1e-9);
        let message = stop.to_string();
        assert!(
            message.starts_with("budget: max_cost_total $1 reached at "),
            "{message}"
        );
        assert!(message.contains("($1.200000 spent)"), "{message}");
        assert_eq!(control.admission(now), Admission::Stopped);
    }

    #[test]
    fn a_run_resumed_over_its_total_stops_when_the_hook_is_set() {
        let restored = SpendState {
            total_usd: 1.5,
            last_hour_usd: 0.0,
        };
        let control = CostControl::new(
            prices(),
            stop_at(1.0),
            restored,
            Duration::from_secs(5),
            Instant::now(),
        );
        let stops = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&stops);
        control.on_stop(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(stops.load(Ordering::SeqCst), 1);
        let stop = control.stopped().expect("stopped");
        assert!(stop.at_start);
        assert!(stop
            .to_string()
            .contains("already reached when the run started"));
        assert_eq!(control.restored(), 1.5);
        assert_eq!(control.spend_state(Instant::now()).total_usd, 1.5);
    }

    #[test]
    fn the_checkpointed_spend_keeps_the_last_hour_under_a_per_hour_limit() {
        let budget = Some(BudgetOptions {
            max_cost_per_hour: Some(10.0),
            action: BudgetAction::Pause,
            ..BudgetOptions::default()
        });
        let now = Instant::now();
        let control =
            CostControl::new(prices(), budget, SpendState::default(), Duration::ZERO, now);
        control.record(&UsageByModel::default(), "small", 3_000_000, 0, now);
        assert_eq!(
            control.spend_state(now),
            SpendState {
                total_usd: 3.0,
                last_hour_usd: 3.0
            }
        );
    }
}
