//! Plugins built against an earlier `waio:enricher` contract still run: each version's imports
//! are served by the current host code through a small adapter. The exports of 0.1.0 and 0.2.0
//! are called one record at a time (neither has `async-invoke-batch`); 0.3.0's and 0.4.0's take
//! batches through `async-invoke-batch`, a `result-future` per record.
//!
//! `wit/compat/VERSION` holds each contract as it was released; those files never change.

pub mod v0_1;
pub mod v0_2;
pub mod v0_3;
pub mod v0_4;
