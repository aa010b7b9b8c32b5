//! Observability, end to end with real components: the `waio` binary's admin server scraped by
//! a real Prometheus (Debian's) with the shipped `examples/observability/prometheus.yml`, every
//! dashboard and alert query run against it, the status page drawn by headless Chromium, and
//! the progress line under a pseudo-terminal and a pipe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::observe::{admin_addr, http_get, Prometheus};
use waio_tests::*;

const RECORDS: usize = 400;
/// Records repeat their text, so the result cache has hits.
const TEXTS: usize = 80;

/// The `openai` chat operator with a result cache, a breaker, retries, a price and a budget:
/// every family of metrics the dashboard and the alerts use exists.
fn manifest(mock: &MockServer, source: &str) -> String {
    format!(
        r#"name = "observed"
{source}

[sink]
kind = "file"
path = "out.jsonl"

[dead_letter]
path = "dead.jsonl"

[secrets.openai]
value = "sk-mock-0001"
hosts = ["127.0.0.1"]

[[operator]]
name = "triage"
plugin = "{plugin}"
capacity = 8
allowed_hosts = ["127.0.0.1"]
secrets = ["openai"]
on_failure = "dead-letter"
max_retries = 1
cache.key = ["/text"]
[operator.retry]
initial_delay = "5ms"
[operator.circuit_breaker]
minimum_calls = 1000
[operator.config]
base_url = "{url}/v1"
mode = "chat"
model = "mock-small"
api_key_secret = "openai"
system_prompt = "Labels: billing, bug"

[pricing."mock-small"]
input_per_million = 1000
output_per_million = 2000

[budget]
max_cost_total = 100000
"#,
        plugin = plugin("openai").display(),
        url = mock.url(),
    )
}

fn record(id: usize) -> String {
    json!({"id": id, "text": format!("ticket {} about my invoice", id % TEXTS)}).to_string()
}

/// `waio ARGS` in `dir`, stdin a pipe, stderr to `stderr.log`, with `WAIO_LOG` as given.
fn spawn(dir: &Path, args: &[&str], log: &str) -> Child {
    let file = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
    Command::new(waio_bin())
        .args(args)
        .current_dir(dir)
        .env("WAIO_LOG", log)
        .stdin(Stdio::piped())
        .stdout(file("stdout.log"))
        .stderr(file("stderr.log"))
        .spawn()
        .expect("start waio")
}

fn status(addr: &str) -> Value {
    let answer = http_get(addr, "/status.json", None).expect("GET /status.json");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.content_type, "application/json");
    serde_json::from_str(&answer.body).expect("/status.json is JSON")
}

/// The shipped prometheus.yml and alert rules, copied into `dir`, scraping `target` every second.
fn prometheus_config(dir: &Path, target: &str) -> PathBuf {
    let shipped = repo_root().join("examples/observability");
    let config = std::fs::read_to_string(shipped.join("prometheus.yml")).expect("prometheus.yml");
    let shipped_target = r#"- targets: ["127.0.0.1:9464"]"#;
    assert!(config.contains(shipped_target) && config.contains("scrape_interval: 5s"));
    let config = config
        .replace(shipped_target, &format!(r#"- targets: ["{target}"]"#))
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
    std::fs::copy(shipped.join("alert-rules.yml"), dir.join("alert-rules.yml")).expect("rules");
    dir.join("prometheus.yml")
}

/// Every PromQL expression of the shipped dashboard, with its variables set to "everything".
fn dashboard_queries() -> Vec<String> {
    let path = repo_root().join("examples/observability/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(
                    expr.replace("$__rate_interval", "1m")
                        .replace("$pipeline", ".*")
                        .replace("$operator", ".*"),
                );
            }
        }
    }
    queries
}

/// Every alert's query without its threshold (`(QUERY) OP NUMBER`): what it compares.
fn alert_queries() -> Vec<String> {
    let path = repo_root().join("examples/observability/alert-rules.yml");
    let rules = std::fs::read_to_string(path).expect("alert rules");
    let queries: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(|expr| {
            let shape = || format!("not (QUERY) OP NUMBER: {expr}");
            let (rest, number) = expr
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("{}", shape()));
            let (query, op) = rest
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("{}", shape()));
            assert!(
                number.parse::<f64>().is_ok() && [">", "<", "=="].contains(&op),
                "{}",
                shape()
            );
            let inner = query.strip_prefix('(').and_then(|q| q.strip_suffix(')'));
            inner.unwrap_or_else(|| panic!("{}", shape())).to_string()
        })
        .collect();
    assert_eq!(queries.len(), 7, "{rules}");
    queries
}

/// A run fed through stdin, watched by Prometheus while it goes: once every record is done,
/// the counters Prometheus scraped equal the run summary's, and every query of the dashboard
/// and the alert rules returns data. Meanwhile the status page draws its charts in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_summary_counters_and_every_dashboard_and_alert_query_has_data() {
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 20,
        error_rate: 0.05,
        error_status: Some(500),
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    p.manifest(&manifest(&mock, "[source]\nkind = \"stdin\""));
    let dir = p.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || watched_run(&dir))
        .await
        .expect("the watched run");
    drop(mock);
}

fn watched_run(dir: &Path) {
    let mut waio = spawn(
        dir,
        &[
            "run",
            "pipeline.toml",
            "--admin",
            "127.0.0.1:0",
            "--summary-json",
            "summary.json",
        ],
        "warn,waio=info",
    );
    let addr = admin_addr(dir, Duration::from_secs(120));
    let prometheus = Prometheus::start(&prometheus_config(dir, &addr));
    let mut stdin = waio.stdin.take().expect("stdin");
    let feed = |stdin: &mut std::process::ChildStdin, ids: &[usize]| {
        let lines: String = ids.iter().map(|id| record(*id) + "\n").collect();
        stdin.write_all(lines.as_bytes()).expect("feed waio");
    };
    let ids: Vec<usize> = (1..=RECORDS).collect();
    let (first, rest) = ids.split_at(TEXTS);
    // The first inputs are all new: while they are being called, the status shows them in
    // flight within the capacity.
    feed(&mut stdin, first);
    wait_until("records in flight", Duration::from_secs(10), || {
        let live = &status(&addr)["operators"][0];
        live["capacity"] == 8 && live["in_flight"].as_i64().is_some_and(|n| n > 0)
    });
    // The rest over about 3 s, so the status page and Prometheus see the run move.
    for chunk in rest.chunks(20) {
        feed(&mut stdin, chunk);
        std::thread::sleep(Duration::from_millis(200));
        if chunk[0] == 201 {
            status_page_draws_its_charts(dir, &addr);
        }
    }
    wait_until("every record to be done", Duration::from_secs(120), || {
        let s = status(&addr);
        let summary = &s["summary"];
        summary["records_in"] == RECORDS
            && summary["records_out"].as_u64().unwrap_or(0)
                + summary["operators"][0]["dead_lettered"]
                    .as_u64()
                    .unwrap_or(0)
                == RECORDS as u64
    });
    // The live part of the status: the breaker of the one endpoint, the budget.
    let live = status(&addr);
    let breakers = &live["operators"][0]["breakers"];
    assert_eq!(breakers.as_array().map(Vec::len), Some(1), "{live}");
    assert_eq!(breakers[0]["state"], "closed", "{live}");
    assert!(breakers[0]["endpoint"]
        .as_str()
        .is_some_and(|e| e.starts_with("http://127.0.0.1:")));
    assert_eq!(live["budget"]["max_cost_total"], 100000.0, "{live}");
    assert_eq!(live["budget"]["state"], "open", "{live}");
    // Prometheus has the final values, in at least two scrapes (rates need two).
    wait_until(
        "Prometheus to scrape the final counts",
        Duration::from_secs(60),
        || {
            prometheus.value("waio_sink_records_total + waio_sink_dead_letters_total")
                == Some(RECORDS as f64)
        },
    );
    std::thread::sleep(Duration::from_millis(2500));

    let scraped: Vec<(&str, Option<f64>)> = COMPARED
        .iter()
        .map(|(query, _)| (*query, prometheus.value(query)))
        .collect();
    for query in dashboard_queries().iter().chain(&alert_queries()) {
        assert!(
            !prometheus.query(query).is_empty(),
            "no data for {query}; the metrics were:\n{}",
            http_get(&addr, "/metrics", None)
                .map(|a| a.body)
                .unwrap_or_default()
        );
    }
    // The first inputs arrived at once, eight at a time fit: the operator was full a while.
    let full = prometheus.value("waio_operator_full_seconds_total");
    assert!(full.is_some_and(|s| s > 0.0), "time at capacity: {full:?}");
    // The scrape used OpenMetrics; a plain client gets the Prometheus text format.
    let plain = http_get(&addr, "/metrics", None).expect("GET /metrics");
    assert!(
        plain.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        plain.content_type
    );
    assert!(plain
        .body
        .contains("# TYPE waio_operator_records_in_total counter"));
    let open = http_get(&addr, "/metrics", Some("application/openmetrics-text")).expect("GET");
    assert!(open
        .content_type
        .starts_with("application/openmetrics-text"));
    assert!(open.body.ends_with("# EOF\n"));

    drop(stdin);
    assert_eq!(wait_exit(&mut waio, Duration::from_secs(60)), 0);
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("summary.json")).expect("summary.json"),
    )
    .expect("summary JSON");
    for ((query, pointer), (_, value)) in COMPARED.iter().zip(&scraped) {
        let expected = summary
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{pointer} in {summary}"));
        let value = value.unwrap_or_else(|| panic!("no data for {query}"));
        assert!(
            (value - expected).abs() < 1e-9,
            "{query} = {value} but the summary's {pointer} = {expected}"
        );
    }
    // The run did what the comparison needs to mean something.
    let op = &summary["operators"][0];
    assert!(op["cache_hits"].as_u64() > Some(0), "{op}");
    assert!(op["cost_usd"].as_f64() > Some(0.0), "{op}");
}

/// PromQL (summed over series) and the summary field it must equal.
const COMPARED: &[(&str, &str)] = &[
    ("waio_source_records_total", "/records_in"),
    ("waio_sink_records_total", "/records_out"),
    ("waio_sink_dead_letters_total", "/dead_lettered"),
    ("waio_operator_records_in_total", "/operators/0/records_in"),
    (
        "waio_operator_records_out_total",
        "/operators/0/records_out",
    ),
    (
        "waio_operator_records_dead_lettered_total",
        "/operators/0/dead_lettered",
    ),
    ("waio_http_requests_total", "/operators/0/http_calls"),
    ("waio_http_retries_total", "/operators/0/http_retries"),
    ("waio_cache_hits_total", "/operators/0/cache_hits"),
    ("waio_cache_misses_total", "/operators/0/cache_misses"),
    (
        "waio_tokens_total{direction=\"input\"}",
        "/operators/0/input_tokens",
    ),
    (
        "waio_tokens_total{direction=\"output\"}",
        "/operators/0/output_tokens",
    ),
    ("waio_cost_usd_total", "/operators/0/cost_usd"),
    ("waio_budget_spent_usd", "/budget_spent_usd"),
];

/// Headless Chromium loads the status page while records flow: every chart has a line of at
/// least two points; a screenshot is taken (kept beside the run).
fn status_page_draws_its_charts(dir: &Path, addr: &str) {
    let profile = tempfile::tempdir().expect("profile dir");
    let chromium = |extra: &[String]| {
        Command::new(chromium_bin())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--virtual-time-budget=6000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("http://{addr}/"))
            .stderr(Stdio::null())
            .output()
            .expect("run chromium (scripts/setup-observability installs it)")
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom".to_string()]).stdout).into_owned();
    for chart in ["throughput", "latency", "errors", "cache", "cost"] {
        let svg = dom
            .split(&format!("data-chart=\"{chart}\""))
            .nth(1)
            .and_then(|rest| rest.split("</svg>").next())
            .unwrap_or_else(|| panic!("no {chart} chart in the page:\n{dom}"));
        let points = svg
            .split("class=\"series\"")
            .skip(1)
            .filter_map(|path| path.split(" d=\"").nth(1)?.split('"').next())
            .map(|d| d.matches(['M', 'L']).count())
            .max()
            .unwrap_or(0);
        assert!(points >= 2, "the {chart} chart drew no line:\n{svg}");
    }
    let shot = dir.join("status.png");
    chromium(&[format!("--screenshot={}", shot.display())]);
    let png = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(png > 10_000, "the screenshot is {png} bytes");
}

fn chromium_bin() -> PathBuf {
    std::env::var_os("CHROMIUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

/// A pipeline over a file that takes a second or two: 200 records, 20 ms each, 4 at a time,
/// against a mock of its own.
async fn slow_file_run() -> (MockServer, Pipeline) {
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let lines: Vec<String> = (1..=200).map(record).collect();
    p.input(&lines);
    p.manifest(
        &manifest(&mock, "[source]\nkind = \"file\"\npath = \"input.jsonl\"")
            .replace("capacity = 8", "capacity = 4")
            .replace("cache.key = [\"/text\"]", ""),
    );
    (mock, p)
}

/// Under a pseudo-terminal (`script`), the progress line is redrawn in place while the run goes
/// and its last drawing shows the final counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_progress_line_is_redrawn_and_ends_with_the_final_counts() {
    let (mock, p) = slow_file_run().await;
    let dir = p.dir.path().to_path_buf();
    let (code, terminal) = tokio::task::spawn_blocking(move || {
        let command = format!("{} run pipeline.toml", waio_bin().display());
        let output = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(&dir)
            .env("WAIO_LOG", "warn")
            .output()
            .expect("run script (util-linux)");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    })
    .await
    .expect("script ran");
    assert_eq!(code, Some(0), "{terminal}");
    let drawings: Vec<&str> = terminal
        .split(['\r', '\n'])
        .filter(|part| part.contains(" in, ") && part.contains("records/s"))
        .collect();
    assert!(
        drawings.len() >= 3,
        "the line was drawn {} times:\n{terminal:?}",
        drawings.len()
    );
    // Redrawn in place: the terminal is told to go back to the line's start.
    assert!(
        terminal.contains('\r') || terminal.contains("\x1b["),
        "{terminal:?}"
    );
    let last = drawings.last().copied().unwrap_or_default();
    assert!(last.contains("200 in, 200 out, "), "last drawing: {last:?}");
    assert!(
        last.contains(", 0 in flight, 0 dead letters"),
        "last drawing: {last:?}"
    );
    // The summary follows it.
    assert!(
        terminal.contains("pipeline observed: 200 records in, 200 out"),
        "{terminal:?}"
    );
    drop(mock);
}

/// With stderr a pipe, the progress is a log line every `--progress-interval`; `--quiet`
/// silences it with the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_progress_is_logged_every_interval_and_quiet_silences_it() {
    let (mock, p) = slow_file_run().await;
    let dir = p.dir.path().to_path_buf();
    let (logged, quiet) = tokio::task::spawn_blocking(move || {
        let run = |extra: &[&str]| {
            let mut args = vec!["run", "pipeline.toml", "--progress-interval", "200ms"];
            args.extend(extra);
            let (code, _, stderr) = run_waio_env(&dir, &args, &[("WAIO_LOG", "warn,waio=info")]);
            assert_eq!(code, 0, "{stderr}");
            let _ = std::fs::remove_file(dir.join("out.jsonl"));
            stderr
        };
        (run(&[]), run(&["--quiet"]))
    })
    .await
    .expect("waio ran");
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("waio::progress") && l.contains("records/s"))
        .collect();
    assert!(
        lines.len() >= 2,
        "{} progress lines:\n{logged}",
        lines.len()
    );
    assert!(!logged.contains("\r"), "{logged:?}");
    assert!(
        !quiet.contains("waio::progress") && !quiet.contains("records in"),
        "{quiet}"
    );
    drop(mock);
}

/// A taken admin port fails the run at once, naming the address, before anything is read.
#[test]
fn a_taken_admin_port_fails_the_run_at_start_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let p = Pipeline::new();
    p.input(&[record(1)]);
    let toml = format!(
        "name = \"taken\"\n[source]\nkind = \"file\"\npath = \"input.jsonl\"\n[[operator]]\nname = \"op\"\nplugin = \"{}\"\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[admin]\nlisten = \"{addr}\"\n",
        plugin("behave").display()
    );
    p.manifest(&toml);
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot start the admin server on {addr} ([admin] listen or --admin)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("the port is taken"), "{stderr}");
    assert!(!p.path("out.jsonl").exists(), "the run went on");
    // A progress interval of 0 would log without pause: refused before anything runs.
    let (code, _, stderr) = run_waio(
        p.dir.path(),
        &["run", "pipeline.toml", "--progress-interval", "0s"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--progress-interval") && stderr.contains("\"0s\" is shorter than 100ms"),
        "{stderr}"
    );
    // `waio check` names where the admin server would listen.
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("admin server: http://{addr}/ (status page)")),
        "{stdout}"
    );
}
