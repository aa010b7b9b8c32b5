//! What the observability tests use: a plain HTTP GET (and POST), the admin address a run logged, and a
//! real Prometheus server (Debian's `prometheus`, installed by scripts/setup-observability).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An answer: status, content type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` on `addr` ("127.0.0.1:PORT") over HTTP/1.1 with `Connection: close`.
pub fn http_get(addr: &str, path: &str, accept: Option<&str>) -> Result<Answer, String> {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    http_request(
        addr,
        &format!("GET {path}"),
        &accept,
        Duration::from_secs(10),
    )
}

/// `POST path` with an empty body, as `http_get` does a GET. A reload compiles a component
/// before it answers: the answer may take up to a minute.
pub fn http_post(addr: &str, path: &str) -> Result<Answer, String> {
    let length = "Content-Length: 0\r\n";
    http_request(
        addr,
        &format!("POST {path}"),
        length,
        Duration::from_secs(60),
    )
}

/// Sends `line` (method and path) with `headers` (each ending in CRLF) and reads the answer to
/// the connection's end.
fn http_request(addr: &str, line: &str, headers: &str, wait: Duration) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(wait))
        .map_err(|e| e.to_string())?;
    let request = format!("{line} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The address the admin server of the run in `dir` logged (it listens on port 0 in tests).
pub fn admin_addr(dir: &Path, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        if let Some(addr) = log
            .split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
        {
            return addr.to_string();
        }
        assert!(
            Instant::now() < until,
            "no admin address logged within {limit:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Percent-encodes a query parameter.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of its own, on a free port with its data in a temp dir; killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` on `config` (a prometheus.yml; files it names relative to itself
    /// are looked up beside it).
    pub fn start(config: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (scripts/setup-observability installs it)");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        crate::wait_until("Prometheus to be ready", Duration::from_secs(60), || {
            http_get(&prometheus.addr, "/-/ready", None).is_ok_and(|a| a.status == 200)
        });
        prometheus
    }

    /// The result vector of an instant query (`data.result`); panics on an error answer.
    pub fn query(&self, query: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let answer = http_get(&self.addr, &path, None).expect("query Prometheus");
        let json: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("{query}: not JSON ({e}): {}", answer.body));
        assert_eq!(json["status"], "success", "{query}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of `query` (summed over series), if it returned any.
    pub fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query);
        if result.is_empty() {
            return None;
        }
        Some(
            result
                .iter()
                .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_bin() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}
