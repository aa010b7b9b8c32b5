//! The policy layer: what a plugin may send, and what of an answer it may see.
//!
//! Its request half, [`Policy::prepare`], runs synchronously before anything is sent: the URL's
//! host must be on the allowlist, header rules hold (no Host, no framing headers), and
//! `${secret:NAME}` placeholders are filled in, only for requests to the hosts each secret is
//! bound to (`[secrets.NAME] hosts`): that binding is what keeps a key away from servers that
//! would hand it back transformed (reversed, hashed, base64ed). A refusal never leaves the
//! machine.
//!
//! Its answer half, [`PolicyService`], is the top layer of the stack: every answer is decoded by
//! the transport (a plugin cannot choose the content encoding), an answer in an encoding the
//! host did not offer is refused, and the forms of a secret that a plain echo gives back (raw,
//! JSON-escaped, percent-encoded) are blanked out before the plugin sees it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RANGE};
use reqwest::{Method, Url};

use super::redact::Redactor;
use super::{OutboundError, Request, Response, Sending};
use crate::cache::CacheKey;

const SECRET_OPEN: &str = "${secret:";

/// A host a request may go to: a name or IP address, on one port or any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase host name or IP address (IPv6 without brackets).
    host: String,
    /// `None` = any port.
    port: Option<u16>,
}

impl HostPattern {
    pub fn new(host: impl Into<String>, port: Option<u16>) -> Self {
        HostPattern {
            host: host.into(),
            port,
        }
    }

    /// Whether a request to `host:port` matches. Host names compare case-insensitively; a
    /// bracketed IPv6 address (as `url` prints it) and a trailing root dot are accepted.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        host.eq_ignore_ascii_case(&self.host) && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = self.host.contains(':');
        match (bracket, self.port) {
            (false, None) => write!(f, "{}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
        }
    }
}

/// A secret granted to the plugin: its name in placeholders, its value, and the hosts that
/// requests carrying it may go to. `Debug` never shows the value.
#[derive(Clone)]
pub struct SecretGrant {
    pub name: String,
    pub value: String,
    pub hosts: Vec<HostPattern>,
}

impl fmt::Debug for SecretGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretGrant")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// A request that passed the policy, secrets filled in: the only kind the stack accepts.
/// Cheap to clone (the body is shared), for layers that send it more than once.
#[derive(Clone, Debug)]
pub struct PreparedRequest {
    method: Method,
    url: Url,
    /// Values that carry secrets are marked sensitive (kept out of `Debug` and HTTP/2 tables).
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    deadline: Option<Instant>,
    /// Tokens a tokens-per-minute limit charges for it in advance (0 without one).
    token_estimate: u64,
    /// Its request-cache key, made before secrets were filled in (`None`: no request cache).
    cache_key: Option<CacheKey>,
}

impl PreparedRequest {
    /// Tokens a tokens-per-minute limit charges for it in advance (0 without one).
    pub fn token_estimate(&self) -> u64 {
        self.token_estimate
    }

    /// The same request, charged `tokens` in advance by a rate limit.
    pub fn with_token_estimate(self, tokens: u64) -> Self {
        PreparedRequest {
            token_estimate: tokens,
            ..self
        }
    }

    /// Its request-cache key (`None`: not cached).
    pub fn cache_key(&self) -> Option<CacheKey> {
        self.cache_key
    }

    /// The same request under request-cache key `key`.
    pub fn with_cache_key(self, key: Option<CacheKey>) -> Self {
        PreparedRequest {
            cache_key: key,
            ..self
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// How long the whole exchange may take, answer body included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the answer stops being of use: no retry starts after it.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(super) fn into_parts(self) -> (Method, Url, HeaderMap, Bytes) {
        (self.method, self.url, self.headers, self.body)
    }
}

/// One operator's rules for its requests and answers.
pub struct Policy {
    allowed: Vec<HostPattern>,
    secrets: Vec<SecretGrant>,
    redactor: Redactor,
    default_timeout: Duration,
    /// The last URL that passed the checks, parsed. Plugins send most requests to one URL, and
    /// parsing it (host name rules included) was a tenth of the operator thread's time.
    last_url: Mutex<Option<(String, Url)>>,
}

impl Policy {
    /// Requests may go to `allowed` hosts and carry `secrets`; those without a timeout of their
    /// own get `default_timeout`.
    pub fn new(
        allowed: Vec<HostPattern>,
        secrets: Vec<SecretGrant>,
        default_timeout: Duration,
    ) -> Self {
        Policy {
            allowed,
            redactor: Redactor::new(secrets.iter().map(|s| s.value.as_str())),
            secrets,
            default_timeout,
            last_url: Mutex::new(None),
        }
    }

    /// Checks the request against the allowlist and the header rules, and fills in secrets.
    pub fn prepare(&self, request: Request) -> Result<PreparedRequest, OutboundError> {
        if let Redactor::Broken(why) = &self.redactor {
            return Err(OutboundError::Denied(format!(
                "the host could not prepare secret redaction ({why}), so this operator sends no \
                 requests"
            )));
        }
        let url = self.allowed_url(&request.url)?;
        let method = Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            OutboundError::InvalidRequest(format!("bad method {:?}", request.method))
        })?;

        let mut headers = HeaderMap::with_capacity(request.headers.len());
        let mut any_secret = false;
        for (name, value) in &request.headers {
            // Also refuses pseudo-headers such as `:authority` (a name may not contain ':').
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| OutboundError::InvalidRequest(format!("bad header name {name:?}")))?;
            match header_rule(&name) {
                HeaderRule::Pass => {}
                HeaderRule::Strip => continue,
                HeaderRule::Refuse(error) => return Err(error),
            }
            let carries_secret = value.contains(SECRET_OPEN);
            any_secret |= carries_secret;
            let value = self.fill_secrets(value, &url)?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                OutboundError::InvalidRequest(format!("bad value for header {name}"))
            })?;
            // Values that carry secrets stay out of debug output and HTTP/2 header tables.
            value.set_sensitive(carries_secret);
            headers.append(name, value);
        }
        if any_secret && headers.contains_key(RANGE) {
            return Err(OutboundError::Denied(
                "a request that carries a secret may not set a Range header: a part of the \
                 answer could cut an echoed secret in two, and neither piece would be blanked"
                    .into(),
            ));
        }

        Ok(PreparedRequest {
            method,
            url,
            headers,
            body: Bytes::from(request.body),
            timeout: request.timeout.unwrap_or(self.default_timeout),
            deadline: request.deadline,
            token_estimate: 0,
            cache_key: None,
        })
    }

    /// `url` parsed, if it is an http(s) URL to a host on the allowlist.
    fn allowed_url(&self, text: &str) -> Result<Url, OutboundError> {
        let mut last = self.last_url.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, url)) = last.as_ref() {
            if known == text {
                return Ok(url.clone());
            }
        }
        let url = Url::parse(text)
            .map_err(|e| OutboundError::InvalidRequest(format!("bad URL {text:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::InvalidRequest(format!(
                "unsupported URL scheme {:?} (only http and https)",
                url.scheme()
            )));
        }
        let (host, port) = host_and_port(&url)
            .ok_or_else(|| OutboundError::InvalidRequest(format!("URL {text:?} has no host")))?;
        if !self.allowed.iter().any(|rule| rule.allows(host, port)) {
            return Err(OutboundError::Denied(format!(
                "{host}:{port} is not in this plugin's allowed_hosts"
            )));
        }
        *last = Some((text.to_string(), url.clone()));
        Ok(url)
    }

    /// Replaces `${secret:NAME}` placeholders with the values of secrets granted to the plugin,
    /// if `url` goes to a host the secret is bound to.
    fn fill_secrets(&self, value: &str, url: &Url) -> Result<String, OutboundError> {
        if !value.contains(SECRET_OPEN) {
            return Ok(value.to_string());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find(SECRET_OPEN) {
            out.push_str(&rest[..start]);
            let after = &rest[start + SECRET_OPEN.len()..];
            let end = after.find('}').ok_or_else(|| {
                OutboundError::InvalidRequest("unterminated ${secret:...} placeholder".into())
            })?;
            let name = &after[..end];
            let secret = self.secrets.iter().find(|s| s.name == name).ok_or_else(|| {
                OutboundError::Denied(format!(
                    "secret {name:?} is not granted to this plugin (add it to the operator's secrets)"
                ))
            })?;
            // allowed_url has checked that the URL has a host.
            let (host, port) = host_and_port(url).unwrap_or(("", 0));
            if !secret.hosts.iter().any(|rule| rule.allows(host, port)) {
                let hosts: Vec<String> = secret.hosts.iter().map(ToString::to_string).collect();
                return Err(OutboundError::Denied(format!(
                    "secret {name:?} may not be sent to {host}:{port} (its hosts: {})",
                    hosts.join(", ")
                )));
            }
            out.push_str(&secret.value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// What of `answer` the plugin may see: refused if its encoding hides it from redaction,
    /// else with every echoed secret blanked out.
    pub fn screen_answer(&self, mut answer: Response) -> Result<Response, OutboundError> {
        // The transport removes the header of an encoding it decoded; one left is an encoding
        // the host did not offer, whose bytes redaction could not read. A broken answer, like
        // one over the size limit (`denied` would say that nothing left the machine).
        if self.redactor.is_active() {
            let encoding = answer
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("content-encoding"));
            if let Some((_, encoding)) = encoding {
                if !encoding.eq_ignore_ascii_case("identity") {
                    return Err(OutboundError::Connection(format!(
                        "answer refused: it is encoded with {encoding:?}, which the host did not \
                         offer and cannot decode to check it for secrets"
                    )));
                }
            }
        }
        self.redactor.redact(&mut answer)?;
        Ok(answer)
    }
}

/// The answer half of the policy as a layer: the top of the stack.
#[derive(Clone)]
pub struct PolicyLayer {
    policy: Arc<Policy>,
}

impl PolicyLayer {
    pub fn new(policy: Arc<Policy>) -> Self {
        PolicyLayer { policy }
    }
}

impl<S> tower::Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;

    fn layer(&self, inner: S) -> PolicyService<S> {
        PolicyService {
            policy: Arc::clone(&self.policy),
            inner,
        }
    }
}

/// Screens every answer of `inner` through [`Policy::screen_answer`].
#[derive(Clone)]
pub struct PolicyService<S> {
    policy: Arc<Policy>,
    inner: S,
}

impl<S> tower::Service<PreparedRequest> for PolicyService<S>
where
    S: tower::Service<PreparedRequest, Response = Response, Error = OutboundError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = OutboundError;
    type Future = Sending;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OutboundError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: PreparedRequest) -> Sending {
        let answer = self.inner.call(request);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move { policy.screen_answer(answer.await?) })
    }
}

/// The host and port a URL goes to; IPv6 hosts without brackets.
fn host_and_port(url: &Url) -> Option<(&str, u16)> {
    let host = url.host_str()?;
    // The URL crate keeps IPv6 hosts in brackets; allow rules are written without them.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, url.port_or_known_default().unwrap_or(80)))
}

/// What the policy does with a header a plugin set.
enum HeaderRule {
    Pass,
    /// Dropped without a word: the transport sets its own.
    Strip,
    Refuse(OutboundError),
}

fn header_rule(name: &HeaderName) -> HeaderRule {
    match name.as_str() {
        // Refused rather than overwritten: a plugin that sets it means another site than the
        // URL's, and should hear so instead of silently getting the URL host's answer.
        "host" => HeaderRule::Refuse(OutboundError::Denied(
            "a plugin may not set the Host header: it comes from the URL, whose host is checked \
             against allowed_hosts (another Host would reach another site behind an allowed \
             address)"
                .into(),
        )),
        // Framing and hop-by-hop headers belong to the host's HTTP client; set by a plugin they
        // could split one request into two (request smuggling) or change the connection.
        "content-length" | "transfer-encoding" | "te" | "trailer" | "connection" | "keep-alive"
        | "proxy-connection" | "upgrade" => {
            HeaderRule::Refuse(OutboundError::InvalidRequest(format!(
                "a plugin may not set the {name} header: the host's HTTP client frames the \
                 message and manages the connection"
            )))
        }
        // The transport offers only encodings it decodes; a plugin-chosen one could carry an
        // echoed secret past redaction.
        "accept-encoding" => HeaderRule::Strip,
        _ => HeaderRule::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake;
    use super::*;

    const KEY: &str = "sk-very-secret";

    fn rule(host: &str, port: Option<u16>) -> HostPattern {
        HostPattern::new(host, port)
    }

    /// Allows 127.0.0.1 on any port; the secret `key` may go to 127.0.0.1:8080 only.
    fn policy_with(value: &str) -> Policy {
        Policy::new(
            vec![rule("127.0.0.1", None)],
            vec![SecretGrant {
                name: "key".into(),
                value: value.into(),
                hosts: vec![rule("127.0.0.1", Some(8080))],
            }],
            Duration::from_secs(5),
        )
    }

    fn gateway() -> Policy {
        policy_with(KEY)
    }

    fn request(url: &str, headers: Vec<(String, String)>) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers,
            body: vec![],
            timeout: None,
            deadline: None,
        }
    }

    fn with_header(name: &str, value: &str) -> Request {
        request(
            "http://127.0.0.1:8080/",
            vec![(name.to_owned(), value.to_owned())],
        )
    }

    fn error(result: Result<PreparedRequest, OutboundError>) -> OutboundError {
        match result {
            Ok(_) => panic!("expected the request to be refused"),
            Err(e) => e,
        }
    }

    #[test]
    fn refuses_hosts_and_ports_off_the_allowlist() {
        let g = Policy::new(
            vec![rule("127.0.0.1", Some(8080))],
            vec![],
            Duration::from_secs(5),
        );
        assert!(g
            .prepare(request("http://127.0.0.1:8080/x", vec![]))
            .is_ok());
        for url in [
            "http://127.0.0.1:8081/x",
            "http://example.com/",
            "http://localhost:8080/",
        ] {
            match g.prepare(request(url, vec![])) {
                Err(OutboundError::Denied(why)) => assert!(why.contains("allowed_hosts"), "{why}"),
                Err(other) => panic!("{url}: expected denied, got {other}"),
                Ok(_) => panic!("{url}: expected denied, got a prepared request"),
            }
        }
        assert!(matches!(
            g.prepare(request("file:///etc/passwd", vec![])),
            Err(OutboundError::InvalidRequest(_))
        ));
    }

    #[test]
    fn fills_granted_secrets_and_refuses_others() {
        let g = gateway();
        let prepared = g
            .prepare(with_header("Authorization", "Bearer ${secret:key}"))
            .ok()
            .unwrap();
        assert_eq!(prepared.headers()["authorization"], "Bearer sk-very-secret");
        match g.prepare(with_header("x", "${secret:other}")) {
            Err(OutboundError::Denied(why)) => assert!(why.contains("other")),
            _ => panic!("an ungranted secret must be denied"),
        }
    }

    #[test]
    fn a_secret_goes_only_to_its_hosts() {
        let g = gateway();
        // 127.0.0.1:8081 is allowed, but not among the secret's hosts.
        let without = request("http://127.0.0.1:8081/", vec![]);
        assert!(g.prepare(without).is_ok());
        let with = request(
            "http://127.0.0.1:8081/",
            vec![("authorization".into(), "Bearer ${secret:key}".into())],
        );
        match g.prepare(with) {
            Err(OutboundError::Denied(why)) => {
                assert!(
                    why.contains("\"key\"")
                        && why.contains("127.0.0.1:8081")
                        && why.contains("127.0.0.1:8080")
                        && !why.contains(KEY),
                    "{why}"
                );
            }
            _ => panic!("a secret sent off its hosts must be denied"),
        }
    }

    #[test]
    fn the_host_header_and_framing_headers_are_refused() {
        let g = gateway();
        for name in ["Host", "hOsT"] {
            match error(g.prepare(with_header(name, "internal.example"))) {
                OutboundError::Denied(why) => assert!(why.contains("Host header"), "{why}"),
                other => panic!("{name}: expected denied, got {other}"),
            }
        }
        for name in [
            "content-length",
            "Transfer-Encoding",
            "te",
            "trailer",
            "connection",
            "keep-alive",
            "proxy-connection",
            "upgrade",
        ] {
            match error(g.prepare(with_header(name, "x"))) {
                OutboundError::InvalidRequest(why) => {
                    assert!(why.contains(&name.to_ascii_lowercase()), "{why}")
                }
                other => panic!("{name}: expected an invalid request, got {other}"),
            }
        }
        // HTTP/2 pseudo-headers are not header names a plugin can write.
        for name in [":authority", ":path"] {
            assert!(
                matches!(
                    error(g.prepare(with_header(name, "internal.example"))),
                    OutboundError::InvalidRequest(_)
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn a_plugin_set_accept_encoding_is_dropped() {
        let g = gateway();
        let prepared = g
            .prepare(request(
                "http://127.0.0.1:8080/",
                vec![
                    ("Accept-Encoding".into(), "x-reverse".into()),
                    ("x-other".into(), "kept".into()),
                ],
            ))
            .ok()
            .unwrap();
        assert!(prepared.headers().get("accept-encoding").is_none());
        assert_eq!(prepared.headers()["x-other"], "kept");
    }

    #[test]
    fn a_request_with_a_secret_may_not_ask_for_a_range() {
        let g = gateway();
        assert!(g.prepare(with_header("Range", "bytes=0-9")).is_ok());
        let both = request(
            "http://127.0.0.1:8080/",
            vec![
                ("authorization".into(), "Bearer ${secret:key}".into()),
                ("Range".into(), "bytes=0-9".into()),
            ],
        );
        match error(g.prepare(both)) {
            OutboundError::Denied(why) => assert!(why.contains("Range"), "{why}"),
            other => panic!("expected denied, got {other}"),
        }
    }

    #[test]
    fn host_patterns_match_names_in_any_case_ipv6_in_brackets_and_ports() {
        let any_port = rule("api.example.com", None);
        assert!(any_port.allows("api.example.COM", 443));
        assert!(any_port.allows("api.example.com.", 8080));
        assert!(!any_port.allows("evil-api.example.com", 443));
        assert!(!any_port.allows("api.example.com.evil", 443));
        let one_port = rule("127.0.0.1", Some(18080));
        assert!(one_port.allows("127.0.0.1", 18080));
        assert!(!one_port.allows("127.0.0.1", 18081));
        let v6 = rule("::1", Some(8080));
        assert!(v6.allows("[::1]", 8080) && v6.allows("::1", 8080));
        assert_eq!(v6.to_string(), "[::1]:8080");
        assert_eq!(any_port.to_string(), "api.example.com");
    }

    #[test]
    fn a_prepared_request_keeps_the_body_and_its_own_timeout_and_hides_secrets() {
        let g = gateway();
        let mut asked = with_header("authorization", "Bearer ${secret:key}");
        asked.method = "POST".into();
        asked.body = b"{\"q\":1}".to_vec();
        let prepared = g.prepare(asked.clone()).unwrap();
        assert_eq!(prepared.method(), Method::POST);
        assert_eq!(prepared.url().as_str(), "http://127.0.0.1:8080/");
        assert_eq!(&prepared.body()[..], b"{\"q\":1}");
        assert_eq!(prepared.timeout(), Duration::from_secs(5));
        assert!(prepared.headers()["authorization"].is_sensitive());
        assert!(!format!("{prepared:?}").contains(KEY));
        asked.timeout = Some(Duration::from_millis(250));
        assert_eq!(
            g.prepare(asked).unwrap().timeout(),
            Duration::from_millis(250)
        );
    }

    /// The answer `policy`'s layer hands up when the inner service answers `answer`, and the
    /// requests the inner service saw.
    async fn screened(
        policy: Policy,
        sent: Request,
        answer: Result<Response, OutboundError>,
    ) -> (Result<Response, OutboundError>, Vec<PreparedRequest>) {
        use tower::{Layer, ServiceExt};
        let policy = Arc::new(policy);
        let (inner, seen) = fake::service(move || answer.clone());
        let prepared = policy.prepare(sent).unwrap();
        let result = PolicyLayer::new(Arc::clone(&policy))
            .layer(inner)
            .oneshot(prepared)
            .await;
        let seen = seen.lock().unwrap().clone();
        (result, seen)
    }

    #[tokio::test]
    async fn the_layer_blanks_echoed_secrets_out_of_answers() {
        let echo = fake::ok(
            200,
            &[("x-echo", "Bearer sk-very-secret")],
            "{\"auth\":\"Bearer sk-very-secret\"}",
        );
        let sent = with_header("authorization", "Bearer ${secret:key}");
        let (result, seen) = screened(gateway(), sent, Ok(echo)).await;
        let answer = result.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"{\"auth\":\"Bearer [redacted]\"}");
        assert_eq!(answer.headers[0].1, "Bearer [redacted]");
        // The server got the secret, once.
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].headers()["authorization"], "Bearer sk-very-secret");
    }

    #[tokio::test]
    async fn the_layer_refuses_answers_in_an_encoding_it_cannot_read_when_there_are_secrets() {
        let encoded = fake::ok(200, &[("Content-Encoding", "br")], "opaque");
        let sent = request("http://127.0.0.1:8080/", vec![]);
        let (result, seen) = screened(gateway(), sent.clone(), Ok(encoded.clone())).await;
        match result {
            Err(OutboundError::Connection(why)) => {
                assert!(
                    why.contains("answer refused") && why.contains("\"br\""),
                    "{why}"
                )
            }
            other => panic!("expected a refused answer, got {other:?}"),
        }
        assert_eq!(seen.len(), 1);
        // identity is no encoding; without secrets there is nothing to hide.
        let plain = fake::ok(200, &[("content-encoding", "identity")], "ok");
        let (result, _) = screened(gateway(), sent.clone(), Ok(plain.clone())).await;
        assert_eq!(result.unwrap(), plain);
        let no_secrets = Policy::new(vec![rule("127.0.0.1", None)], vec![], Duration::ZERO);
        let (result, _) = screened(no_secrets, sent, Ok(encoded.clone())).await;
        assert_eq!(result.unwrap(), encoded);
    }

    #[tokio::test]
    async fn the_layer_passes_errors_of_the_inner_service_through() {
        let sent = request("http://127.0.0.1:8080/", vec![]);
        let (result, seen) = screened(gateway(), sent, Err(OutboundError::Timeout)).await;
        assert_eq!(result, Err(OutboundError::Timeout));
        assert_eq!(seen.len(), 1);
    }
}
