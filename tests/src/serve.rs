//! `waio serve` for tests: the sidecar started on a free port, and a keep-alive HTTP/1.1
//! connection that posts batches and reads the answer lines as they stream in (by hand, over a
//! TCP stream: the tests see the chunks arrive, which a client library would hide).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::observe::free_port;
use crate::{spawn_waio, wait_until, KillOnDrop};

/// A running `waio serve`.
pub struct Sidecar {
    pub process: KillOnDrop,
    pub addr: SocketAddr,
}

impl Sidecar {
    /// `waio serve MANIFEST --listen 127.0.0.1:<free port>` in `dir`, once it answers.
    pub fn start(dir: &Path, manifest: &Path) -> Sidecar {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Sidecar::start_at(dir, manifest, addr)
    }

    /// The same, on a given address (a restart takes the same port).
    pub fn start_at(dir: &Path, manifest: &Path, addr: SocketAddr) -> Sidecar {
        let listen = addr.to_string();
        let manifest = manifest.to_string_lossy().into_owned();
        let process = KillOnDrop(spawn_waio(dir, &["serve", &manifest, "--listen", &listen]));
        let mut sidecar = Sidecar { process, addr };
        wait_until("waio serve answers", Duration::from_secs(60), || {
            if let Ok(Some(status)) = sidecar.process.try_wait() {
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                panic!("waio serve exited with {status}:\n{log}");
            }
            sidecar.get("/status.json").0 == 200
        });
        sidecar
    }

    /// A new keep-alive connection.
    pub fn connect(&self) -> Connection {
        Connection::open(self.addr)
    }

    /// `GET path` on a connection of its own: status and body (status 0 if it cannot connect).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path)
    }

    /// `METHOD path` with no body, on a connection of its own (status 0 if it cannot connect).
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        let Ok(stream) = TcpStream::connect(self.addr) else {
            return (0, String::new());
        };
        let mut connection = Connection::from_stream(stream);
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n\r\n",
            self.addr
        );
        match connection.exchange(request.as_bytes()) {
            Ok(response) => (
                response.status,
                String::from_utf8_lossy(&response.body).into(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// The value of one series of `/metrics` (`name{labels}` as served), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }
}

/// One answer line and when it arrived, counted from the moment the batch was sent.
#[derive(Debug, Clone)]
pub struct Answer {
    pub after: Duration,
    pub line: Value,
}

/// A response: its status, and its body (a failed batch's text) or its answer lines.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub answers: Vec<Answer>,
}

impl Response {
    /// The answer to record `i` of the batch.
    pub fn answer(&self, i: usize) -> &Value {
        let found = self.answers.iter().find(|a| a.line["i"] == i);
        &found
            .unwrap_or_else(|| panic!("no answer for record {i}: {:?}", self.answers))
            .line
    }

    /// The position of record `i`'s answer in the order they arrived.
    pub fn rank(&self, i: usize) -> usize {
        self.answers
            .iter()
            .position(|a| a.line["i"] == i)
            .unwrap_or_else(|| panic!("no answer for record {i}"))
    }
}

/// A keep-alive HTTP/1.1 connection to `waio serve`.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Connection {
        Connection::from_stream(TcpStream::connect(addr).expect("connect to waio serve"))
    }

    fn from_stream(stream: TcpStream) -> Connection {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        Connection {
            reader: BufReader::new(stream),
        }
    }

    /// Posts `lines` as one batch from `caller` and reads every answer line.
    pub fn post(&mut self, caller: &str, lines: &[String]) -> Response {
        let mut body = lines.join("\n").into_bytes();
        body.push(b'\n');
        self.post_raw(caller, &body)
            .expect("an answer from waio serve")
    }

    pub fn post_raw(&mut self, caller: &str, body: &[u8]) -> std::io::Result<Response> {
        let mut request = format!(
            "POST /v1/invoke HTTP/1.1\r\nhost: waio\r\ncontent-type: application/x-ndjson\r\nx-waio-caller: {caller}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.exchange(&request)
    }

    fn exchange(&mut self, request: &[u8]) -> std::io::Result<Response> {
        let sent = Instant::now();
        self.reader.get_mut().write_all(request)?;
        let (status, headers) = self.head()?;
        let mut response = Response {
            status,
            body: Vec::new(),
            answers: Vec::new(),
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if header("transfer-encoding") == Some("chunked") {
            let mut pending = Vec::new();
            while let Some(chunk) = self.chunk()? {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    response.body.extend_from_slice(&line);
                    if let Ok(line) = serde_json::from_slice(&line) {
                        response.answers.push(Answer {
                            after: sent.elapsed(),
                            line,
                        });
                    }
                }
            }
            response.body.extend_from_slice(&pending);
        } else {
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            response.body = vec![0; length];
            self.reader.read_exact(&mut response.body)?;
        }
        Ok(response)
    }

    /// The status line and the headers (lower-case names).
    fn head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        let status_line = self.line()?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                return Ok((status, headers));
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }

    /// One chunk of a chunked body; `None` after the last.
    fn chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let size_line = self.line()?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| std::io::Error::other(format!("bad chunk size {size_line:?}: {e}")))?;
        if size == 0 {
            self.line()?;
            return Ok(None);
        }
        let mut chunk = vec![0; size];
        self.reader.read_exact(&mut chunk)?;
        self.line()?;
        Ok(Some(chunk))
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}
