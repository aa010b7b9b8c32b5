//! Harness for waio's end-to-end tests: built plugins, pipelines in temporary directories, a
//! timeline server for observing concurrency, and the `waio` binary for CLI tests.
//!
//! Plugins come from `dist/plugins/`, built by `scripts/build-plugins` (the test script runs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub use waio::manifest::Manifest;
pub use waio::metrics::RunSummary;
pub use waio::pipeline::PipelineError;
pub use waio_mock_provider::{MockConfig, MockServer};

pub mod flink;
pub mod kafka;
pub mod observe;
pub mod redis;
pub mod reload;
pub mod scripted;
pub mod serve;
pub use scripted::ScriptedServer;

/// The repository root: found at run time (`cargo test` runs in the package directory), because a
/// target directory shared by several checkouts can hold a build made in another one.
pub fn repo_root() -> PathBuf {
    let is_repo = |dir: &Path| dir.join("wit/waio.wit").exists();
    if let Ok(dir) = std::env::var("WAIO_REPO") {
        return PathBuf::from(dir);
    }
    if let Some(repo) = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|d| is_repo(d)).map(Path::to_path_buf))
    {
        return repo;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Path of a built plugin component, e.g. `plugin("behave")`.
pub fn plugin(name: &str) -> PathBuf {
    let path = repo_root()
        .join("dist/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins first",
        path.display()
    );
    path
}

/// A pipeline in its own temporary directory: input, output and dead letters live there.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
}

/// What a run left behind.
pub struct Outcome {
    pub result: Result<RunSummary, PipelineError>,
    /// Output lines, parsed.
    pub output: Vec<Value>,
    /// Dead-letter lines, parsed.
    pub dead: Vec<Value>,
}

impl Outcome {
    pub fn summary(&self) -> &RunSummary {
        match &self.result {
            Ok(summary) => summary,
            Err(error) => panic!("the run failed: {error}"),
        }
    }

    pub fn error(&self) -> String {
        match &self.result {
            Ok(_) => panic!("the run succeeded, expected it to fail"),
            Err(error) => error.to_string(),
        }
    }

    /// The `id` of every output record (payload format), in output order; watermarks as "W<ts>".
    pub fn ids(&self) -> Vec<String> {
        ids(&self.output)
    }
}

/// The `id` of every output line (payload or envelope format); watermarks as "W<ts>".
pub fn ids(lines: &[Value]) -> Vec<String> {
    lines.iter().map(label).collect()
}

fn label(line: &Value) -> String {
    if let Some(ts) = line.get("watermark") {
        return format!("W{ts}");
    }
    let payload = line.get("payload").unwrap_or(line);
    match payload.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => payload.to_string(),
    }
}

impl Pipeline {
    pub fn new() -> Self {
        Pipeline {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `input.jsonl` with one line per entry.
    pub fn input(&self, lines: &[String]) -> &Self {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.path("input.jsonl"), text).expect("write input");
        self
    }

    /// Writes `pipeline.toml` and returns its path.
    pub fn manifest(&self, toml: &str) -> PathBuf {
        let path = self.path("pipeline.toml");
        std::fs::write(&path, toml).expect("write manifest");
        path
    }

    /// Runs the pipeline in this process (the same code path as `waio run`).
    pub async fn run(&self, toml: &str) -> Outcome {
        let path = self.manifest(toml);
        let manifest = match Manifest::load(&path) {
            Ok(m) => m,
            Err(e) => panic!("manifest rejected: {e}\n{toml}"),
        };
        // A hang guard, not a speed check: a run that never ends is a bug to report, not wait out.
        let result = tokio::time::timeout(
            Duration::from_secs(120),
            waio::pipeline::run(&manifest, &waio::pipeline::RunOptions::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("the pipeline did not finish within 120 s"));
        Outcome {
            result,
            output: read_jsonl(&self.path("out.jsonl")),
            dead: read_jsonl(&self.path("dead.jsonl")),
        }
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// A manifest for one operator running `plugin` over `input.jsonl` into `out.jsonl`, with dead
/// letters in `dead.jsonl`. `operator_extra` is added to the `[[operator]]` table (TOML lines),
/// `config` is the `[operator.config]` body.
pub fn one_operator(
    plugin_path: &Path,
    operator_extra: &str,
    config: &str,
    sink_extra: &str,
) -> String {
    format!(
        r#"
name = "test"
[source]
kind = "file"
path = "input.jsonl"
key_field = "key"
timestamp_field = "ts"

[[operator]]
name = "op"
plugin = "{plugin}"
{operator_extra}
[operator.config]
{config}

[sink]
kind = "file"
path = "out.jsonl"
{sink_extra}

[dead_letter]
path = "dead.jsonl"
"#,
        plugin = plugin_path.display()
    )
}

/// Runs the behave test plugin over `lines` (one operator; `operator_extra` added to its table),
/// with a fresh mock provider's `/echo` as its echo server and 127.0.0.1 allowed.
pub async fn behave(lines: &[Value], operator_extra: &str) -> Outcome {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let extra = format!("allowed_hosts = [\"127.0.0.1\"]\n{operator_extra}");
    let config = format!("echo_url = \"{}/echo\"", mock.url());
    p.run(&one_operator(&plugin("behave"), &extra, &config, ""))
        .await
}

/// Starts the mock provider on a free port.
pub async fn mock() -> MockServer {
    mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..MockConfig::default()
    })
    .await
}

pub async fn mock_with(config: MockConfig) -> MockServer {
    MockServer::start(config)
        .await
        .expect("mock provider starts")
}

/// An HTTP server that answers `GET /?id=X&delay_ms=N` after N ms and records when each request
/// started and ended, so tests can see how many records were in flight at once.
pub struct TimelineServer {
    pub addr: std::net::SocketAddr,
    events: Arc<Mutex<Vec<(Instant, bool, String)>>>,
}

impl TimelineServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let events: Arc<Mutex<Vec<(Instant, bool, String)>>> = Arc::default();
        let log = Arc::clone(&events);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request at a time per connection (keep-alive).
                        let Some(head) = read_head(&mut socket, &mut buf).await else {
                            return;
                        };
                        let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                        let query = |name: &str| {
                            target.split(['?', '&']).find_map(|kv| {
                                kv.strip_prefix(&format!("{name}=")).map(str::to_string)
                            })
                        };
                        let id = query("id").unwrap_or_default();
                        let delay: u64 =
                            query("delay_ms").and_then(|d| d.parse().ok()).unwrap_or(0);
                        log.lock()
                            .expect("log")
                            .push((Instant::now(), true, id.clone()));
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        log.lock()
                            .expect("log")
                            .push((Instant::now(), false, id.clone()));
                        let body = format!("{{\"id\":\"{id}\"}}");
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TimelineServer { addr, events }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The most requests that were in flight at the same moment.
    pub fn max_in_flight(&self) -> usize {
        let events = self.events.lock().expect("log");
        let mut now = 0usize;
        let mut max = 0usize;
        for (_, start, _) in events.iter() {
            if *start {
                now += 1;
                max = max.max(now);
            } else {
                now -= 1;
            }
        }
        max
    }

    /// Ids whose request started before the request of `id` ended.
    pub fn started_before_end_of(&self, id: &str) -> Vec<String> {
        let events = self.events.lock().expect("log");
        let mut started = Vec::new();
        for (_, start, who) in events.iter() {
            if !*start && who == id {
                break;
            }
            if *start {
                started.push(who.clone());
            }
        }
        started
    }
}

/// An HTTP/1.1 server that echoes each request's headers as JSON,
/// `{"path": "/...", "headers": {"name": "value", ...}}`, encoded as the request's
/// `Accept-Encoding` asks: `gzip`, or `x-reverse` (the bytes in reverse order: an encoding a
/// plugin could undo itself), else plain. `/unasked-reverse` answers `x-reverse` whatever was
/// asked; `/bomb` answers 64 MiB of zeros gzipped (64 KiB on the wire) whatever was asked. One
/// request per connection. It keeps the headers of every request it saw.
pub struct EchoServer {
    pub addr: std::net::SocketAddr,
    seen: SeenHeaders,
}

/// The headers (lower-case name, value) of each request an [`EchoServer`] received.
type SeenHeaders = Arc<Mutex<Vec<Vec<(String, String)>>>>;

impl EchoServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: SeenHeaders = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(echo_once(socket, Arc::clone(&log)));
            }
        });
        EchoServer { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The headers (lower-case names) of every request received, in arrival order.
    pub fn requests(&self) -> Vec<Vec<(String, String)>> {
        self.seen.lock().expect("log").clone()
    }
}

async fn echo_once(mut socket: tokio::net::TcpStream, log: SeenHeaders) {
    use std::io::Write;
    let mut buf = Vec::new();
    let Some(head) = read_head(&mut socket, &mut buf).await else {
        return;
    };
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    log.lock().expect("log").push(headers.clone());
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // Read (and ignore) a body, so that the client sees its request consumed.
    let length: usize = header("content-length").parse().unwrap_or(0);
    let mut have = buf.len();
    let mut chunk = [0u8; 4096];
    while have < length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }

    let plain = if path == "/bomb" {
        vec![0u8; 64 * 1024 * 1024]
    } else {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        serde_json::json!({"path": path, "headers": map})
            .to_string()
            .into_bytes()
    };
    let accepted = header("accept-encoding");
    let (encoding, body) = if path == "/unasked-reverse" || accepted.contains("x-reverse") {
        (Some("x-reverse"), plain.into_iter().rev().collect())
    } else if path == "/bomb" || accepted.contains("gzip") {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&plain).expect("gzip");
        (Some("gzip"), encoder.finish().expect("gzip"))
    } else {
        (None, plain)
    };
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(encoding) = encoding {
        answer.push_str(&format!("content-encoding: {encoding}\r\n"));
    }
    answer.push_str("\r\n");
    let mut bytes = answer.into_bytes();
    bytes.extend_from_slice(&body);
    let _ = socket.write_all(&bytes).await;
    let _ = socket.shutdown().await;
}

/// Reads one request head (up to its blank line) from `socket`, taking it out of `buf`; what
/// follows it (a body) stays in `buf`. `None` when the connection ends first.
async fn read_head(socket: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end);
    Some(head)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `waio` binary next to the test executable (built by `cargo build --release -p waio`,
/// which the test script runs first), or `$WAIO_BIN`.
pub fn waio_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("WAIO_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/waio
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("waio"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --release -p waio` (scripts/test does)",
        bin.display()
    );
    bin
}

/// Runs `waio ARGS` in `dir`; returns (exit code, stdout, stderr).
pub fn run_waio(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_waio_env(dir, args, &[])
}

/// Like [`run_waio`], with extra environment variables.
pub fn run_waio_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(waio_bin())
        .args(args)
        .current_dir(dir)
        .env("WAIO_LOG", "warn")
        // Scaffolded projects refer to this checkout's SDKs.
        .env("WAIO_HOME", repo_root())
        .envs(env.iter().copied())
        .output()
        .expect("run waio");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A JSON input line for the behave test plugin.
pub fn rec(fields: Value) -> String {
    fields.to_string()
}

/// Starts `waio ARGS` in `dir` without waiting; stdin is a pipe the caller may write to (and must
/// drop to close), stdout and stderr go to files `stdout.log` / `stderr.log` in `dir`.
pub fn spawn_waio(dir: &Path, args: &[&str]) -> std::process::Child {
    let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
    Command::new(waio_bin())
        .args(args)
        .current_dir(dir)
        .env("WAIO_LOG", "warn,waio=info")
        .env("WAIO_HOME", repo_root())
        .stdin(std::process::Stdio::piped())
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"))
        .spawn()
        .expect("start waio")
}

/// A child process that is killed when dropped: a test that fails halfway leaves no `waio`
/// running behind it.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` ("TERM", "INT", "KILL") to a child process.
pub fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits for a child to exit, at most `limit` (a hang guard: then it is killed and the test fails).
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> i32 {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("waio did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit` (a hang guard).
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
