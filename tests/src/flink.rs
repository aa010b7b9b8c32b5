//! A real standalone Apache Flink 2.3 cluster on 127.0.0.1 for one test: a temporary FLINK_HOME
//! (the distribution's `bin/` copied, its jars linked, `conf/` written here) started with
//! `bin/start-cluster.sh`, driven through the `flink` CLI and the REST API, and stopped by `Drop`
//! even when the test panics. The distribution is `$WAIO_FLINK_HOME` (default
//! `~/.cache/waio/flink`), installed by `scripts/setup-flink`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::observe::http_get;

/// Names the pid and log files (`flink-waio-taskexecutor.pid`): `$USER` is often unset in CI.
const IDENT: &str = "waio";

/// Makes the home ($2) from the distribution ($1). `bin` is copied: the scripts take FLINK_HOME
/// from their own symlink-resolved location. `lib` is a real directory of links to the jars:
/// config.sh lists them with `find "$FLINK_LIB_DIR"`, which does not enter a symlinked directory.
const SETUP: &str = r#"cd "$2" && mkdir lib conf log pid tmp && cp -r "$1/bin" . &&
ln -s "$1"/lib/*.jar lib/ && cp "$1"/conf/log4j*.properties conf/"#;

/// Polls the test process ($1); once it is gone without `Drop` (SIGKILL, abort), SIGKILLs every
/// process naming the home ($2) in its command line (daemons, a `flink run`) and removes the home.
const WATCHDOG: &str = r#"exec 2>/dev/null; trap '' INT TERM HUP
while kill -0 "$1"; do sleep 1; done
for d in /proc/[0-9]*; do
    [ "${d#/proc/}" != $$ ] && grep -qaF "$2" "$d/cmdline" && kill -9 "${d#/proc/}"
done
rm -rf "$2""#;

pub struct FlinkCluster {
    home: tempfile::TempDir,
    rest_port: u16,
    watchdog: Option<Child>,
}

/// The Flink distribution (`lib/`, `bin/`, `conf/`): `$WAIO_FLINK_HOME` or `~/.cache/waio/flink`.
pub fn flink_dist() -> PathBuf {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let dist = match std::env::var_os("WAIO_FLINK_HOME") {
        Some(dist) => PathBuf::from(dist),
        None => home.join(".cache/waio/flink"),
    };
    let found = dist.join("bin/start-cluster.sh").is_file() && dist.join("lib").is_dir();
    let dist_path = dist.display();
    assert!(found, "no Flink in {dist_path}: run scripts/setup-flink");
    dist.canonicalize().unwrap_or(dist) // links to the jars must not be relative
}

/// `sh -c script` with `args` as $1, $2...
fn sh(script: &str, args: &[&dyn AsRef<OsStr>]) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script, "sh"]);
    command.args(args.iter().map(|a| a.as_ref()));
    command
}

/// Runs a command to its end and returns its stdout and stderr; panics with them if it fails.
fn run_ok(command: &mut Command) -> String {
    let out = command.output();
    let out = out.unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let lossy = String::from_utf8_lossy;
    let text = format!("{}{}", lossy(&out.stdout), lossy(&out.stderr));
    let status = out.status;
    assert!(status.success(), "{command:?} failed ({status}):\n{text}");
    text
}

/// Whether `pid` is a live process of the cluster in `home`: its command line names the home
/// (a pid reused since by another process is left alone). Zombies count as dead.
fn ours(pid: u32, home: &Path) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, s)| s.chars().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let home = home.to_string_lossy();
    !matches!(state, None | Some('Z' | 'X')) && String::from_utf8_lossy(&cmdline).contains(&*home)
}

/// The live processes of the cluster in `home` (`flink run` too), but this one.
fn processes_of(home: &Path) -> Vec<u32> {
    let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    let pids = procs.filter_map(|e| e.file_name().to_str()?.parse().ok());
    pids.filter(|&p| p != std::process::id() && ours(p, home))
        .collect()
}

/// `kill -<signal> pids...`, errors ignored (it runs in `Drop`).
fn signal(signal: &str, pids: &[u32]) {
    if !pids.is_empty() {
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}"))
            .args(pids.iter().map(u32::to_string));
        let _ = kill.stderr(Stdio::null()).status();
    }
}

impl FlinkCluster {
    /// Starts a JobManager and `task_managers` TaskManagers of `slots_per_tm` slots each and
    /// waits (60 s at most) until all of them are registered.
    pub fn start(task_managers: usize, slots_per_tm: usize) -> FlinkCluster {
        let dist = flink_dist();
        let home = tempfile::Builder::new().prefix("waio-flink-").tempdir();
        let home = home.expect("temp dir");
        let root = home.path().to_path_buf();
        run_ok(&mut sh(SETUP, &[&dist, &root]));
        // Two distinct free ports (both listeners held at once).
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let listeners = [bind(), bind()];
        let port = |i: usize| listeners[i].local_addr().expect("port").port();
        let (rest_port, rpc_port) = (port(0), port(1));
        drop(listeners);
        // Of the distribution's config.yaml only its JVM flags (env.java.opts.all, nested or flat:
        // --add-opens for Java 17), plus a private java.io.tmpdir: blobs, TaskManager working dirs
        // and unpacked jars stay in the home, even after SIGKILL.
        let dist_config = std::fs::read_to_string(dist.join("conf/config.yaml"));
        let dist_config = dist_config.unwrap_or_default();
        let mut lines = dist_config.lines().map(str::trim);
        let all = lines.find(|l| l.starts_with("all:") || l.starts_with("env.java.opts.all:"));
        let java_opts = all.and_then(|l| Some(l.split_once(':')?.1.trim()));
        let (java_opts, h) = (java_opts.unwrap_or_default(), root.display());
        // Flat keys (Flink 2.x reads them as well as nested ones). The TaskManagers' RPC and data
        // ports and the blob server's keep their default, 0: the OS picks them, clusters side by
        // side do not collide. A heartbeat every second: a killed TaskManager is noticed after
        // two failed heartbeat RPCs (~2 s, not ~10 s). The REST API caches a job's graph for
        // web.refresh-interval and its metrics for metrics.fetcher.update-interval (ms). Load
        // balancing by slots spreads a job's tasks over all TaskManagers.
        let config = format!(
            "env.java.opts.all: {java_opts} -Djava.io.tmpdir={h}/tmp
env.log.dir: {h}/log
env.pid.dir: {h}/pid
jobmanager.bind-host: 127.0.0.1
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: {rpc_port}
jobmanager.memory.process.size: 1024m
taskmanager.bind-host: 127.0.0.1
taskmanager.host: 127.0.0.1
taskmanager.numberOfTaskSlots: {slots_per_tm}
taskmanager.memory.process.size: 1280m
taskmanager.load-balance.mode: SLOTS
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: {rest_port}
heartbeat.interval: 1000
heartbeat.timeout: 20000
web.refresh-interval: 500
metrics.fetcher.update-interval: 1000
"
        );
        let write = |name: &str, text: &str| {
            std::fs::write(root.join("conf").join(name), text).expect("write conf")
        };
        write("config.yaml", &config);
        // `localhost` workers are started by config.sh's TMWorkers without ssh.
        write("workers", &"localhost\n".repeat(task_managers));
        write("masters", &format!("127.0.0.1:{rest_port}\n"));
        let test_pid = std::process::id().to_string();
        let watchdog = sh(WATCHDOG, &[&test_pid, &root]).spawn().ok();
        // From here on a panic drops the cluster, which stops whatever has started.
        let cluster = FlinkCluster {
            home,
            rest_port,
            watchdog,
        };
        run_ok(&mut cluster.script("start-cluster.sh"));
        cluster.wait_task_managers(task_managers, Duration::from_secs(60));
        cluster
    }

    /// The cluster's FLINK_HOME (removed by `Drop`).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn log_dir(&self) -> PathBuf {
        self.home().join("log")
    }

    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    /// A script of the cluster's `bin/` with the cluster's directories in its environment.
    fn script(&self, name: &str) -> Command {
        let mut command = Command::new(self.home().join("bin").join(name));
        command.env("FLINK_CONF_DIR", self.home().join("conf"));
        command.env("FLINK_LOG_DIR", self.log_dir());
        command.env("FLINK_PID_DIR", self.home().join("pid"));
        command.env("FLINK_IDENT_STRING", IDENT);
        // Every JVM of the scripts (daemons, the CLI, config.sh's helpers) gets JVM_ARGS: C1 only
        // makes these short-lived JVMs start ~20% faster, which matters on a small CI machine.
        command.env("JVM_ARGS", "-XX:TieredStopAtLevel=1");
        command
    }

    /// `GET path` of the REST API, parsed.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        let answer = http_get(&format!("127.0.0.1:{}", self.rest_port), path, None)?;
        let body = &answer.body;
        if answer.status != 200 {
            return Err(format!("GET {path}: {} {body}", answer.status));
        }
        serde_json::from_str(body).map_err(|e| format!("GET {path}: {e}: {body}"))
    }

    /// How many TaskManagers are registered (`GET /taskmanagers`); 0 while REST is not up.
    pub fn registered_task_managers(&self) -> usize {
        let tms = self.get("/taskmanagers").unwrap_or_default();
        tms["taskmanagers"].as_array().map_or(0, Vec::len)
    }

    fn wait_task_managers(&self, count: usize, limit: Duration) {
        let what = format!("{count} registered TaskManagers");
        self.wait(&what, limit, || {
            (self.registered_task_managers() == count).then_some(())
        });
    }

    /// Polls `check` every 200 ms until it gives a value; panics after `limit` with the logs.
    fn wait<T>(&self, what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + limit;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > until {
                let logs = self.log_tails(40);
                panic!("timed out after {limit:?} waiting for {what}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last `lines` lines of the JobManager's log and of every non-empty `.out` (JVM errors).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(self.log_dir()) {
            Ok(dir) => dir.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        paths.sort();
        let mut text = String::new();
        for path in paths {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let jm_log = name.contains("-standalonesession-") && name.ends_with(".log");
            if jm_log || (name.ends_with(".out") && !log.trim().is_empty()) {
                let tail: Vec<&str> = log.lines().rev().take(lines).collect();
                text += &format!("--- {name} (last {lines} lines)\n");
                tail.iter().rev().for_each(|l| text += &format!("{l}\n"));
            }
        }
        text
    }

    /// `flink run -d`: submits `class` of `jar` with `args` and returns the job id.
    pub fn submit(&self, jar: &Path, class: &str, args: &[&str]) -> String {
        let jm = format!("127.0.0.1:{}", self.rest_port);
        let mut flink = self.script("flink");
        flink.args(["run", "-d", "-m", &jm, "-c", class]).arg(jar);
        let out = run_ok(flink.args(args));
        // "Job has been submitted with JobID 0123...".
        let id = out.split("JobID ").nth(1).unwrap_or_default();
        let id: String = id.chars().take_while(char::is_ascii_hexdigit).collect();
        assert_eq!(id.len(), 32, "no JobID in the output of flink run:\n{out}");
        id
    }

    /// `GET /jobs/<id>`: the job's state, vertices, timestamps...
    pub fn job(&self, id: &str) -> Value {
        let job = self.get(&format!("/jobs/{id}"));
        job.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The job's state: CREATED, RUNNING, RESTARTING, FINISHED, FAILED, CANCELED...
    pub fn job_state(&self, id: &str) -> String {
        let job = self.job(id);
        job["state"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until the job is in one of `wanted` and returns that state (the JobManager's log,
    /// shown on a timeout, has the job's state changes).
    pub fn wait_for_state(&self, id: &str, wanted: &[&str], limit: Duration) -> String {
        let what = format!("job {id} to be one of {wanted:?}");
        self.wait(&what, limit, || {
            let job = self.get(&format!("/jobs/{id}")).ok()?;
            let state = job["state"].as_str()?;
            wanted.contains(&state).then(|| state.to_string())
        })
    }

    /// How often the job restarted: the larger of the `numRestarts` metric (from the REST metric
    /// fetcher, gone some time after the job ends) and the number of failures in the exception
    /// history (kept after the end, at most web.exception-history-size = 16). Region failover
    /// counts one restart per failed region (a TaskManager with 2 tasks of a job: 2).
    pub fn restarts(&self, id: &str) -> u64 {
        let path = format!("/jobs/{id}/metrics?get=numRestarts");
        let metric = self.get(&path).unwrap_or_default();
        let metric = metric[0]["value"].as_str().and_then(|v| v.parse().ok());
        let history = self.get(&format!("/jobs/{id}/exceptions"));
        let history = history.unwrap_or_default()["exceptionHistory"]["entries"].take();
        let history = history.as_array().map_or(0, Vec::len) as u64;
        metric.unwrap_or(0).max(history)
    }

    /// The pids of the live TaskManagers, from the pid file flink-daemon.sh appends them to.
    pub fn task_manager_pids(&self) -> Vec<u32> {
        let file = self
            .home()
            .join(format!("pid/flink-{IDENT}-taskexecutor.pid"));
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let pids = text.lines().filter_map(|l| l.trim().parse().ok());
        pids.filter(|&pid| ours(pid, self.home())).collect()
    }

    /// SIGKILLs a TaskManager and waits until it is gone and the JobManager has noticed (one
    /// TaskManager less registered). Its dead pid stays in the pid file: flink-daemon.sh numbers
    /// log files by pid-file lines, and without it the next TaskManager would share a log file.
    pub fn kill_task_manager(&self, pid: u32) {
        let tms = self.task_manager_pids();
        assert!(tms.contains(&pid), "not a TaskManager: {pid}");
        let before = self.registered_task_managers();
        signal("KILL", &[pid]);
        let dead = || (!ours(pid, self.home())).then_some(());
        self.wait(
            &format!("TaskManager {pid} to die"),
            Duration::from_secs(10),
            dead,
        );
        self.wait_task_managers(before.saturating_sub(1), Duration::from_secs(60));
    }

    /// Starts one more TaskManager (`bin/taskmanager.sh start`), waits until it is registered and
    /// returns its pid.
    pub fn start_task_manager(&self) -> u32 {
        let (before, count) = (self.task_manager_pids(), self.registered_task_managers());
        run_ok(self.script("taskmanager.sh").arg("start"));
        self.wait_task_managers(count + 1, Duration::from_secs(60));
        let mut new = self.task_manager_pids();
        new.retain(|p| !before.contains(p));
        new.pop().expect("the new TaskManager's pid")
    }
}

impl Drop for FlinkCluster {
    /// SIGTERM to every process of the cluster (found by its command line: the pid files miss a
    /// `flink run`), SIGKILL to those still there 10 s later, as `flink-daemon.sh stop` does.
    /// Not `stop-cluster.sh`: it runs config.sh (and its JVMs) twice per daemon, taking 10-25 s,
    /// and stops only as many TaskManagers as `workers` lists.
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let mut pids = processes_of(self.home());
        signal("TERM", &pids);
        for next in [Some("KILL"), None] {
            let until = Instant::now() + Duration::from_secs(10);
            while pids.iter().any(|&p| ours(p, self.home())) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            pids.retain(|&p| ours(p, self.home()));
            if let Some(next) = next {
                signal(next, &pids);
            }
        }
        if !pids.is_empty() {
            let home = self.home().display();
            eprintln!("Flink JVMs {pids:?} of {home} outlived SIGKILL");
        }
    }
}
