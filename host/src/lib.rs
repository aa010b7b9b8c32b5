//! waio: a Flink-compatible async I/O operator runtime whose user functions are WebAssembly
//! components. Data flows one way: source -> operator chain -> sink, with a dead-letter side output.

pub mod checkpoint;
pub mod connectors;
pub mod event_time;
pub mod io;
pub mod manifest;
pub mod metrics;
pub mod operator;
pub mod pipeline;
pub mod plugin;
pub mod project;
pub mod record;
