//! Logging through the host's log.

use crate::bindings::waio::enricher::logging;
use crate::bindings::waio::enricher::types::LogLevel;

fn log(level: LogLevel, message: &str) {
    logging::log(level, message);
}

/// Logs at trace level.
pub fn trace(message: impl AsRef<str>) {
    log(LogLevel::Trace, message.as_ref());
}

/// Logs at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(LogLevel::Debug, message.as_ref());
}

/// Logs at info level.
pub fn info(message: impl AsRef<str>) {
    log(LogLevel::Info, message.as_ref());
}

/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(LogLevel::Warn, message.as_ref());
}

/// Logs at error level.
pub fn error(message: impl AsRef<str>) {
    log(LogLevel::Error, message.as_ref());
}
