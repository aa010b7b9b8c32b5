//! The host's HTTP client for plugins: allowlist, secret injection, per-request time limits.
//!
//! A plugin hands over an [`HttpRequest`]; [`HttpGateway::prepare`] checks it synchronously (a
//! refused request never leaves the machine), then [`HttpGateway::execute`] performs it on reqwest.
//! Secrets are written into header values here, and any secret value found in an answer is
//! blanked out before the plugin sees it, so a plugin cannot read a key back through an echoing
//! server.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::manifest::{HostRule, HttpVersion, Secret};
use crate::plugin::bindings::{HttpError, HttpRequest, HttpResponse};

/// Largest answer body handed to a plugin.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

const SECRET_OPEN: &str = "${secret:";
const REDACTED: &[u8] = b"[redacted]";

pub struct HttpGateway {
    client: reqwest::Client,
    allowed: Vec<HostRule>,
    secrets: Vec<Secret>,
    default_timeout: Duration,
    /// The last URL that passed the checks, parsed. Plugins send most requests to one URL, and
    /// parsing it (host name rules included) was a tenth of the operator thread's time.
    last_url: Mutex<Option<(String, reqwest::Url)>>,
}

/// A request that passed the checks, ready to go.
pub struct PreparedRequest(reqwest::Request);

impl HttpGateway {
    pub fn new(
        client: reqwest::Client,
        allowed: Vec<HostRule>,
        secrets: Vec<Secret>,
        default_timeout: Duration,
    ) -> Self {
        HttpGateway {
            client,
            allowed,
            secrets,
            default_timeout,
            last_url: Mutex::new(None),
        }
    }

    /// A client shared by the operators that use `version` (connection pools are per client).
    pub fn shared_client(version: HttpVersion) -> Result<reqwest::Client, reqwest::Error> {
        let builder = match version {
            // Without this reqwest would offer HTTP/2 in TLS handshakes (ALPN) and then put
            // every request to that host on one connection, capped at the server's stream
            // limit (often 100): capacity would silently stop meaning requests in flight.
            HttpVersion::Http1 => reqwest::Client::builder().http1_only(),
            HttpVersion::Http2 => reqwest::Client::builder().http2_prior_knowledge(),
        };
        builder
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }

    /// Checks the request against the allowlist and fills in secrets.
    pub fn prepare(&self, request: HttpRequest) -> Result<PreparedRequest, HttpError> {
        let url = self.allowed_url(&request.url)?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("bad method {:?}", request.method)))?;

        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name {name:?}")))?;
            let carries_secret = value.contains(SECRET_OPEN);
            let value = self.fill_secrets(value)?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header {name}")))?;
            // Values that carry secrets stay out of debug output and HTTP/2 header tables.
            value.set_sensitive(carries_secret);
            headers.append(name, value);
        }

        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(self.default_timeout);
        let built = self
            .client
            .request(method, url)
            .headers(headers)
            .body(request.body)
            .timeout(timeout)
            .build()
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        Ok(PreparedRequest(built))
    }

    /// `url` parsed, if it is an http(s) URL to a host on the allowlist.
    fn allowed_url(&self, text: &str) -> Result<reqwest::Url, HttpError> {
        let mut last = self.last_url.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, url)) = last.as_ref() {
            if known == text {
                return Ok(url.clone());
            }
        }
        let url = reqwest::Url::parse(text)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL {text:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported URL scheme {:?} (only http and https)",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| HttpError::InvalidRequest(format!("URL {text:?} has no host")))?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(80);
        // The URL crate keeps IPv6 hosts in brackets; allow rules are written without them.
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        if !self.allowed.iter().any(|rule| rule.allows(bare_host, port)) {
            return Err(HttpError::Denied(format!(
                "{bare_host}:{port} is not in this plugin's allowed_hosts"
            )));
        }
        *last = Some((text.to_string(), url.clone()));
        Ok(url)
    }

    /// Replaces `${secret:NAME}` placeholders with the values of secrets granted to the plugin.
    fn fill_secrets(&self, value: &str) -> Result<String, HttpError> {
        if !value.contains(SECRET_OPEN) {
            return Ok(value.to_string());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find(SECRET_OPEN) {
            out.push_str(&rest[..start]);
            let after = &rest[start + SECRET_OPEN.len()..];
            let end = after.find('}').ok_or_else(|| {
                HttpError::InvalidRequest("unterminated ${secret:...} placeholder".into())
            })?;
            let name = &after[..end];
            let secret = self.secrets.iter().find(|s| s.name == name).ok_or_else(|| {
                HttpError::Denied(format!(
                    "secret {name:?} is not granted to this plugin (add it to the operator's secrets)"
                ))
            })?;
            out.push_str(&secret.value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Performs the request and reads the whole answer.
    pub async fn execute(&self, request: PreparedRequest) -> Result<HttpResponse, HttpError> {
        let response = self.client.execute(request.0).await.map_err(classify)?;
        let status = response.status().as_u16();
        let mut headers = Vec::with_capacity(response.headers().len());
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers.push((name.as_str().to_string(), value));
        }
        if let Some(len) = response.content_length() {
            if len as usize > MAX_BODY_BYTES {
                return Err(HttpError::Connection(format!(
                    "answer body of {len} bytes is larger than the {MAX_BODY_BYTES} bytes a plugin may receive"
                )));
            }
        }
        let body = response.bytes().await.map_err(classify)?.to_vec();
        if body.len() > MAX_BODY_BYTES {
            return Err(HttpError::Connection(format!(
                "answer body is larger than the {MAX_BODY_BYTES} bytes a plugin may receive"
            )));
        }
        let mut answer = HttpResponse {
            status,
            headers,
            body,
        };
        redact(&mut answer, &self.secrets);
        Ok(answer)
    }
}

fn classify(error: reqwest::Error) -> HttpError {
    if error.is_timeout() {
        HttpError::Timeout
    } else {
        // The chain of sources says what really happened (refused, reset, ...).
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        HttpError::Connection(message)
    }
}

/// Blanks out every secret value in the answer.
fn redact(answer: &mut HttpResponse, secrets: &[Secret]) {
    for secret in secrets {
        let needle = secret.value.as_bytes();
        if needle.is_empty() {
            continue;
        }
        if let Some(replaced) = replace_all(&answer.body, needle) {
            answer.body = replaced;
        }
        for (_, value) in answer.headers.iter_mut() {
            if value.contains(secret.value.as_str()) {
                *value = value.replace(secret.value.as_str(), "[redacted]");
            }
        }
    }
}

fn replace_all(haystack: &[u8], needle: &[u8]) -> Option<Vec<u8>> {
    let first = find(haystack, needle)?;
    let mut out = Vec::with_capacity(haystack.len());
    out.extend_from_slice(&haystack[..first]);
    out.extend_from_slice(REDACTED);
    let mut rest = &haystack[first + needle.len()..];
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(REDACTED);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied(why) => write!(f, "request denied: {why}"),
            HttpError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            HttpError::Timeout => write!(f, "request timed out"),
            HttpError::Connection(why) => write!(f, "connection failed: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> HttpGateway {
        HttpGateway::new(
            reqwest::Client::new(),
            vec![HostRule {
                host: "127.0.0.1".into(),
                port: Some(8080),
            }],
            vec![Secret {
                name: "key".into(),
                value: "sk-very-secret".into(),
            }],
            Duration::from_secs(5),
        )
    }

    fn request(url: &str, headers: Vec<(String, String)>) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers,
            body: vec![],
            timeout_ms: None,
        }
    }

    #[test]
    fn refuses_hosts_and_ports_off_the_allowlist() {
        let g = gateway();
        assert!(g
            .prepare(request("http://127.0.0.1:8080/x", vec![]))
            .is_ok());
        for url in [
            "http://127.0.0.1:8081/x",
            "http://example.com/",
            "http://localhost:8080/",
        ] {
            match g.prepare(request(url, vec![])) {
                Err(HttpError::Denied(why)) => assert!(why.contains("allowed_hosts"), "{why}"),
                Err(other) => panic!("{url}: expected denied, got {other}"),
                Ok(_) => panic!("{url}: expected denied, got a prepared request"),
            }
        }
        assert!(matches!(
            g.prepare(request("file:///etc/passwd", vec![])),
            Err(HttpError::InvalidRequest(_))
        ));
    }

    #[test]
    fn fills_granted_secrets_and_refuses_others() {
        let g = gateway();
        let prepared = g
            .prepare(request(
                "http://127.0.0.1:8080/",
                vec![("Authorization".into(), "Bearer ${secret:key}".into())],
            ))
            .ok()
            .unwrap();
        assert_eq!(
            prepared.0.headers()["authorization"],
            "Bearer sk-very-secret"
        );
        match g.prepare(request(
            "http://127.0.0.1:8080/",
            vec![("x".into(), "${secret:other}".into())],
        )) {
            Err(HttpError::Denied(why)) => assert!(why.contains("other")),
            _ => panic!("an ungranted secret must be denied"),
        }
    }

    #[test]
    fn redacts_secret_values_from_answers() {
        let mut answer = HttpResponse {
            status: 200,
            headers: vec![("echo".into(), "Bearer sk-very-secret".into())],
            body: b"{\"auth\":\"Bearer sk-very-secret\",\"again\":\"sk-very-secret\"}".to_vec(),
        };
        redact(&mut answer, &gateway().secrets);
        let body = String::from_utf8(answer.body).unwrap();
        assert!(!body.contains("sk-very-secret"), "{body}");
        assert_eq!(body.matches("[redacted]").count(), 2);
        assert_eq!(answer.headers[0].1, "Bearer [redacted]");
    }
}
