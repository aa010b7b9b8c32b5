//! Runs an operator's HTTP requests on the async runtime.
//!
//! The operator thread collects the requests a turn of its loop starts and hands them over in
//! one message when it is about to wait; one task per operator drives them all and sends back
//! every answer that is complete in one message. Compared with a task per request spawned from
//! the operator thread and an answer per message, this wakes a runtime worker and the operator
//! thread once per batch instead of once per request, and allocates no task per request.

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::http::{HttpGateway, PreparedRequest};
use crate::plugin::bindings::{HttpError, HttpResponse};

/// Requests handed over in one message at most.
const MAX_BATCH: usize = 32;

/// The answer to the request tagged `T`.
pub type Answer<T> = (T, Result<HttpResponse, HttpError>);

/// The operator's end. Dropping it cancels the requests still in flight: nobody would read
/// their answers.
pub struct HttpDispatcher<T> {
    batch: Vec<(T, PreparedRequest)>,
    to_task: mpsc::UnboundedSender<Vec<(T, PreparedRequest)>>,
}

impl<T: Send + 'static> HttpDispatcher<T> {
    /// Starts the task that performs requests through `gateway` and sends answers to `answers`
    /// as soon as they are complete, together with any others complete at that moment.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        gateway: Arc<HttpGateway>,
        answers: crossbeam_channel::Sender<Vec<Answer<T>>>,
    ) -> Self {
        let (to_task, from_operator) = mpsc::unbounded_channel();
        runtime.spawn(perform(from_operator, gateway, answers));
        HttpDispatcher {
            batch: Vec::new(),
            to_task,
        }
    }

    /// Queues a request; it leaves at the next [`HttpDispatcher::flush`], or now if enough
    /// are waiting: a turn of the operator that answers and invokes hundreds of records would
    /// otherwise hold the first requests back for milliseconds.
    pub fn push(&mut self, tag: T, request: PreparedRequest) {
        self.batch.push((tag, request));
        if self.batch.len() >= MAX_BATCH {
            self.flush();
        }
    }

    /// Hands the queued requests to the task.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        // The task only ends when this end is dropped, or when the operator's answer channel
        // is gone, which means the operator is gone too.
        let _ = self.to_task.send(batch);
    }
}

async fn perform<T>(
    mut from_operator: mpsc::UnboundedReceiver<Vec<(T, PreparedRequest)>>,
    gateway: Arc<HttpGateway>,
    answers: crossbeam_channel::Sender<Vec<Answer<T>>>,
) {
    let gateway = &*gateway;
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                let mut complete = vec![answer];
                // Polling without a waker here is safe: the `select!` polls again with the
                // task's own before it waits.
                while let Some(Some(answer)) = in_flight.next().now_or_never() {
                    complete.push(answer);
                }
                if answers.send(complete).is_err() {
                    return;
                }
            }
            batch = from_operator.recv() => match batch {
                Some(batch) => {
                    for (tag, request) in batch {
                        in_flight.push(async move { (tag, gateway.execute(request).await) });
                    }
                }
                None => return,
            },
        }
    }
}
