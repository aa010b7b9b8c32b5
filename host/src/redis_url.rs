//! How a Redis URL (`rate_limit.redis_url`, `request_cache.redis_url`) is shown in logs, errors
//! and `waio check`: never with its password.

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
