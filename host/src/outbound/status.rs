//! Which HTTP statuses are worth asking again: the host's rule, in one place. It is written
//! out in `wit/retriable-statuses.txt`, part of the plugin contract: each SDK's "error for
//! status" helper is tested against that file, and so is this function.

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

#[cfg(test)]
mod tests {
    use super::retriable_status;

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
