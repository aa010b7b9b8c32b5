//! A purpose-built HTTP/1.1 server for the fault matrix: each request's path says how the
//! server answers its attempts, and the server logs every request it receives.
//!
//! Path `/SCRIPT/ID`: attempts of one (SCRIPT, ID) are counted; SCRIPT is a list of steps
//! separated by `+`, the last step repeating forever. A step is `STATUS` (e.g. `429`, `503`,
//! `400`), `STATUS~ra=SECS` (with `Retry-After: SECS`), `STATUS~ms=MS` (with
//! `retry-after-ms: MS`), `STATUS~date=SECS` (with `Retry-After` as an HTTP date SECS seconds
//! ahead), `hang` (never answered), `reset` (the connection closed without an answer),
//! `slow=MS` (200 after MS milliseconds) or `ok` (200 at once).
//! Example: `/429~ra=1+429~ra=1+ok/7` answers record 7's first two attempts 429 with
//! `Retry-After: 1` and every later one 200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub script: String,
    pub id: String,
    pub at: Instant,
}

#[derive(Default)]
struct Log {
    arrivals: Vec<Arrival>,
    attempts: HashMap<(String, String), usize>,
}

pub struct ScriptedServer {
    pub addr: std::net::SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl ScriptedServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log: Arc<Mutex<Log>> = Arc::default();
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, Arc::clone(&shared)));
            }
        });
        ScriptedServer { addr, log }
    }

    /// The URL of record `id` under `script`.
    pub fn url(&self, script: &str, id: impl std::fmt::Display) -> String {
        format!("http://{}/{script}/{id}", self.addr)
    }

    /// Every request received, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.log.lock().expect("log").arrivals.clone()
    }

    /// Requests received for record `id`.
    pub fn count(&self, id: impl std::fmt::Display) -> usize {
        let id = id.to_string();
        self.arrivals().iter().filter(|a| a.id == id).count()
    }

    /// The shortest gap between two consecutive requests of the same record, if any record
    /// had two.
    pub fn shortest_gap(&self) -> Option<Duration> {
        let mut last: HashMap<String, Instant> = HashMap::new();
        let mut shortest: Option<Duration> = None;
        for arrival in self.arrivals() {
            if let Some(before) = last.insert(arrival.id.clone(), arrival.at) {
                let gap = arrival.at.duration_since(before);
                shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            }
        }
        shortest
    }
}

/// How one attempt is answered.
enum Step {
    Status {
        status: u16,
        headers: Vec<(String, String)>,
    },
    Hang,
    Reset,
    Slow(u64),
}

fn step_of(script: &str, attempt: usize) -> Step {
    let steps: Vec<&str> = script.split('+').collect();
    let step = steps[attempt.min(steps.len() - 1)];
    let (head, extra) = step.split_once('~').unwrap_or((step, ""));
    match head {
        "hang" => return Step::Hang,
        "reset" => return Step::Reset,
        "ok" => {
            return Step::Status {
                status: 200,
                headers: vec![],
            }
        }
        _ => {}
    }
    if let Some(ms) = head.strip_prefix("slow=") {
        return Step::Slow(ms.parse().unwrap_or(0));
    }
    let status: u16 = head.parse().unwrap_or(500);
    let headers = match extra.split_once('=') {
        Some(("ra", secs)) => vec![("retry-after".to_string(), secs.to_string())],
        Some(("ms", ms)) => vec![("retry-after-ms".to_string(), ms.to_string())],
        Some(("date", secs)) => {
            let at = SystemTime::now() + Duration::from_secs(secs.parse().unwrap_or(1));
            vec![("retry-after".to_string(), http_date(at))]
        }
        _ => vec![],
    };
    Step::Status { status, headers }
}

/// An IMF-fixdate (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT",
        months[(month - 1) as usize]
    )
}

async fn serve(mut socket: TcpStream, log: Arc<Mutex<Log>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = super::read_head(&mut socket, &mut buf).await else {
            return;
        };
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let script = parts.next().unwrap_or("ok").to_string();
        let id = parts.next().unwrap_or("").to_string();
        // A body (the rate-limit tests POST one) is read and dropped, so that the next
        // request on the connection starts where it should.
        if !skip_body(&mut socket, &mut buf, &head).await {
            return;
        }
        let attempt = {
            let mut log = log.lock().expect("log");
            log.arrivals.push(Arrival {
                script: script.clone(),
                id: id.clone(),
                at: Instant::now(),
            });
            let n = log.attempts.entry((script.clone(), id)).or_insert(0);
            *n += 1;
            *n - 1
        };
        let (status, headers) = match step_of(&script, attempt) {
            Step::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Step::Reset => return,
            Step::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (200, vec![])
            }
            Step::Status { status, headers } => (status, headers),
        };
        let body = format!("{{\"status\":{status}}}");
        let mut answer = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            answer.push_str(&format!("{name}: {value}\r\n"));
        }
        answer.push_str("\r\n");
        answer.push_str(&body);
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads the body the head announces (`content-length`) out of `buf` and the socket; false
/// when the connection ended first.
async fn skip_body(socket: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> bool {
    use tokio::io::AsyncReadExt;
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut chunk = [0u8; 4096];
    while buf.len() < length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..length);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn the_last_step_repeats() {
        assert!(matches!(
            step_of("429~ra=1+ok", 0),
            Step::Status { status: 429, .. }
        ));
        assert!(matches!(
            step_of("429~ra=1+ok", 5),
            Step::Status { status: 200, .. }
        ));
        assert!(matches!(step_of("reset+slow=5", 1), Step::Slow(5)));
    }
}
