//! The host's HTTP client for plugins: allowlist, header rules, secret injection, per-request
//! time limits.
//!
//! A plugin hands over an [`HttpRequest`]; [`HttpGateway::prepare`] checks it synchronously (a
//! refused request never leaves the machine), then [`HttpGateway::execute`] performs it on reqwest.
//! Secrets are written into header values here, only for requests to the hosts each secret is
//! bound to (`[secrets.NAME] hosts`): that binding is what keeps a key away from servers that
//! would hand it back transformed (reversed, hashed, base64ed). On top of it, every answer is
//! decoded by the transport (a plugin cannot choose the content encoding) and the forms of a
//! secret that a plain echo gives back (raw, JSON-escaped, percent-encoded) are blanked out before
//! the plugin sees it.

use std::sync::Mutex;
use std::time::Duration;

use aho_corasick::{AhoCorasick, MatchKind};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, RANGE};

use crate::manifest::{HostRule, HttpVersion, Secret};
use crate::plugin::bindings::{HttpError, HttpRequest, HttpResponse};

/// Largest answer body handed to a plugin (after decompression).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

const SECRET_OPEN: &str = "${secret:";
const REDACTED: &[u8] = b"[redacted]";

pub struct HttpGateway {
    client: reqwest::Client,
    allowed: Vec<HostRule>,
    secrets: Vec<Secret>,
    redactor: Redactor,
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
            redactor: Redactor::new(&secrets),
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
            // The client offers only the encodings it decodes (gzip, deflate) and decodes the
            // answer, so redaction sees plain text.
            .gzip(true)
            .deflate(true)
            .build()
    }

    /// Checks the request against the allowlist and the header rules, and fills in secrets.
    pub fn prepare(&self, request: HttpRequest) -> Result<PreparedRequest, HttpError> {
        if let Redactor::Broken(why) = &self.redactor {
            return Err(HttpError::Denied(format!(
                "the host could not prepare secret redaction ({why}), so this operator sends no \
                 requests"
            )));
        }
        let url = self.allowed_url(&request.url)?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("bad method {:?}", request.method)))?;

        let mut headers = HeaderMap::with_capacity(request.headers.len());
        let mut any_secret = false;
        for (name, value) in &request.headers {
            // Also refuses pseudo-headers such as `:authority` (a name may not contain ':').
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name {name:?}")))?;
            match header_rule(&name) {
                HeaderRule::Pass => {}
                HeaderRule::Strip => continue,
                HeaderRule::Refuse(error) => return Err(error),
            }
            let carries_secret = value.contains(SECRET_OPEN);
            any_secret |= carries_secret;
            let value = self.fill_secrets(value, &url)?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header {name}")))?;
            // Values that carry secrets stay out of debug output and HTTP/2 header tables.
            value.set_sensitive(carries_secret);
            headers.append(name, value);
        }
        if any_secret && headers.contains_key(RANGE) {
            return Err(HttpError::Denied(
                "a request that carries a secret may not set a Range header: a part of the \
                 answer could cut an echoed secret in two, and neither piece would be blanked"
                    .into(),
            ));
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
        let (host, port) = host_and_port(&url)
            .ok_or_else(|| HttpError::InvalidRequest(format!("URL {text:?} has no host")))?;
        if !self.allowed.iter().any(|rule| rule.allows(host, port)) {
            return Err(HttpError::Denied(format!(
                "{host}:{port} is not in this plugin's allowed_hosts"
            )));
        }
        *last = Some((text.to_string(), url.clone()));
        Ok(url)
    }

    /// Replaces `${secret:NAME}` placeholders with the values of secrets granted to the plugin,
    /// if `url` goes to a host the secret is bound to.
    fn fill_secrets(&self, value: &str, url: &reqwest::Url) -> Result<String, HttpError> {
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
            // allowed_url has checked that the URL has a host.
            let (host, port) = host_and_port(url).unwrap_or(("", 0));
            if !secret.hosts.iter().any(|rule| rule.allows(host, port)) {
                let hosts: Vec<String> = secret.hosts.iter().map(ToString::to_string).collect();
                return Err(HttpError::Denied(format!(
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

    /// Performs the request and reads the whole answer.
    pub async fn execute(&self, request: PreparedRequest) -> Result<HttpResponse, HttpError> {
        let mut response = self.client.execute(request.0).await.map_err(classify)?;
        let status = response.status().as_u16();
        // The transport removes the header of an encoding it decoded; one left is an encoding
        // the host did not offer, whose bytes redaction could not read. A broken answer, like
        // one over the size limit (`denied` would say that nothing left the machine).
        if self.redactor.is_active() {
            if let Some(encoding) = response.headers().get(CONTENT_ENCODING) {
                if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
                    return Err(HttpError::Connection(format!(
                        "answer refused: it is encoded with {:?}, which the host did not offer \
                         and cannot decode to check it for secrets",
                        String::from_utf8_lossy(encoding.as_bytes())
                    )));
                }
            }
        }
        let mut headers = Vec::with_capacity(response.headers().len());
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers.push((name.as_str().to_string(), value));
        }
        let too_large = || {
            HttpError::Connection(format!(
                "answer body is larger than the {MAX_BODY_BYTES} bytes a plugin may receive"
            ))
        };
        let expected = match response.content_length() {
            Some(len) if len > MAX_BODY_BYTES as u64 => return Err(too_large()),
            Some(len) => len as usize,
            None => 0,
        };
        // Read in chunks so that a compressed answer cannot inflate past the limit in memory.
        let mut body = Vec::with_capacity(expected);
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let mut answer = HttpResponse {
            status,
            headers,
            body,
        };
        self.redactor.redact(&mut answer)?;
        Ok(answer)
    }
}

/// The host and port a URL goes to; IPv6 hosts without brackets.
fn host_and_port(url: &reqwest::Url) -> Option<(&str, u16)> {
    let host = url.host_str()?;
    // The URL crate keeps IPv6 hosts in brackets; allow rules are written without them.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, url.port_or_known_default().unwrap_or(80)))
}

/// What the gateway does with a header a plugin set.
enum HeaderRule {
    Pass,
    /// Dropped without a word: the transport sets its own.
    Strip,
    Refuse(HttpError),
}

fn header_rule(name: &HeaderName) -> HeaderRule {
    match name.as_str() {
        // Refused rather than overwritten: a plugin that sets it means another site than the
        // URL's, and should hear so instead of silently getting the URL host's answer.
        "host" => HeaderRule::Refuse(HttpError::Denied(
            "a plugin may not set the Host header: it comes from the URL, whose host is checked \
             against allowed_hosts (another Host would reach another site behind an allowed \
             address)"
                .into(),
        )),
        // Framing and hop-by-hop headers belong to the host's HTTP client; set by a plugin they
        // could split one request into two (request smuggling) or change the connection.
        "content-length" | "transfer-encoding" | "te" | "trailer" | "connection" | "keep-alive"
        | "proxy-connection" | "upgrade" => HeaderRule::Refuse(HttpError::InvalidRequest(format!(
            "a plugin may not set the {name} header: the host's HTTP client frames the \
                 message and manages the connection"
        ))),
        // The transport offers only encodings it decodes; a plugin-chosen one could carry an
        // echoed secret past redaction.
        "accept-encoding" => HeaderRule::Strip,
        _ => HeaderRule::Pass,
    }
}

/// Blanks out, in one pass over an answer, every form of every secret that an echo hands back.
enum Redactor {
    /// The operator has no secrets.
    Inactive,
    Active(AhoCorasick),
    /// Building the matcher failed (only for absurdly large secrets): answers are withheld.
    Broken(String),
}

impl Redactor {
    fn new(secrets: &[Secret]) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            for form in echoed_forms(&secret.value) {
                if !form.is_empty() && !patterns.contains(&form) {
                    patterns.push(form);
                }
            }
        }
        if patterns.is_empty() {
            return Redactor::Inactive;
        }
        // Leftmost-longest: where one form is a prefix of another, the longer one is blanked.
        match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
        {
            Ok(matcher) => Redactor::Active(matcher),
            Err(e) => Redactor::Broken(e.to_string()),
        }
    }

    fn is_active(&self) -> bool {
        !matches!(self, Redactor::Inactive)
    }

    fn redact(&self, answer: &mut HttpResponse) -> Result<(), HttpError> {
        let matcher = match self {
            Redactor::Inactive => return Ok(()),
            Redactor::Active(matcher) => matcher,
            // `prepare` refuses every request first; kept for safety.
            Redactor::Broken(why) => {
                return Err(HttpError::Connection(format!(
                    "answer withheld: the host could not prepare secret redaction ({why})"
                )))
            }
        };
        if let Some(body) = replace_all(matcher, &answer.body) {
            answer.body = body;
        }
        for (name, value) in answer.headers.iter_mut() {
            for text in [name, value] {
                if let Some(replaced) = replace_all(matcher, text.as_bytes()) {
                    // Patterns are UTF-8, so matches start and end on character boundaries.
                    *text = String::from_utf8_lossy(&replaced).into_owned();
                }
            }
        }
        Ok(())
    }
}

/// `haystack` with every match blanked, or `None` if nothing matched.
fn replace_all(matcher: &AhoCorasick, haystack: &[u8]) -> Option<Vec<u8>> {
    let mut matches = matcher.find_iter(haystack).peekable();
    matches.peek()?;
    let mut out = Vec::with_capacity(haystack.len());
    let mut copied = 0;
    for found in matches {
        out.extend_from_slice(&haystack[copied..found.start()]);
        out.extend_from_slice(REDACTED);
        copied = found.end();
    }
    out.extend_from_slice(&haystack[copied..]);
    Some(out)
}

/// RFC 3986 percent-encoding: all but the unreserved characters (Python's `quote(safe='')`).
const URI_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// JavaScript's `encodeURIComponent`.
const URI_COMPONENT: &AsciiSet = &URI_UNRESERVED
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The forms in which an echoing server hands a header value back without meaning to transform
/// it: as is, inside a JSON string (as serde, JavaScript, Python, Go and PHP escape it), and
/// percent-encoded in a URL or form. Duplicates are left to the caller.
fn echoed_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    // Every combination of the escaping choices JSON encoders make.
    for bits in 0u8..16 {
        let style = JsonStyle {
            ascii_only: bits & 1 != 0,
            escape_slash: bits & 2 != 0,
            escape_html: bits & 4 != 0,
            upper_hex: bits & 8 != 0,
        };
        forms.push(json_escaped(value, style));
    }
    forms.push(utf8_percent_encode(value, URI_UNRESERVED).to_string());
    forms.push(utf8_percent_encode(value, URI_COMPONENT).to_string());
    forms.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    forms
}

/// Choices JSON encoders make beyond the required escapes (`"`, `\`, control characters).
#[derive(Clone, Copy, Default)]
struct JsonStyle {
    /// Everything past `~` as `\uXXXX` (Python's default).
    ascii_only: bool,
    /// `/` as `\/` (PHP's default).
    escape_slash: bool,
    /// `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX` (Go's default).
    escape_html: bool,
    /// `\u00E9` rather than `\u00e9`.
    upper_hex: bool,
}

/// `value` as it stands between the quotes of a JSON string written in `style`.
fn json_escaped(value: &str, style: JsonStyle) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let unicode = |out: &mut String, c: char| {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            let escaped = if style.upper_hex {
                format!("\\u{unit:04X}")
            } else {
                format!("\\u{unit:04x}")
            };
            out.push_str(&escaped);
        }
    };
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if style.escape_slash => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style.escape_html => unicode(&mut out, c),
            c if c < ' ' || (style.ascii_only && c > '~') => unicode(&mut out, c),
            c => out.push(c),
        }
    }
    out
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

    const KEY: &str = "sk-very-secret";

    fn rule(host: &str, port: Option<u16>) -> HostRule {
        HostRule {
            host: host.into(),
            port,
        }
    }

    /// Allows 127.0.0.1 on any port; the secret `key` may go to 127.0.0.1:8080 only.
    fn gateway_with(value: &str) -> HttpGateway {
        HttpGateway::new(
            reqwest::Client::new(),
            vec![rule("127.0.0.1", None)],
            vec![Secret {
                name: "key".into(),
                value: value.into(),
                hosts: vec![rule("127.0.0.1", Some(8080))],
            }],
            Duration::from_secs(5),
        )
    }

    fn gateway() -> HttpGateway {
        gateway_with(KEY)
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

    fn with_header(name: &str, value: &str) -> HttpRequest {
        request(
            "http://127.0.0.1:8080/",
            vec![(name.to_owned(), value.to_owned())],
        )
    }

    fn error(result: Result<PreparedRequest, HttpError>) -> HttpError {
        match result {
            Ok(_) => panic!("expected the request to be refused"),
            Err(e) => e,
        }
    }

    /// The answer body after redaction by `g`.
    fn redacted(g: &HttpGateway, body: &str) -> String {
        let mut answer = HttpResponse {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        g.redactor.redact(&mut answer).unwrap();
        String::from_utf8(answer.body).unwrap()
    }

    #[test]
    fn refuses_hosts_and_ports_off_the_allowlist() {
        let g = HttpGateway::new(
            reqwest::Client::new(),
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
            .prepare(with_header("Authorization", "Bearer ${secret:key}"))
            .ok()
            .unwrap();
        assert_eq!(
            prepared.0.headers()["authorization"],
            "Bearer sk-very-secret"
        );
        match g.prepare(with_header("x", "${secret:other}")) {
            Err(HttpError::Denied(why)) => assert!(why.contains("other")),
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
            Err(HttpError::Denied(why)) => {
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
                HttpError::Denied(why) => assert!(why.contains("Host header"), "{why}"),
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
                HttpError::InvalidRequest(why) => {
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
                    HttpError::InvalidRequest(_)
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
        assert!(prepared.0.headers().get("accept-encoding").is_none());
        assert_eq!(prepared.0.headers()["x-other"], "kept");
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
            HttpError::Denied(why) => assert!(why.contains("Range"), "{why}"),
            other => panic!("expected denied, got {other}"),
        }
    }

    #[test]
    fn redacts_secret_values_from_answers() {
        let g = gateway();
        let mut answer = HttpResponse {
            status: 200,
            headers: vec![
                ("echo".into(), "Bearer sk-very-secret".into()),
                ("x-sk-very-secret".into(), "1".into()),
            ],
            body: b"{\"auth\":\"Bearer sk-very-secret\",\"again\":\"sk-very-secret\"}".to_vec(),
        };
        g.redactor.redact(&mut answer).unwrap();
        let body = String::from_utf8(answer.body).unwrap();
        assert_eq!(
            body,
            "{\"auth\":\"Bearer [redacted]\",\"again\":\"[redacted]\"}"
        );
        assert_eq!(answer.headers[0].1, "Bearer [redacted]");
        assert_eq!(answer.headers[1].0, "x-[redacted]");
    }

    #[test]
    fn redacts_the_json_escaped_forms_of_a_secret() {
        let value = "sk-\"quoted\"\\back/slash\n\u{1}é<&>";
        let g = gateway_with(value);
        // As serde (and JavaScript) write it.
        let serde = serde_json::to_string(value).unwrap();
        let inner = &serde[1..serde.len() - 1];
        assert_eq!(inner, json_escaped(value, JsonStyle::default()));
        assert_eq!(
            redacted(&g, &format!("{{\"a\":{serde}}}")),
            "{\"a\":\"[redacted]\"}"
        );
        // Python's json.dumps (ASCII only), PHP's (\/), Go's (<&> escaped), and upper-case
        // \u escapes.
        for form in [
            r#"sk-\"quoted\"\\back/slash\n\u0001\u00e9<&>"#,
            r#"sk-\"quoted\"\\back\/slash\n\u0001é<&>"#,
            r#"sk-\"quoted\"\\back/slash\n\u0001é\u003c\u0026\u003e"#,
            r#"sk-\"quoted\"\\back/slash\n\u0001\u00E9<&>"#,
        ] {
            assert_eq!(redacted(&g, &format!("<{form}>")), "<[redacted]>", "{form}");
        }
        // And still the raw form.
        assert_eq!(redacted(&g, &format!("<{value}>")), "<[redacted]>");
    }

    #[test]
    fn redacts_the_percent_encoded_forms_of_a_secret() {
        let g = gateway_with("sk key/with+signs!");
        for form in [
            "sk%20key%2Fwith%2Bsigns%21",
            "sk%20key%2Fwith%2Bsigns!",
            "sk+key%2Fwith%2Bsigns%21",
        ] {
            assert_eq!(
                redacted(&g, &format!("?q={form}&x")),
                "?q=[redacted]&x",
                "{form}"
            );
        }
    }

    #[test]
    fn redaction_blanks_every_secret_in_one_pass_and_nothing_else() {
        let g = HttpGateway::new(
            reqwest::Client::new(),
            vec![],
            vec![
                Secret {
                    name: "a".into(),
                    value: "secret-one".into(),
                    hosts: vec![],
                },
                Secret {
                    name: "b".into(),
                    value: "secret-one-longer".into(),
                    hosts: vec![],
                },
            ],
            Duration::from_secs(5),
        );
        assert_eq!(
            redacted(&g, "secret-one-longer secret-one secret-on"),
            "[redacted] [redacted] secret-on"
        );
        // A big answer with no secret comes back unchanged.
        let big = "a harmless answer; ".repeat(100_000);
        assert_eq!(redacted(&g, &big), big);
        // Without secrets there is nothing to do.
        let none = HttpGateway::new(
            reqwest::Client::new(),
            vec![],
            vec![],
            Duration::from_secs(5),
        );
        assert!(!none.redactor.is_active());
    }
}
