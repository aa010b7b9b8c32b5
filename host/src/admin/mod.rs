//! The admin HTTP server of a run (`[admin] listen`, `waio run --admin ADDR`): Prometheus
//! metrics at `/metrics`, the live status page at `/` and its data at `/status.json`.
//!
//! It only reads the run's telemetry (through its [`PipelineHandle`]); a slow or broken client
//! cannot hold a record back. The port is bound before the pipeline is built, so a port that
//! is taken fails the run at once, before plugins are compiled.

mod exposition;
mod readings;
mod reload;
pub mod status;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub use exposition::{
    openmetrics, to_prometheus_text, LATENCY_BUCKETS, OPENMETRICS_CONTENT_TYPE,
    PROMETHEUS_TEXT_CONTENT_TYPE,
};

use crate::pipeline::PipelineHandle;

/// The status page: one self-contained file (no scripts or fonts from elsewhere).
const STATUS_PAGE: &str = include_str!("status_page.html");

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot start the admin server on {addr} ([admin] listen or --admin): {cause}{hint}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
        hint: &'static str,
    },
}

/// The admin server's port, bound and not yet serving.
#[derive(Debug)]
pub struct AdminListener {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl AdminListener {
    /// Binds `addr` now (no async runtime needed).
    pub fn bind(addr: SocketAddr) -> Result<Self, AdminError> {
        let in_use =
            ": the port is taken (another waio run, or another exporter?); choose another port";
        let (listener, addr) = bind_port(addr, in_use)
            .map_err(|(cause, hint)| AdminError::Bind { addr, cause, hint })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the admin server listens beyond this machine: it has no authentication");
        }
        Ok(AdminListener { listener, addr })
    }

    /// The address it is bound to (the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the run of `handle` on the current tokio runtime until the process ends.
    pub fn serve(self, handle: PipelineHandle) -> Result<(), AdminError> {
        let addr = self.addr;
        let listener =
            tokio::net::TcpListener::from_std(self.listener).map_err(|cause| AdminError::Bind {
                addr,
                cause,
                hint: "",
            })?;
        tracing::info!(
            "admin server: metrics at http://{addr}/metrics, status page at http://{addr}/"
        );
        tokio::spawn(accept(listener, handle));
        Ok(())
    }
}

async fn accept(listener: tokio::net::TcpListener, handle: PipelineHandle) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: try again shortly rather than spin.
                tracing::warn!("admin server: cannot accept a connection: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(respond(&handle, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!("admin server: connection ended: {error}");
            }
        });
    }
}

/// Binds `addr` for a server a tokio runtime serves later: non-blocking, with the address the
/// system chose for port 0. A failure comes with a hint for its usual causes (`in_use` for a
/// taken port).
pub(crate) fn bind_port(
    addr: SocketAddr,
    in_use: &'static str,
) -> Result<(std::net::TcpListener, SocketAddr), (std::io::Error, &'static str)> {
    let with_hint = |cause: std::io::Error| {
        let hint = match cause.kind() {
            std::io::ErrorKind::AddrInUse => in_use,
            std::io::ErrorKind::AddrNotAvailable => {
                ": no interface of this machine has that address"
            }
            _ => "",
        };
        (cause, hint)
    };
    let listener = std::net::TcpListener::bind(addr).map_err(with_hint)?;
    listener.set_nonblocking(true).map_err(with_hint)?;
    let addr = listener.local_addr().map_err(with_hint)?;
    Ok((listener, addr))
}

/// The admin server's answer to one request (`waio serve` answers its other requests so too).
pub(crate) async fn respond(
    handle: &PipelineHandle,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match reload_target(request) {
        Some(operator) => reload::answer(handle, operator).await,
        None => answer(handle, request),
    }
}

/// The operator a `POST /admin/operators/NAME/reload` names.
fn reload_target(request: &Request<Incoming>) -> Option<String> {
    if request.method() != Method::POST {
        return None;
    }
    let name = request
        .uri()
        .path()
        .strip_prefix("/admin/operators/")?
        .strip_suffix("/reload")?;
    Some(percent_decode(name))
}

/// `%XX` escapes in a path segment, decoded (an operator's name may hold any character).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to one request.
fn answer(handle: &PipelineHandle, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET, and POST /admin/operators/NAME/reload\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => {
            let text = openmetrics(handle.telemetry());
            if wants_openmetrics(request) {
                reply(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, text)
            } else {
                reply(
                    StatusCode::OK,
                    PROMETHEUS_TEXT_CONTENT_TYPE,
                    to_prometheus_text(&text),
                )
            }
        }
        "/status.json" => match serde_json::to_string(&status::read(handle)) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(error) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("cannot encode the status: {error}\n"),
            ),
        },
        "/" | "/index.html" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            STATUS_PAGE.into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /, /status.json or /metrics\n".into(),
        ),
    }
}

/// Whether the client's Accept header asks for OpenMetrics (Prometheus does, first).
fn wants_openmetrics(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

pub(crate) fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response.headers_mut().insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests;
