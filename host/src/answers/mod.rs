//! The answers `waio serve` owes its callers: a [`Ticket`] travels with each caller's record
//! through the operators and sends the record's answer line when its last copy is dropped, and
//! [`ServeTelemetry`] counts per caller. A leaf: records, operators, the sink and the metrics
//! use it without depending on the server (`crate::serve`).

mod callers;
mod ticket;

pub use callers::{Answer, CallerStats, ServeTelemetry};
pub use ticket::{error_line, FailureKind, Ticket};
