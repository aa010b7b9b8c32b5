//! Outgoing I/O performed by the host on behalf of plugins.

pub mod dispatch;
pub mod http;
