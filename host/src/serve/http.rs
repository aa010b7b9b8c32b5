//! The HTTP side of `waio serve`: a batch in, its answers streamed out as they come.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::admin::{reply, respond};
use crate::answers::{error_line, Answer, CallerStats, ServeTelemetry, Ticket};
use crate::connectors::line::parse_line;
use crate::manifest::{EventTimeConfig, FieldMapping};
use crate::pipeline::PipelineHandle;
use crate::record::{Element, Record};

/// The path batches are posted to.
pub const INVOKE_PATH: &str = "/v1/invoke";

/// The header naming the caller, for per-caller metrics.
const CALLER_HEADER: &str = "x-waio-caller";

/// A batch larger than this is refused (413): batches are meant to be hundreds of records.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// How long answers still on their way get once the run has ended.
const WIND_DOWN_LIMIT: Duration = Duration::from_secs(5);

type Body = Either<Full<Bytes>, Lines>;

/// What every connection shares.
pub(super) struct State {
    handle: PipelineHandle,
    feed: Sender<Vec<Record>>,
    fields: FieldMapping,
    event_time: Option<EventTimeConfig>,
    telemetry: Arc<ServeTelemetry>,
    /// Numbers the records of all callers, so that logs can tell them apart (`serve:N`).
    next_line: AtomicU64,
    /// Answer streams not finished yet.
    open: Arc<AtomicUsize>,
}

impl State {
    pub(super) fn new(
        handle: PipelineHandle,
        feed: Sender<Vec<Record>>,
        fields: FieldMapping,
        event_time: Option<EventTimeConfig>,
        telemetry: Arc<ServeTelemetry>,
    ) -> Arc<Self> {
        Arc::new(State {
            handle,
            feed,
            fields,
            event_time,
            telemetry,
            next_line: AtomicU64::new(1),
            open: Arc::default(),
        })
    }

    /// After the run: lets the last answers reach their callers before the process ends.
    pub(super) async fn wind_down(&self) {
        let deadline = tokio::time::Instant::now() + WIND_DOWN_LIMIT;
        while self.open.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(super) async fn accept(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("waio serve: cannot accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers are small lines written as they come: do not hold them back (Nagle).
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!("waio serve: connection ended: {error}");
            }
        });
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Body> {
    if request.uri().path() != INVOKE_PATH {
        return respond(&state.handle, &request).await.map(Either::Left);
    }
    if request.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("POST a batch of JSON lines to {INVOKE_PATH}\n"),
        );
    }
    if state.handle.telemetry().stop_requested.get() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waio serve is stopping: send the batch again to its successor\n".into(),
        );
    }
    let caller = request
        .headers()
        .get(CALLER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("anonymous")
        .to_string();
    let body = match Limited::new(request.into_body(), MAX_BATCH_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the batch: {error} (at most {MAX_BATCH_BYTES} bytes)\n"),
            );
        }
    };
    let stats = state.telemetry.caller(&caller);
    stats.batches.inc();
    let (reply_tx, reply_rx) = unbounded_channel();
    let mut records = Vec::new();
    for (index, text) in lines(&body).enumerate() {
        stats.records.inc();
        let line = state.next_line.fetch_add(1, Ordering::Relaxed);
        match parse_line(text, line, &state.fields, state.event_time.as_ref()) {
            Ok(Element::Record(mut record)) => {
                record.ticket = Some(Ticket::new(index, reply_tx.clone(), Arc::clone(&stats)));
                records.push(record);
            }
            Ok(_) => refuse(
                &reply_tx,
                &stats,
                index,
                "a watermark line: send records only (the caller owns event time)",
            ),
            Err(error) => refuse(
                &reply_tx,
                &stats,
                index,
                &format!("line {} of the batch: {error}", index + 1),
            ),
        }
    }
    drop(reply_tx);
    // A run that has ended drops the batch: each record is answered as lost.
    if !records.is_empty() {
        let _ = state.feed.send(records);
    }
    state.open.fetch_add(1, Ordering::AcqRel);
    let body = Lines {
        answers: reply_rx,
        open: Arc::clone(&state.open),
    };
    let mut response = Response::new(Either::Right(body));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// The batch's records: one per line; a last line without its newline counts, a trailing
/// newline does not start one more.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    body.split(|&b| b == b'\n')
        .filter(move |_| !body.is_empty())
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

fn refuse(
    reply: &tokio::sync::mpsc::UnboundedSender<Bytes>,
    stats: &CallerStats,
    index: usize,
    message: &str,
) {
    stats.answered(Answer::Invalid);
    let _ = reply.send(Bytes::from(error_line(
        index,
        Answer::Invalid.name(),
        message,
    )));
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    reply(status, "text/plain; charset=utf-8", message).map(Either::Left)
}

/// A batch's answers as they come, several per chunk when several are ready. Ends when every
/// record's ticket has answered.
pub(super) struct Lines {
    answers: UnboundedReceiver<Bytes>,
    open: Arc<AtomicUsize>,
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let first = match self.answers.poll_recv(cx) {
            Poll::Ready(Some(line)) => line,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let mut chunk = BytesMut::from(&first[..]);
        while chunk.len() < 64 * 1024 {
            match self.answers.try_recv() {
                Ok(line) => chunk.extend_from_slice(&line),
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
    }
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn a_batch_is_split_into_its_lines() {
        let split = |b: &'static [u8]| lines(b).collect::<Vec<_>>();
        assert_eq!(split(b"{}\n[1]\n"), vec![&b"{}"[..], b"[1]"]);
        assert_eq!(split(b"{}\r\n[1]"), vec![&b"{}"[..], b"[1]"]);
        assert_eq!(split(b"{}\n\n[1]"), vec![&b"{}"[..], b"", b"[1]"]);
        assert!(split(b"").is_empty());
        assert!(split(b"\n").is_empty());
    }
}
