//! What the two users of Redis (`rate_limit.redis_url`, `request_cache.redis_url`) share: how
//! a URL is shown in logs, errors and `waio check` (never with its password), and how their
//! connection is made.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The connection kept in `slot`, made on first use: a lazy manager that connects on the first
/// call and again after a connection error, each call bounded by `call_timeout`. It never
/// retries by itself: its users try Redis again on their own schedule, never inside a call.
pub fn lazy_connection(
    slot: &Mutex<Option<ConnectionManager>>,
    client: &redis::Client,
    call_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(connection) = slot.as_ref() {
        return Ok(connection.clone());
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(call_timeout))
        .set_response_timeout(Some(call_timeout))
        .set_number_of_retries(0);
    let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
    *slot = Some(connection.clone());
    Ok(connection)
}

/// `url` with any password replaced by `***`.
pub fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// "HOST:PORT" of `url` (Redis's port 6379 when it names none); empty when it has no host.
pub fn host_port(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(6379))))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            shown("redis://user:secret@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(shown("redis://10.0.0.7/"), "redis://10.0.0.7/");
        assert_eq!(
            host_port("redis://:secret@cache.internal/2"),
            "cache.internal:6379"
        );
        assert_eq!(host_port("redis://127.0.0.1:7000"), "127.0.0.1:7000");
    }
}
