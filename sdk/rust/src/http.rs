//! Non-blocking HTTP, performed by the host.
//!
//! [`send`] returns at once; the answer arrives later in the callback. The host applies the
//! network allowlist, secrets (`${secret:NAME}` in header values), caching, rate limits, retries
//! and the per-request time limit.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::waio::enricher::types as wit;
use crate::Failure;

/// Starts `request` and returns at once. `then` runs later with the answer (any status counts as
/// an answer) or the reason there is none. It never runs inside this call.
///
/// A panic inside `then` fails the record that was being processed when `send` was called.
pub fn send(request: Request, then: impl FnOnce(Result<Response, HttpError>) + 'static) {
    crate::runtime::send(request.into(), Box::new(then));
}

/// An outgoing HTTP request. Build it with [`Request::get`], [`Request::post`] or
/// [`Request::new`], then add headers, a body and a time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute `http://` or `https://` URL; its host must be on the plugin's allowlist.
    pub url: String,
    /// Header names and values, in order. Values may hold `${secret:NAME}` placeholders.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Time limit in milliseconds; `None` means the host's default.
    pub timeout_ms: Option<u32>,
}

impl Request {
    /// A request with this method and URL, no headers and an empty body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new("POST", url)
    }

    /// Adds a header. The value may hold `${secret:NAME}`: the host puts the secret there.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets `value` as JSON body and the `content-type: application/json` header (unless a
    /// content type is already set).
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Request, Failure> {
        self.body = serde_json::to_vec(value)
            .map_err(|e| Failure::fatal(format!("cannot write the request body as JSON: {e}")))?;
        if !self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            self.headers
                .push(("content-type".into(), "application/json".into()));
        }
        Ok(self)
    }

    /// Sets the time limit of this request; `None` means the host's default.
    pub fn timeout_ms(mut self, timeout_ms: impl Into<Option<u32>>) -> Request {
        self.timeout_ms = timeout_ms.into();
        self
    }
}

impl From<Request> for wit::HttpRequest {
    fn from(r: Request) -> wit::HttpRequest {
        wit::HttpRequest {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
        }
    }
}

/// The answer to a [`Request`]: any status, 4xx and 5xx included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// How many bytes of a body an error message quotes.
const EXCERPT_BYTES: usize = 200;

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses the body as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The start of the body on one line, for error messages.
    pub fn body_excerpt(&self) -> String {
        if self.body.is_empty() {
            return "(empty body)".into();
        }
        let cut = self.body.len().min(EXCERPT_BYTES);
        let text = String::from_utf8_lossy(&self.body[..cut]);
        let mut excerpt = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if cut < self.body.len() {
            excerpt.push_str(" ...");
        }
        excerpt
    }

    /// `Ok(self)` for a 2xx answer, else a failure named after the status with an excerpt of the
    /// body: 408, 429 and 5xx are retriable (the server is busy or failing), every other status
    /// is fatal (the request itself is wrong, so a retry would get the same answer).
    pub fn error_for_status(self) -> Result<Response, Failure> {
        if self.is_success() {
            return Ok(self);
        }
        let message = format!("HTTP {}: {}", self.status, self.body_excerpt());
        if is_retriable_status(self.status) {
            Err(Failure::retriable(message))
        } else {
            Err(Failure::fatal(message))
        }
    }
}

/// Whether an answer with this status is worth retrying: 408, 429 and 5xx (the server is busy or
/// failing). The host applies the same rule (`wit/retriable-statuses.txt`).
pub fn is_retriable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

impl From<wit::HttpResponse> for Response {
    fn from(r: wit::HttpResponse) -> Response {
        Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The host refused the request: the destination is not on the allowlist, the request
    /// names a secret the plugin was not granted or sends one to a host outside the secret's
    /// `hosts`, or it sets `Host` or asks for a `Range` of an answer that a secret could be
    /// echoed in. Nothing left the machine.
    #[error("request denied: {0}")]
    Denied(String),
    /// The request is malformed (bad URL, method or header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No answer within the request's time limit.
    #[error("request timed out")]
    Timeout,
    /// Could not connect, or the connection broke before the answer was complete.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The host failed the request at once without sending it: the endpoint's circuit breaker
    /// is open because the provider keeps failing. Trying the record later, or calling a
    /// fallback provider, may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl HttpError {
    /// Whether a retry may succeed: true for timeouts, connection failures and unavailable
    /// endpoints.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            HttpError::Timeout | HttpError::Connection(_) | HttpError::Unavailable(_)
        )
    }
}

/// Timeouts, connection failures and unavailable endpoints are retriable; denied and invalid
/// requests are fatal.
impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Failure {
        if e.is_retriable() {
            Failure::retriable(e.to_string())
        } else {
            Failure::fatal(e.to_string())
        }
    }
}

impl From<wit::HttpError> for HttpError {
    fn from(e: wit::HttpError) -> HttpError {
        match e {
            wit::HttpError::Denied(m) => HttpError::Denied(m),
            wit::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
            wit::HttpError::Timeout => HttpError::Timeout,
            wit::HttpError::Connection(m) => HttpError::Connection(m),
            wit::HttpError::Unavailable(m) => HttpError::Unavailable(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_retriable_statuses_are_those_of_the_shared_table() {
        let table = include_str!("../../../wit/retriable-statuses.txt");
        let listed = |status: u16| {
            table
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .any(|l| match l.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).contains(&status),
                    None => l.parse::<u16>().unwrap() == status,
                })
        };
        for status in 100..=699 {
            assert_eq!(
                is_retriable_status(status),
                listed(status),
                "status {status}"
            );
        }
    }

    #[test]
    fn status_classification() {
        assert!(response(200, "{}").error_for_status().is_ok());
        for (status, kind) in [
            (429, FailureKind::Retriable),
            (500, FailureKind::Retriable),
            (503, FailureKind::Retriable),
            (408, FailureKind::Retriable),
            (400, FailureKind::Fatal),
            (401, FailureKind::Fatal),
            (404, FailureKind::Fatal),
            (302, FailureKind::Fatal),
        ] {
            let f = response(status, "slow down\n please")
                .error_for_status()
                .unwrap_err();
            assert_eq!(f.kind, kind, "status {status}");
            assert_eq!(f.message, format!("HTTP {status}: slow down please"));
        }
    }

    #[test]
    fn excerpt_is_short() {
        let long = "x".repeat(1000);
        let e = response(500, &long).body_excerpt();
        assert_eq!(e.len(), EXCERPT_BYTES + 4);
        assert!(e.ends_with(" ..."));
        assert_eq!(response(500, "").body_excerpt(), "(empty body)");
    }

    #[test]
    fn headers_are_case_insensitive() {
        assert_eq!(
            response(200, "").header("content-type"),
            Some("application/json")
        );
        assert_eq!(response(200, "").header("x-missing"), None);
    }

    #[test]
    fn json_body_sets_content_type_once() {
        let r = Request::post("http://x")
            .header("Content-Type", "application/vnd+json")
            .json(&serde_json::json!({"a": 1}))
            .unwrap();
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.body, br#"{"a":1}"#);
        let r = Request::post("http://x").json(&[1, 2]).unwrap();
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/json".into())]
        );
    }

    #[test]
    fn http_errors_map_to_failure_kinds() {
        assert!(Failure::from(HttpError::Timeout).is_retriable());
        assert!(Failure::from(HttpError::Connection("reset".into())).is_retriable());
        let denied = Failure::from(HttpError::Denied("host not allowed".into()));
        assert!(!denied.is_retriable());
        assert_eq!(denied.message, "request denied: host not allowed");
        assert!(!Failure::from(HttpError::InvalidRequest("bad url".into())).is_retriable());
    }

    #[test]
    fn an_unavailable_endpoint_is_retriable_and_says_why() {
        let error = HttpError::from(wit::HttpError::Unavailable(
            "circuit breaker open for https://api.example.com".into(),
        ));
        assert_eq!(
            error,
            HttpError::Unavailable("circuit breaker open for https://api.example.com".into())
        );
        assert!(error.is_retriable());
        let failure = Failure::from(error);
        assert!(failure.is_retriable());
        assert_eq!(
            failure.message,
            "unavailable: circuit breaker open for https://api.example.com"
        );
    }
}
