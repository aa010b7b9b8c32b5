//! `/status.json`: the run summary so far, plus what only a live run has (records in flight,
//! breaker states, the budget's state). The status page draws it.

use serde::Serialize;

use crate::cost::BudgetState;
use crate::metrics::RunSummary;
use crate::pipeline::{PipelineHandle, RunState};
use crate::telemetry::OperatorTelemetry;

#[derive(Debug, Serialize)]
pub struct Status {
    pub pipeline: String,
    /// "running", "stopping" or "ended".
    pub state: &'static str,
    /// When it was read, Unix time in seconds (rates are differences over this).
    pub time_s: f64,
    /// The same object as `--summary-json`.
    pub summary: RunSummary,
    pub operators: Vec<LiveOperator>,
    /// `null` without `[budget]`.
    pub budget: Option<LiveBudget>,
}

#[derive(Debug, Serialize)]
pub struct LiveOperator {
    pub name: String,
    pub capacity: i64,
    pub in_flight: i64,
    /// One per endpoint the operator's circuit breaker has seen; empty without a breaker.
    pub breakers: Vec<LiveBreaker>,
}

#[derive(Debug, Serialize)]
pub struct LiveBreaker {
    pub endpoint: String,
    /// "closed", "half_open" or "open".
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct LiveBudget {
    pub spent_usd: f64,
    pub last_hour_usd: f64,
    pub max_cost_total: Option<f64>,
    pub max_cost_per_hour: Option<f64>,
    /// "open", "paused" or "stopped".
    pub state: &'static str,
}

/// What the run has done so far, read now.
pub fn read(handle: &PipelineHandle) -> Status {
    let status = handle.status();
    let telemetry = handle.telemetry();
    let cost = &telemetry.cost;
    let budget = cost.budget().map(|options| {
        let spend = cost.spend_state(std::time::Instant::now());
        LiveBudget {
            spent_usd: spend.total_usd,
            last_hour_usd: spend.last_hour_usd,
            max_cost_total: options.max_cost_total,
            max_cost_per_hour: options.max_cost_per_hour,
            state: match cost.budget_state() {
                BudgetState::Open => "open",
                BudgetState::Paused => "paused",
                BudgetState::Stopped => "stopped",
            },
        }
    });
    Status {
        pipeline: telemetry.name.clone(),
        state: match status.state {
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Ended => "ended",
        },
        time_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        summary: status.summary,
        operators: telemetry.operators.iter().map(|o| live(o)).collect(),
        budget,
    }
}

fn live(t: &OperatorTelemetry) -> LiveOperator {
    let breakers = match t.outbound.get() {
        Some(stats) if stats.breaker_on.get() => stats
            .endpoints()
            .into_iter()
            .map(|(endpoint, s)| LiveBreaker {
                endpoint,
                state: s.breaker().label(),
            })
            .collect(),
        _ => Vec::new(),
    };
    LiveOperator {
        name: t.name.clone(),
        capacity: t.capacity.get(),
        in_flight: t.in_flight.get(),
        breakers,
    }
}
