//! Which HTTP statuses are worth asking again. Two rules, each in one place:
//! - [`retriable_status`], the plugin contract's: written out in `wit/retriable-statuses.txt`,
//!   each SDK's "error for status" helper is tested against that file, and so is this
//!   function. A plugin (or a record retry) decides with it.
//! - [`transient_status`], the host's own, narrower one: what the host sends again by itself
//!   (request retries) and what its circuit breaker counts as a failure.

use super::{OutboundError, Response};

/// Whether an answer with `status` may be different if the same request is sent again.
///
/// Retriable: 408 Request Timeout and 429 Too Many Requests (the server asks to come back
/// later) and every 5xx (the server is busy or failing). Every other status is an answer about
/// the request itself, which a retry would only get again. Statuses of 600 and above are not
/// retriable: HTTP defines no such class (RFC 9110 section 15), so nothing says the server will
/// ever answer differently, and retrying unknowns would multiply the load on a server that
/// already behaves oddly. Informational 1xx never reach a caller as a final answer.
pub fn retriable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Whether the host itself sends a request again after an answer with `status`, and counts
/// the answer as the endpoint failing (circuit breaker).
///
/// Only the statuses that say the server is momentarily unable to answer, whatever the
/// request: 429 Too Many Requests, 502 Bad Gateway, 503 Service Unavailable and 504 Gateway
/// Timeout. Not 500: it as often means that this very request breaks the server, and the host
/// cannot tell which; the plugin sees it and may decide (`retriable_status` says it may be
/// worth a record retry). Not 408 nor any other 4xx: an answer about the request itself.
pub fn transient_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Whether the outcome of one attempt is a transient failure by the host's rule: a
/// [`transient_status`], a timeout or a failed connection.
pub(super) fn transient(outcome: &Result<Response, OutboundError>) -> bool {
    match outcome {
        Ok(answer) => transient_status(answer.status),
        Err(error) => matches!(error, OutboundError::Timeout | OutboundError::Connection(_)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake;
    use super::*;

    #[test]
    fn the_host_retries_only_busy_servers_timeouts_and_broken_connections() {
        for status in 0..=999 {
            let expected = matches!(status, 429 | 502 | 503 | 504);
            assert_eq!(transient_status(status), expected, "status {status}");
            assert_eq!(transient(&Ok(fake::ok(status, &[], ""))), expected);
            // The host's rule is within the plugin contract's: it never retries what a plugin
            // would be told not to.
            assert!(!expected || retriable_status(status), "status {status}");
        }
        assert!(transient(&Err(OutboundError::Timeout)));
        assert!(transient(&Err(OutboundError::Connection("reset".into()))));
        for refused in [
            OutboundError::Denied("no".into()),
            OutboundError::InvalidRequest("bad".into()),
            OutboundError::Unavailable("open".into()),
        ] {
            assert!(!transient(&Err(refused)));
        }
    }

    #[test]
    fn busy_or_failing_servers_are_retried_wrong_requests_are_not() {
        let table = [
            (100, false),
            (200, false),
            (204, false),
            (301, false),
            (304, false),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (407, false),
            (408, true),
            (409, false),
            (413, false),
            (422, false),
            (428, false),
            (429, true),
            (430, false),
            (499, false),
            (500, true),
            (501, true),
            (502, true),
            (503, true),
            (504, true),
            (599, true),
            (600, false),
            (999, false),
            (0, false),
            (u16::MAX, false),
        ];
        for (status, retriable) in table {
            assert_eq!(retriable_status(status), retriable, "status {status}");
        }
    }

    #[test]
    fn the_rule_is_the_one_written_in_the_contract() {
        let table = include_str!("../../../wit/retriable-statuses.txt");
        let listed = |status: u16| {
            table
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .any(|l| {
                    let (low, high) = l.split_once('-').unwrap_or((l, l));
                    let bound = |t: &str| t.parse::<u16>().expect("a status in the table");
                    (bound(low)..=bound(high)).contains(&status)
                })
        };
        for status in 0..=999 {
            assert_eq!(retriable_status(status), listed(status), "status {status}");
        }
    }
}
