//! The bottom of the stack: a prepared request on reqwest, the whole answer read with a limit.

use std::task::{Context, Poll};

use super::{OutboundError, PreparedRequest, Response, Sending};

/// Largest answer body handed to a plugin (after decompression).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How the transport speaks to servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 only, one connection per request in flight.
    Http1,
    /// HTTP/2 from the first byte, also over TLS.
    Http2PriorKnowledge,
}

/// Sends prepared requests with a reqwest client and reads their answers whole.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl Transport {
    /// A transport on `client` ([`Transport::client`]) that accepts bodies up to
    /// [`MAX_BODY_BYTES`].
    pub fn new(client: reqwest::Client) -> Self {
        Transport {
            client,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }

    /// The same transport with another body limit (tests use a small one).
    pub fn with_body_limit(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// A client that speaks `protocol`; share it between operators (pools are per client).
    pub fn client(protocol: Protocol) -> Result<reqwest::Client, reqwest::Error> {
        let builder = match protocol {
            // Without this reqwest would offer HTTP/2 in TLS handshakes (ALPN) and then put
            // every request to that host on one connection, capped at the server's stream
            // limit (often 100): capacity would silently stop meaning requests in flight.
            Protocol::Http1 => reqwest::Client::builder().http1_only(),
            Protocol::Http2PriorKnowledge => reqwest::Client::builder().http2_prior_knowledge(),
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

    /// Performs the request and reads the whole answer, giving up as soon as the body passes
    /// the limit.
    async fn perform(self, request: PreparedRequest) -> Result<Response, OutboundError> {
        let timeout = request.timeout();
        let (method, url, headers, body) = request.into_parts();
        let built = self
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .build()
            .map_err(|e| OutboundError::InvalidRequest(e.to_string()))?;
        let mut response = self.client.execute(built).await.map_err(classify)?;
        let status = response.status().as_u16();
        let mut headers = Vec::with_capacity(response.headers().len());
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers.push((name.as_str().to_string(), value));
        }
        let limit = self.max_body_bytes;
        let too_large = || {
            OutboundError::Connection(format!(
                "answer body is larger than the {limit} bytes a plugin may receive"
            ))
        };
        let expected = match response.content_length() {
            Some(len) if len > limit as u64 => return Err(too_large()),
            Some(len) => len as usize,
            None => 0,
        };
        // Chunk by chunk, so that neither a chunked nor a compressed answer can grow past the
        // limit in memory: the first chunk past it ends the request and drops the connection.
        let mut body = Vec::with_capacity(expected);
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
            from_cache: false,
        })
    }
}

impl tower::Service<PreparedRequest> for Transport {
    type Response = Response;
    type Error = OutboundError;
    type Future = Sending;

    /// Always ready: reqwest queues for connections itself, and the operator caps the requests
    /// in flight.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OutboundError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PreparedRequest) -> Sending {
        Box::pin(self.clone().perform(request))
    }
}

fn classify(error: reqwest::Error) -> OutboundError {
    if error.is_timeout() {
        OutboundError::Timeout
    } else {
        // The chain of sources says what really happened (refused, reset, ...).
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        OutboundError::Connection(message)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tower::ServiceExt;

    use super::super::{HostPattern, Policy, Request};
    use super::*;

    const LIMIT: usize = 64 * 1024;

    /// A one-connection HTTP server on 127.0.0.1: it reads the request head, then hands the
    /// connection to `answer`, whose result the test reads when it is done.
    async fn server<F, Fut, T>(answer: F) -> (String, JoinHandle<T>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send,
        T: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            answer(stream).await
        });
        (url, task)
    }

    async fn get(url: &str, timeout: Option<Duration>) -> Result<Response, OutboundError> {
        let policy = Policy::new(
            vec![HostPattern::new("127.0.0.1", None)],
            vec![],
            Duration::from_secs(30),
        );
        let prepared = policy
            .prepare(Request {
                method: "GET".into(),
                url: url.into(),
                headers: vec![],
                body: vec![],
                timeout,
                deadline: None,
            })
            .unwrap();
        let client = Transport::client(Protocol::Http1).unwrap();
        Transport::new(client)
            .with_body_limit(LIMIT)
            .oneshot(prepared)
            .await
    }

    fn too_large(result: Result<Response, OutboundError>) {
        match result {
            Err(OutboundError::Connection(why)) => assert_eq!(
                why,
                format!("answer body is larger than the {LIMIT} bytes a plugin may receive")
            ),
            other => panic!("expected the answer to be refused as too large, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_fails_without_being_read_whole() {
        const TOTAL: usize = 256 * 1024 * 1024;
        let (url, sent) = server(|mut stream| async move {
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            let mut sent = 0;
            // Until the client hangs up (or everything is written, if it never does).
            while sent < TOTAL {
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
                sent += 0x4000;
            }
            sent
        })
        .await;
        too_large(get(&url, None).await);
        let sent = sent.await.unwrap();
        // What the socket buffers took before the client hung up, far from the whole body.
        assert!(sent < 32 * 1024 * 1024, "the server sent {sent} bytes");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_fails_before_the_body() {
        let (url, _server) = server(|mut stream| async move {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", LIMIT + 1);
            stream.write_all(head.as_bytes()).await.unwrap();
            // The body never comes: the head alone must be enough to refuse.
            std::future::pending::<()>().await
        })
        .await;
        too_large(get(&url, None).await);
    }

    #[tokio::test]
    async fn a_chunked_body_up_to_the_limit_is_read_whole() {
        let (url, _server) = server(|mut stream| async move {
            let half = "y".repeat(LIMIT / 2);
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nx-a: b\r\n\r\n\
                 {n:x}\r\n{half}\r\n{n:x}\r\n{half}\r\n0\r\n\r\n",
                n = half.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            stream
        })
        .await;
        let answer = get(&url, None).await.unwrap();
        assert_eq!(answer.status, 404);
        assert!(answer.headers.contains(&("x-a".into(), "b".into())));
        assert_eq!(answer.body.len(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out_at_the_request_timeout() {
        let (url, _server) = server(|stream| async move {
            std::future::pending::<()>().await;
            drop(stream)
        })
        .await;
        let started = tokio::time::Instant::now();
        let waiting = get(&url, Some(Duration::from_secs(60)));
        let result = tokio::time::timeout(Duration::from_secs(120), waiting).await;
        assert_eq!(result, Ok(Err(OutboundError::Timeout)));
        // On the paused clock: a minute passed for the request, none for the test.
        assert!(started.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_cause() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        match get(&url, None).await {
            Err(OutboundError::Connection(why)) => {
                assert!(why.to_lowercase().contains("refused"), "{why}")
            }
            other => panic!("expected a connection error, got {other:?}"),
        }
    }
}
