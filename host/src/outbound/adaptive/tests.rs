use std::sync::atomic::{AtomicUsize, Ordering};

use tower::Layer;

use super::super::{fake, HostPattern, Policy, Request};
use super::*;

const A: &str = "http://127.0.0.1:9/v1";
const B: &str = "http://127.0.0.1:10/v1";

fn request(url: &str, deadline: Option<std::time::Instant>) -> PreparedRequest {
    let policy = Policy::new(
        vec![HostPattern::new("127.0.0.1", None)],
        vec![],
        Duration::from_secs(5),
    );
    let request = Request {
        method: "POST".into(),
        url: url.into(),
        headers: vec![],
        body: b"{}".to_vec(),
        timeout: None,
        deadline,
    };
    policy.prepare(request).unwrap()
}

/// When each request reached the transport, and where to.
type Arrivals = Arc<Mutex<Vec<(Instant, String)>>>;

/// A transport that answers its n-th request (from 0) with `answer(n)` after `delay`.
fn transport(
    delay: Duration,
    answer: impl Fn(usize) -> Response + Send + Sync + 'static,
) -> (
    impl tower::Service<
            PreparedRequest,
            Response = Response,
            Error = OutboundError,
            Future = Sending,
        > + Clone
        + Send
        + Sync
        + 'static,
    Arrivals,
) {
    let arrivals = Arrivals::default();
    let log = Arc::clone(&arrivals);
    let count = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let service = tower::service_fn(move |request: PreparedRequest| {
        log.lock()
            .unwrap()
            .push((Instant::now(), request.url().to_string()));
        let answer = answer(count.fetch_add(1, Ordering::SeqCst));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(answer)
        }) as Sending
    });
    (service, arrivals)
}

fn adaptive() -> (AdaptiveLayer, Arc<OutboundStats>) {
    let stats = Arc::new(OutboundStats::default());
    let layer = AdaptiveLayer::new(Duration::from_secs(5), Arc::clone(&stats));
    (layer, stats)
}

fn openai(remaining: u32, reset: &str) -> Vec<(String, String)> {
    vec![
        ("x-ratelimit-limit-requests".into(), "100".into()),
        (
            "x-ratelimit-remaining-requests".into(),
            remaining.to_string(),
        ),
        ("x-ratelimit-reset-requests".into(), reset.into()),
    ]
}

fn answer(status: u16, headers: Vec<(String, String)>) -> Response {
    Response {
        status,
        headers,
        body: vec![],
        from_cache: false,
    }
}

fn times(arrivals: &Arrivals, since: Instant) -> Vec<Duration> {
    arrivals
        .lock()
        .unwrap()
        .iter()
        .map(|(at, _)| *at - since)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn none_remaining_holds_the_next_request_until_the_reset() {
    let (transport, arrivals) = transport(Duration::ZERO, |n| match n {
        0 => answer(200, openai(0, "1s")),
        _ => answer(200, openai(99, "1s")),
    });
    let (layer, stats) = adaptive();
    let service = layer.layer(transport);
    let started = Instant::now();
    for _ in 0..3 {
        let answer = service.clone().oneshot(request(A, None)).await.unwrap();
        assert_eq!(answer.status, 200);
    }
    let second = Duration::from_secs(1);
    assert_eq!(times(&arrivals, started), [Duration::ZERO, second, second]);
    assert_eq!((stats.held(), stats.held_time()), (1, second));
}

#[tokio::test(start_paused = true)]
async fn plenty_remaining_adds_no_wait() {
    let (transport, arrivals) = transport(Duration::from_millis(10), |n| {
        answer(200, openai(99 - n.min(40) as u32, "1s"))
    });
    let (layer, stats) = adaptive();
    let service = layer.layer(transport);
    let started = Instant::now();
    // One request, then 40 at once: at least half the limit remains throughout.
    service.clone().oneshot(request(A, None)).await.unwrap();
    let sending: Vec<_> = (0..40)
        .map(|_| tokio::spawn(service.clone().oneshot(request(A, None))))
        .collect();
    for sent in sending {
        assert_eq!(sent.await.unwrap().unwrap().status, 200);
    }
    let times = times(&arrivals, started);
    assert_eq!(times.len(), 41);
    assert!(
        times[1..].iter().all(|t| *t == Duration::from_millis(10)),
        "{times:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(20));
    assert_eq!(stats.held(), 0);
}

#[tokio::test(start_paused = true)]
async fn below_half_the_limit_what_remains_is_spread_until_the_reset() {
    // 10 of 100 remain for 1 s: one request every 100 ms.
    let (transport, arrivals) = transport(Duration::ZERO, |_| answer(200, openai(10, "1s")));
    let (layer, _) = adaptive();
    let service = layer.layer(transport);
    let started = Instant::now();
    service.clone().oneshot(request(A, None)).await.unwrap();
    let sending: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(request(A, None))))
        .collect();
    for sent in sending {
        sent.await.unwrap().unwrap();
    }
    // Each answer says 10 remain for another second, so the spacing stays about 100 ms.
    let ms = Duration::from_millis;
    let times = times(&arrivals, started);
    assert_eq!(times[..3], [ms(0), ms(0), ms(100)]);
    assert!(times[3] >= ms(180) && times[3] <= ms(200), "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_pauses_every_request_to_its_endpoint() {
    let (transport, arrivals) = transport(Duration::ZERO, |n| match n {
        0 => answer(200, openai(99, "1s")),
        1 => {
            let mut headers = openai(50, "1s");
            headers.push(("retry-after".into(), "2".into()));
            answer(429, headers)
        }
        _ => answer(200, openai(99, "1s")),
    });
    let (layer, stats) = adaptive();
    let service = layer.layer(transport);
    let started = Instant::now();
    service.clone().oneshot(request(A, None)).await.unwrap();
    let refused = service.clone().oneshot(request(A, None)).await.unwrap();
    assert_eq!(refused.status, 429);
    // Two other requests, and one to another endpoint, which is not paused.
    let a1 = tokio::spawn(service.clone().oneshot(request(A, None)));
    let a2 = tokio::spawn(service.clone().oneshot(request(A, None)));
    let b = tokio::spawn(service.clone().oneshot(request(B, None)));
    for sent in [a1, a2, b] {
        assert_eq!(sent.await.unwrap().unwrap().status, 200);
    }
    let arrivals = arrivals.lock().unwrap();
    let at = |url: &str| -> Vec<Duration> {
        arrivals
            .iter()
            .filter(|(_, u)| u.starts_with(url))
            .map(|(t, _)| *t - started)
            .collect()
    };
    let two = Duration::from_secs(2);
    assert_eq!(at(A), [Duration::ZERO, Duration::ZERO, two, two]);
    assert_eq!(at(B), [Duration::ZERO]);
    assert_eq!((stats.rate_limited(), stats.held()), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn without_headers_429s_slow_the_pace_and_successes_speed_it_up_again() {
    // Five answered at once, then a bare 429: the rate estimate becomes 0.9 of the 5 requests
    // the provider accepted over the last second.
    let (transport, arrivals) = transport(Duration::ZERO, |n| match n {
        5 => answer(429, vec![]),
        _ => answer(200, vec![]),
    });
    let (layer, _) = adaptive();
    let service = layer.layer(transport);
    for _ in 0..8 {
        service.clone().oneshot(request(A, None)).await.unwrap();
    }
    let times = times(&arrivals, times_start(&arrivals));
    let gap = times[7] - times[6];
    let expected = Duration::from_secs_f64(1.0 / (5.0 * FIRST_ESTIMATE));
    assert!(
        gap >= expected - Duration::from_millis(1) && gap <= expected + Duration::from_millis(1),
        "{gap:?}, expected {expected:?}: {times:?}"
    );
    assert!(times[..6].iter().all(|t| *t == Duration::ZERO), "{times:?}");

    // Successes raise the estimate until it is dropped: then nothing waits.
    let pacer = Arc::clone(&layer.pacer);
    let endpoint = pacer.endpoint(request(A, None).url());
    let before = endpoint.pace().rate.unwrap().per_second;
    for _ in 0..20 {
        service.clone().oneshot(request(A, None)).await.unwrap();
    }
    let rate = endpoint.pace().rate;
    assert!(rate.is_none_or(|r| r.per_second > before), "{rate:?}");
    for _ in 0..400 {
        service.clone().oneshot(request(A, None)).await.unwrap();
        if endpoint.pace().rate.is_none() {
            break;
        }
    }
    assert!(endpoint.pace().rate.is_none());
}

fn times_start(arrivals: &Arrivals) -> Instant {
    arrivals.lock().unwrap()[0].0
}

#[tokio::test(start_paused = true)]
async fn only_a_429_of_a_request_sent_after_the_last_decrease_and_a_second_later_decreases_again() {
    let mut pace = Pace::new(Instant::now());
    let now = Instant::now();
    for _ in 0..10 {
        pace.take(now, Duration::from_secs(5));
    }
    let refused = answer(429, vec![]);
    pace.observe(3, Some(&refused), now, Duration::from_secs(5));
    let once = pace.rate.unwrap().per_second;
    // Nothing accepted yet: 0.9 of the 10 sent over the last second.
    assert!((once - 9.0).abs() < 1e-9, "{once}");
    // Sent before the decrease: the same burst, not new evidence.
    pace.observe(4, Some(&refused), now, Duration::from_secs(5));
    assert_eq!(pace.rate.unwrap().per_second, once);
    // Sent after it, but within a second of it: the same spent window.
    pace.take(now, Duration::from_secs(5));
    pace.observe(
        10,
        Some(&refused),
        now + Duration::from_millis(500),
        Duration::from_secs(5),
    );
    assert_eq!(pace.rate.unwrap().per_second, once);
    // Sent after it, a second later: a new refusal.
    let later = now + DECREASE_EVERY;
    pace.take(later, Duration::from_secs(5));
    pace.observe(11, Some(&refused), later, Duration::from_secs(5));
    assert!((pace.rate.unwrap().per_second - 9.0 * DECREASE).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_deadline_would_pass_while_held_times_out_at_once() {
    let (transport, arrivals) = transport(Duration::ZERO, |n| match n {
        0 => answer(429, vec![("retry-after".into(), "3".into())]),
        _ => answer(200, vec![]),
    });
    let (layer, _) = adaptive();
    let service = layer.layer(transport);
    service.clone().oneshot(request(A, None)).await.unwrap();
    let started = Instant::now();
    let deadline = (started + Duration::from_secs(1)).into_std();
    let result = service.clone().oneshot(request(A, Some(deadline))).await;
    assert_eq!(result, Err(OutboundError::Timeout));
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(arrivals.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_hold_is_longer_than_max_wait() {
    let (transport, arrivals) = transport(Duration::ZERO, |n| match n {
        0 => {
            let mut headers = openai(0, "6m0s");
            headers.push(("retry-after".into(), "360".into()));
            answer(429, headers)
        }
        _ => answer(200, vec![]),
    });
    let stats = Arc::new(OutboundStats::default());
    let service = AdaptiveLayer::new(Duration::from_secs(2), stats).layer(transport);
    let started = Instant::now();
    service.clone().oneshot(request(A, None)).await.unwrap();
    service.clone().oneshot(request(A, None)).await.unwrap();
    assert_eq!(
        times(&arrivals, started),
        [Duration::ZERO, Duration::from_secs(2)]
    );
}

#[tokio::test(start_paused = true)]
async fn no_tokens_left_holds_until_the_tokens_reset() {
    let (transport, arrivals) = transport(Duration::ZERO, |n| match n {
        0 => answer(
            200,
            vec![
                ("x-ratelimit-remaining-tokens".into(), "0".into()),
                ("x-ratelimit-reset-tokens".into(), "1.5s".into()),
            ],
        ),
        _ => answer(200, vec![]),
    });
    let (layer, _) = adaptive();
    let service = layer.layer(transport);
    let started = Instant::now();
    service.clone().oneshot(request(A, None)).await.unwrap();
    service.clone().oneshot(request(A, None)).await.unwrap();
    assert_eq!(
        times(&arrivals, started),
        [Duration::ZERO, Duration::from_millis(1500)]
    );
}

#[tokio::test(start_paused = true)]
async fn until_the_provider_has_said_anything_requests_go_unpaced() {
    // A slow first answer holds nothing back: no call's latency is added to a run's start.
    let (slow, arrivals) = transport(Duration::from_secs(3600), |_| answer(200, vec![]));
    let (layer, stats) = adaptive();
    let service = layer.layer(slow);
    let started = Instant::now();
    let sending: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(request(A, None))))
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(times(&arrivals, started), [Duration::ZERO; 3]);
    assert_eq!(stats.held(), 0);
    for sent in sending {
        sent.abort();
    }

    // Failures say nothing about the limit: the next requests go at once too.
    let (failing, seen) = fake::service(|| Err(OutboundError::Connection("reset".into())));
    let (layer, _) = adaptive();
    let service = layer.layer(failing);
    service.clone().oneshot(request(A, None)).await.unwrap_err();
    service.clone().oneshot(request(A, None)).await.unwrap_err();
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(started.elapsed(), Duration::from_millis(1));
}
