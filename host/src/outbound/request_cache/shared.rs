//! The request cache's way through Redis ([`RedisStore`]), run inside the request's future by
//! the one request per key in flight in this process:
//!
//! - an entry answers (a hit, or a remembered failure);
//! - no entry: the lookup took the key's lock, so this process sends, keeps the answer if it is
//!   worth keeping, and frees the lock;
//! - no entry and the lock taken: another process is sending the same request. This one looks
//!   again (every 20 ms at first, growing to 250 ms) until the entry appears (a hit) or the
//!   lock is gone without one (that process failed, gave up, or got an answer not worth
//!   keeping, a 5xx or a timeout): then it takes the lock itself and sends;
//! - Redis out of reach: a miss, sent at once.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{decode, OutboundError, Response};
use crate::cache::redis::{Claim, RedisStore};
use crate::cache::{CacheKey, Lookup};

/// The first pause between two looks at a key another process is sending for.
const FIRST_POLL: Duration = Duration::from_millis(20);
/// The longest pause between two looks.
const LAST_POLL: Duration = Duration::from_millis(250);
/// A lock outlives its request's time limit by this much: the owner still has to keep the
/// answer and free the lock.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// A lock's life for a request without a deadline (its retries may go on for long): another
/// process sends itself after that at the latest.
const LOCK_WITHOUT_DEADLINE: Duration = Duration::from_secs(60);

/// How long the lock of a request with `timeout` per attempt and `deadline` lives: until its
/// last attempt (started by the deadline) may end, with a margin; 60 s without a deadline.
pub(super) fn lock_ttl(timeout: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(deadline) => {
            deadline.saturating_duration_since(Instant::now()) + timeout + LOCK_MARGIN
        }
        None => LOCK_WITHOUT_DEADLINE.max(timeout + LOCK_MARGIN),
    }
}

/// The answer to the request `send` sends, from Redis if it has it or once another process
/// has it; `kept` says what of an answer is kept (see `super::kept`). Counts a hit, a remembered
/// failure or a miss.
pub(super) async fn fetch<F, Fut>(
    store: &RedisStore,
    key: &CacheKey,
    lock_ttl: Duration,
    send: F,
    kept: impl Fn(&Response) -> Option<(bool, Vec<u8>)>,
) -> Result<Response, OutboundError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Response, OutboundError>>,
{
    let stats = store.stats();
    let mut pause = FIRST_POLL;
    loop {
        let lock = match store.claim(key, lock_ttl).await {
            // A damaged entry (another build's layout?) is a miss: sent, and written again.
            Claim::Entry(Lookup::Hit(bytes)) => match decode(&bytes) {
                Ok(answer) => {
                    stats.hits.inc();
                    return Ok(answer);
                }
                Err(_) => None,
            },
            Claim::Entry(Lookup::Negative(bytes)) => match decode(&bytes) {
                Ok(answer) => {
                    stats.negative_hits.inc();
                    return Ok(answer);
                }
                Err(_) => None,
            },
            Claim::Entry(Lookup::Miss) | Claim::Unreachable => None,
            Claim::Owner(lock) => Some(lock),
            Claim::Taken => {
                tokio::time::sleep(pause).await;
                pause = (pause * 3 / 2).min(LAST_POLL);
                continue;
            }
        };
        stats.misses.inc();
        let answer = send().await;
        if let Some((negative, value)) = answer.as_ref().ok().and_then(&kept) {
            store.put(key, &value, negative).await;
        }
        // After the entry is written: a process that finds the lock gone finds the entry.
        if let Some(lock) = lock {
            lock.release().await;
        }
        return answer;
    }
}
