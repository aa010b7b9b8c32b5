//! `POST /admin/operators/NAME/reload`: a hot reload of one operator, answered when it is done.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::reply;
use crate::pipeline::{PipelineHandle, ReloadError, ReloadScope};

/// Reloads `operator` and says what was swapped (200), why nothing was (409; 404 for an
/// operator the pipeline does not have; 503 once the run has ended).
pub(super) async fn answer(handle: &PipelineHandle, operator: String) -> Response<Full<Bytes>> {
    let (status, body) = match handle.reload(ReloadScope::Operator(operator)).await {
        Ok(swapped) => {
            let swapped: Vec<_> = swapped
                .iter()
                .map(|s| {
                    json!({
                        "operator": s.operator,
                        "old": &*s.old,
                        "new": &*s.new,
                        "took_ms": s.took_ms,
                    })
                })
                .collect();
            (StatusCode::OK, json!({ "swapped": swapped }))
        }
        Err(error) => {
            let status = match error {
                ReloadError::UnknownOperator(_) => StatusCode::NOT_FOUND,
                ReloadError::Ended => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            };
            (status, json!({ "error": error.to_string() }))
        }
    };
    reply(status, "application/json", format!("{body}\n"))
}
