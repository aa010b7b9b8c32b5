//! Outgoing I/O performed by the host on behalf of plugins.

pub mod http;
