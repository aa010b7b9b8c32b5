//! Between the plugin interface's HTTP types and the host's outbound ones: the one place that
//! knows both.

use std::fmt;
use std::time::Duration;

use super::bindings::{HttpError, HttpRequest, HttpResponse};
use crate::outbound::{OutboundError, Request, Response};

impl From<HttpRequest> for Request {
    fn from(r: HttpRequest) -> Request {
        Request {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout: r.timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            // The operator sets it from the record's timeout; a plugin does not choose it.
            deadline: None,
        }
    }
}

impl From<Response> for HttpResponse {
    fn from(r: Response) -> HttpResponse {
        HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<OutboundError> for HttpError {
    fn from(e: OutboundError) -> HttpError {
        match e {
            OutboundError::Denied(why) => HttpError::Denied(why),
            OutboundError::InvalidRequest(why) => HttpError::InvalidRequest(why),
            OutboundError::Timeout => HttpError::Timeout,
            OutboundError::Connection(why) => HttpError::Connection(why),
            OutboundError::Unavailable(why) => HttpError::Unavailable(why),
        }
    }
}

/// As the host's own error reads ([`OutboundError`]).
impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(why) => write!(f, "request denied: {why}"),
            HttpError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            HttpError::Timeout => write!(f, "request timed out"),
            HttpError::Connection(why) => write!(f, "connection failed: {why}"),
            HttpError::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_request_keeps_everything_and_its_timeout_in_milliseconds() {
        let request = Request::from(HttpRequest {
            method: "POST".into(),
            url: "http://127.0.0.1:1/".into(),
            headers: vec![("a".into(), "b".into())],
            body: b"x".to_vec(),
            timeout_ms: Some(1500),
        });
        assert_eq!(request.method, "POST");
        assert_eq!(request.url, "http://127.0.0.1:1/");
        assert_eq!(request.headers, vec![("a".to_string(), "b".to_string())]);
        assert_eq!(request.body, b"x");
        assert_eq!(request.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(request.deadline, None);
        let without = HttpRequest {
            method: "GET".into(),
            url: String::new(),
            headers: vec![],
            body: vec![],
            timeout_ms: None,
        };
        assert_eq!(Request::from(without).timeout, None);
    }

    #[test]
    fn errors_keep_their_kind_and_text() {
        for error in [
            OutboundError::Denied("no".into()),
            OutboundError::InvalidRequest("bad".into()),
            OutboundError::Timeout,
            OutboundError::Connection("reset".into()),
        ] {
            let text = error.to_string();
            let converted = HttpError::from(error.clone());
            assert_eq!(converted.to_string(), text);
            let same_kind = matches!(
                (&error, &converted),
                (OutboundError::Denied(_), HttpError::Denied(_))
                    | (
                        OutboundError::InvalidRequest(_),
                        HttpError::InvalidRequest(_)
                    )
                    | (OutboundError::Timeout, HttpError::Timeout)
                    | (OutboundError::Connection(_), HttpError::Connection(_))
            );
            assert!(same_kind, "{text}");
        }
        let unavailable = HttpError::from(OutboundError::Unavailable("breaker open".into()));
        assert!(matches!(&unavailable, HttpError::Unavailable(why) if why == "breaker open"));
        assert_eq!(
            HttpError::Unavailable("circuit breaker open for http://127.0.0.1:9".into())
                .to_string(),
            "unavailable: circuit breaker open for http://127.0.0.1:9"
        );
        let answer = HttpResponse::from(Response {
            status: 503,
            headers: vec![("retry-after".into(), "1".into())],
            body: b"busy".to_vec(),
            from_cache: false,
        });
        assert_eq!((answer.status, answer.body.as_slice()), (503, &b"busy"[..]));
        assert_eq!(answer.headers, vec![("retry-after".into(), "1".into())]);
    }
}
