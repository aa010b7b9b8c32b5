//! Plugins built against an earlier `waio:enricher` contract still run: each version's imports
//! are served by the current host code through a small adapter, and their exports are called
//! one record at a time (neither earlier version has `async-invoke-batch`).
//!
//! `wit/compat/VERSION` holds each contract as it was released; those files never change.

pub mod v0_1;
pub mod v0_2;
