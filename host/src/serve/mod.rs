//! `waio serve MANIFEST`: the manifest's operators as a service for another engine (a Flink
//! job's `WaioAsyncFunction`, flink/). Callers POST batches of records as JSON lines to
//! `/v1/invoke` over HTTP/1.1 keep-alive; each record's answer streams back as one line as soon
//! as it is done (`{"i":N,"outputs":[...]}` or `{"i":N,"error":{"kind":..,"message":..}}`), so
//! a batch never waits for its slowest record.
//!
//! It is an ordinary run whose source is its callers and whose sink answers them: the same
//! operators, capacity, limits, caches, breaker, retries, metrics and hot reload, shared by all
//! callers. The caller owns checkpoints, replay and dead letters (Flink does): a failed record
//! is answered with its kind, never written to a dead-letter file. Everything else the admin
//! server answers (`/metrics`, `/`, `/status.json`, reloads) is answered on the same port.

mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::answers::ServeTelemetry;

use crate::manifest::{Manifest, SourceConfig};
use crate::metrics::RunSummary;
use crate::pipeline::{self, PipelineError, PipelineHandle, RunOptions};

/// The default address: a sidecar answers the processes of its own machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} (waio serve --listen): {cause}{hint}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
        hint: &'static str,
    },
}

/// The port `waio serve` answers on, bound before plugins load (a taken port fails at once).
#[derive(Debug)]
pub struct ServeListener {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl ServeListener {
    pub fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let in_use = ": the port is taken (another waio serve?)";
        let (listener, addr) = crate::admin::bind_port(addr, in_use)
            .map_err(|(cause, hint)| ServeError::Bind { addr, cause, hint })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "waio serve listens beyond this machine: it has no authentication, and whoever reaches it spends the provider budget");
        }
        Ok(ServeListener { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The manifest as `waio serve` runs it: records come from the callers and go back to them, so
/// its source, sink and checkpoints are not used (said once, when set).
pub fn for_serving(manifest: &Manifest) -> Manifest {
    if !matches!(manifest.source, SourceConfig::Serve { .. }) {
        tracing::info!("waio serve: records come from the callers and their answers go back to them; [source] (but its key_field and timestamp_field) and [sink] are not used");
    }
    if manifest.checkpoint.is_some() {
        tracing::warn!("waio serve: [checkpoint] is not used: the caller (Flink) checkpoints and replays; keep a request cache so that replayed records do not pay the provider again");
    }
    for op in manifest.operators.iter().filter(|op| op.ordered) {
        tracing::info!(operator = %op.name, "waio serve: the operator runs unordered: each record is answered as soon as it is done, and the caller orders (Flink's orderedWait does)");
    }
    manifest.serving_form()
}

/// Serves `manifest` (as [`for_serving`] makes it) on `listener` until SIGINT/SIGTERM or
/// `handle.stop()`: then new batches are refused (503), the records taken are finished and
/// answered, and the run's summary is returned. `observe` gets the run's handle once started.
pub async fn run(
    manifest: &Manifest,
    listener: ServeListener,
    observe: impl FnOnce(&PipelineHandle),
) -> Result<RunSummary, PipelineError> {
    let SourceConfig::Serve { fields } = &manifest.source else {
        return Err(PipelineError::Incompatible(
            "waio serve needs the manifest for_serving() makes".into(),
        ));
    };
    let mut topology = pipeline::build(manifest, &RunOptions { fresh: true }).await?;
    let feed = topology.feed();
    let telemetry = Arc::new(ServeTelemetry::default());
    let _ = topology.telemetry().serve.set(Arc::clone(&telemetry));
    let addr = listener.addr;
    let listener = tokio::net::TcpListener::from_std(listener.listener)
        .map_err(|e| PipelineError::Stage(format!("cannot serve on {addr}: {e}")))?;
    let mut server = None;
    let summary = pipeline::run_built(topology, |handle| {
        let state = http::State::new(
            handle.clone(),
            feed,
            fields.clone(),
            manifest.event_time.clone(),
            telemetry,
        );
        tracing::info!("waio serve: POST batches of JSON lines to http://{addr}/v1/invoke; metrics at http://{addr}/metrics");
        server = Some(Arc::clone(&state));
        tokio::spawn(http::accept(listener, state));
        observe(handle);
    })
    .await;
    if let Some(state) = server {
        state.wind_down().await;
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_manifest_is_served_unordered_with_its_field_mapping_and_without_checkpoints() {
        let text =
            "name = \"p\"\n[source]\nkind = \"file\"\npath = \"in.jsonl\"\nkey_field = \"id\"\n\
                    [[operator]]\nplugin = \"p.wasm\"\nordered = true\n\
                    [sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[checkpoint]\ndir = \"state\"\n";
        let manifest = Manifest::parse(text, std::path::Path::new("/tmp/p.toml")).expect("parses");
        let served = manifest.serving_form();
        let SourceConfig::Serve { fields } = &served.source else {
            panic!("not served: {:?}", served.source);
        };
        assert_eq!(fields.key_field.as_deref(), Some("id"));
        assert_eq!(served.sink, crate::manifest::SinkConfig::Discard);
        assert!(served.checkpoint.is_none());
        assert!(served.operators.iter().all(|op| !op.ordered));
        // Reloads read the file again and serve it the same way: nothing to restart for.
        let again = crate::manifest::changes::changes(&served, &manifest.serving_form());
        assert!(again.is_ok_and(|c| c.iter().all(|c| !c.any())));
    }
}
