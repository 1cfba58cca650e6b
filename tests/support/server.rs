//! The one `redis-server` launcher of the tests and the bench.
//!
//! [`Server`] is a `redis-server` with the module loaded, on a free loopback port, in a
//! temp dir of its own, started from `$REDIS_SERVER` (default Debian's
//! `/usr/bin/redis-server`). [`Options`] covers what the special cases need: extra
//! config lines, a replica of another server, no module (the bench's baseline), extra
//! environment (libfaketime for the clock test), a wrapper command (valgrind), a dir
//! prepared beforehand, slower start-ups, longer client time-outs.
//!
//! The module is `$FENCELOCK_MODULE`, or else the one `cargo build --release --lib`
//! produces from the current sources: [`module_path`] runs that build once per test
//! process, before the first server starts (`cargo test` alone does not rebuild a
//! `cdylib`: integration tests cannot link one).

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;

use super::resp::Raw;

// ---------------------------------------------------------------------------------------
// The module and the server binary
// ---------------------------------------------------------------------------------------

/// The module under test: `$FENCELOCK_MODULE` as it is, else the module built from the
/// current sources (`cargo build --release --lib`, once per process; a no-op costs about
/// 0.1 s when nothing changed).
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FENCELOCK_MODULE") {
        let path = PathBuf::from(p);
        if !path.is_file() {
            panic!("FENCELOCK_MODULE={} is not a file", path.display());
        }
        return path;
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build_module).clone().unwrap_or_else(|e| panic!("{e}"))
}

/// `cargo build --release --lib` of this package; the path of the `cdylib` it made (from
/// cargo's JSON messages, so `CARGO_TARGET_DIR` and the like are honoured). Cargo does not
/// hold its build lock while `cargo test` runs the test binaries, so this cannot deadlock.
fn build_module() -> Result<PathBuf, String> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let out = Command::new(&cargo)
        .args(["build", "--release", "--lib", "--message-format=json-render-diagnostics", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .current_dir(manifest_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run {} to build the module ({e}); or set FENCELOCK_MODULE", cargo.to_string_lossy())
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "`cargo build --release --lib` failed ({}), so the tests cannot run against the current sources:\n{stderr}",
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let so = stdout
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"cdylib\""))
        .find_map(|l| {
            let list = l.split("\"filenames\":[").nth(1)?.split(']').next()?;
            list.split('"').find(|f| f.ends_with(".so") || f.ends_with(".dylib")).map(PathBuf::from)
        })
        .ok_or_else(|| format!("`cargo build --release --lib` named no cdylib:\n{stdout}\n{stderr}"))?;
    if stderr.contains("Compiling fencelock") {
        eprintln!("built {} from the current sources in {:?}", so.display(), started.elapsed());
    }
    Ok(so)
}

/// The server under test: `$REDIS_SERVER` (`make compat` sets it), else Debian's
/// `/usr/bin/redis-server`, else `redis-server` on the PATH.
pub fn redis_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/bin/redis-server");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        PathBuf::from("redis-server")
    }
}

/// `bin` on the PATH.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(bin)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------
// Dirs, ports, processes, logs
// ---------------------------------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A new empty dir under the temp dir, for one server.
pub fn fresh_dir() -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "fencelock-test-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        nanos
    ));
    fs::create_dir_all(&dir).expect("create the server's temp dir");
    dir
}

/// Ports are taken below the kernel's ephemeral range (32768+), so that client sockets of
/// parallel tests never sit on a port we want to (re)bind. Each call hands out a
/// different candidate; a candidate that cannot be bound right now is skipped.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = (std::process::id() * 131) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (base + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Fall back on the kernel's choice.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The start of Redis's crash report (what crashed, and the stack), if the log has one.
pub fn crash_report(log: &str) -> Option<String> {
    let start = log.find("REDIS BUG REPORT START")?;
    let start = log[..start].rfind('\n').map_or(0, |i| i + 1);
    let from = log[..start].lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let report: Vec<&str> = log[start..].lines().take_while(|l| !l.contains("------ INFO OUTPUT")).take(90).collect();
    Some(format!("(server crashed)\n{from}\n{}", report.join("\n")))
}

/// What a server whose dir is `dir` wrote to stderr (`stderr.log`; a Rust panic message
/// lands there), from the first panic message on, shortened; empty when nothing.
pub fn stderr_in(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    if text.trim().is_empty() {
        return String::new();
    }
    let from = text.find("panicked at").and_then(|i| text[..i].rfind('\n').map(|j| j + 1)).unwrap_or(0);
    let lines: Vec<&str> = text[from..].lines().collect();
    let shown = if lines.len() > 40 { [&lines[..25], &["  ..."], &lines[lines.len() - 8..]].concat() } else { lines };
    format!("server stderr:\n{}\n", shown.join("\n"))
}

/// A connection with `connect` and read/write time-outs (a hang fails the test instead of
/// stalling the suite).
pub fn try_connect_with(url: &str, connect: Duration, read: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(connect)?;
    con.set_read_timeout(Some(read))?;
    con.set_write_timeout(Some(read))?;
    Ok(con)
}

pub fn try_connect(url: &str) -> redis::RedisResult<redis::Connection> {
    try_connect_with(url, Duration::from_secs(2), Duration::from_secs(30))
}

pub fn connect(url: &str) -> redis::Connection {
    try_connect(url).unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// How to start a [`Server`]; `Options::new().config(&[...]).start()`.
#[derive(Clone, Debug)]
pub struct Options {
    /// A config file, given first as Redis wants it (so that `CONFIG REWRITE` works).
    config_file: Option<PathBuf>,
    config: Vec<String>,
    module: bool,
    env: Vec<(OsString, Option<OsString>)>,
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    dir: Option<PathBuf>,
    start_timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    keep_dir_on_panic: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    /// The harness's defaults: the module loaded, no RDB, no AOF, `DEBUG` enabled, 30 s
    /// to answer `PING`, client connections with 30 s time-outs.
    pub fn new() -> Options {
        Options {
            config_file: None,
            config: vec![],
            module: true,
            env: vec![],
            wrapper: vec![],
            args: vec![],
            dir: None,
            start_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            keep_dir_on_panic: false,
        }
    }

    /// Config lines (`"appendonly yes"`, ...), given after the defaults so they override them.
    /// Starts the server with `path` as its config file (the harness's settings still
    /// come after it, on the command line).
    pub fn config_file(mut self, path: PathBuf) -> Options {
        self.config_file = Some(path);
        self
    }

    pub fn config(mut self, lines: &[&str]) -> Options {
        self.config.extend(lines.iter().map(|s| s.to_string()));
        self
    }

    /// A replica of `master`.
    pub fn replica_of(self, master: &Server) -> Options {
        let line = format!("replicaof 127.0.0.1 {}", master.port);
        self.config(&[&line])
    }

    /// Without `--loadmodule` (the bench's baseline server).
    pub fn without_module(mut self) -> Options {
        self.module = false;
        self
    }

    /// An environment variable of the server process.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Options {
        self.env.push((key.as_ref().into(), Some(value.as_ref().into())));
        self
    }

    /// An environment variable the server process must not inherit.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Options {
        self.env.push((key.as_ref().into(), None));
        self
    }

    /// Runs the server under `program args... redis-server ...` (valgrind).
    pub fn wrapper<S: AsRef<OsStr>>(mut self, program: impl AsRef<OsStr>, args: &[S]) -> Options {
        self.wrapper = std::iter::once(program.as_ref().into()).chain(args.iter().map(|a| a.as_ref().into())).collect();
        self
    }

    /// Extra command-line arguments of `redis-server`, after the defaults.
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Options {
        self.args.extend(args.iter().map(|a| a.as_ref().into()));
        self
    }

    /// Uses `dir` (made beforehand, e.g. by [`fresh_dir`], with files the server needs)
    /// as the server's dir; it is removed with the server.
    pub fn in_dir(mut self, dir: PathBuf) -> Options {
        self.dir = Some(dir);
        self
    }

    /// How long the server may take to answer `PING` after it is spawned.
    pub fn start_timeout(mut self, t: Duration) -> Options {
        self.start_timeout = t;
        self
    }

    /// Read/write time-out of the connections `conn()` opens.
    pub fn read_timeout(mut self, t: Duration) -> Options {
        self.read_timeout = t;
        self
    }

    pub fn connect_timeout(mut self, t: Duration) -> Options {
        self.connect_timeout = t;
        self
    }

    /// Keeps the server's dir (logs) when the test fails.
    pub fn keep_dir_on_panic(mut self) -> Options {
        self.keep_dir_on_panic = true;
        self
    }

    /// Starts the server on a free port, waiting until it answers `PING`.
    pub fn start(self) -> Server {
        if self.module {
            module_path(); // built (or found) before the first server starts
        }
        let dir = match &self.dir {
            Some(d) => {
                fs::create_dir_all(d).expect("create the server's dir");
                d.clone()
            }
            None => fresh_dir(),
        };
        let mut last_err = String::new();
        for _attempt in 0..20 {
            let port = free_port();
            match spawn_and_wait(&self, port, &dir) {
                Ok(child) => return Server { port, dir, opts: self, child: Some(child) },
                Err(e) => {
                    if !is_bind_problem(&e) {
                        let _ = fs::remove_dir_all(&dir);
                        panic!("redis-server failed to start: {e}");
                    }
                    last_err = e;
                    let _ = fs::remove_file(dir.join("redis.log"));
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("could not start redis-server on a free port: {last_err}");
    }
}

fn is_bind_problem(e: &str) -> bool {
    e.contains("Address already in use")
        || e.contains("Could not create server TCP listening socket")
        || e.contains("not our server")
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    opts: Options,
    child: Option<Child>,
}

impl Server {
    /// A server with the harness's default config.
    pub fn new() -> Server {
        Options::new().start()
    }

    /// A server with extra config lines (`"appendonly yes"`, `"replicaof 127.0.0.1 6379"`, ...),
    /// given after the defaults so they override them.
    pub fn start(config: &[&str]) -> Server {
        Options::new().config(config).start()
    }

    /// A replica of `master`, with extra config lines.
    pub fn start_replica_of(master: &Server, config: &[&str]) -> Server {
        Options::new().config(config).replica_of(master).start()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A fresh RESP2 connection with the server's client time-outs.
    pub fn conn(&self) -> redis::Connection {
        self.connect_url(&self.url())
    }

    /// A fresh RESP3 connection.
    pub fn conn_resp3(&self) -> redis::Connection {
        self.connect_url(&format!("{}?protocol=resp3", self.url()))
    }

    fn connect_url(&self, url: &str) -> redis::Connection {
        try_connect_with(url, self.opts.connect_timeout, self.opts.read_timeout)
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
    }

    /// A raw RESP connection (send now, read later) with the server's read time-out.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.port, self.opts.read_timeout)
            .unwrap_or_else(|e| panic!("cannot connect to port {}: {e}", self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    /// Whether the process is there (not exited, not a zombie).
    pub fn is_alive(&self) -> bool {
        self.child.as_ref().is_some_and(|c| alive(c.id()))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// What the server wrote to stderr (a Rust panic message lands there), from the first
    /// panic message on, shortened; empty when nothing.
    pub fn stderr_text(&self) -> String {
        stderr_in(&self.dir)
    }

    /// Stderr, then the crash report if the log has one, else the log's last `n` lines.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        self.stderr_text() + &crash_report(&log).unwrap_or_else(|| tail(&log, n))
    }

    /// Prints the tail of the server log to stderr (cargo test shows it for failing tests).
    pub fn dump_log(&self) {
        eprintln!(
            "----- redis.log of server on port {} ({}) -----\n{}\n----- end of log -----",
            self.port,
            self.dir.display(),
            tail(&self.log(), 80)
        );
    }

    /// Panics (with the log) if the process has exited on its own.
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.dump_log();
                self.child = None;
                panic!("redis-server on port {} died: {status}", self.port);
            }
        }
    }

    /// Graceful stop: `SHUTDOWN NOSAVE` (the AOF, if on, is flushed), waiting for the exit.
    pub fn stop(&mut self) {
        self.assert_alive();
        let timeout = Duration::from_secs(20);
        if self.shutdown(timeout).is_none() {
            self.dump_log();
            panic!("redis-server on port {} did not shut down in {timeout:?}", self.port);
        }
    }

    /// `SHUTDOWN NOSAVE` and waits up to `timeout` for the exit: its status, or None when
    /// it had to be killed (or was not running).
    pub fn shutdown(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(mut c) = try_connect_with(&self.url(), Duration::from_secs(5), timeout.min(Duration::from_secs(60))) {
            let _: Result<Value, _> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut c);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// `kill -9`: no chance to flush or save anything.
    pub fn kill9(&mut self) {
        self.assert_alive();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port, dir and options (so it loads its
    /// RDB/AOF), waiting until it answers `PING` (i.e. loading is done).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running server");
        let mut last_err = String::new();
        // The port is ours, but give a just-exited process's socket a moment to be freed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match spawn_and_wait(&self.opts, self.port, &self.dir) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => {
                    if !(e.contains("Address already in use") || e.contains("not our server")) {
                        self.dump_log();
                        panic!("redis-server failed to restart: {e}");
                    }
                    last_err = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.dump_log();
        panic!("redis-server could not restart on port {}: {last_err}", self.port);
    }

    /// Graceful stop, then start again.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut died = None;
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                died = Some(status);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if panicking || died.is_some() {
            self.dump_log();
        }
        if panicking && self.opts.keep_dir_on_panic {
            eprintln!("the server's dir is kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if let Some(status) = died {
            if !panicking {
                panic!("redis-server on port {} died during the test: {status}", self.port);
            }
        }
    }
}

fn spawn_and_wait(opts: &Options, port: u16, dir: &Path) -> Result<Child, String> {
    let logfile = dir.join("redis.log");
    let stderr =
        fs::OpenOptions::new().create(true).append(true).open(dir.join("stderr.log")).map_err(|e| e.to_string())?;
    let server = redis_server_bin();
    let mut cmd = match opts.wrapper.split_first() {
        Some((program, args)) => {
            // The wrapper gets the server's path, not a name to look up.
            let server = if server.components().count() == 1 {
                which(&server.to_string_lossy()).unwrap_or(server.clone())
            } else {
                server.clone()
            };
            let mut c = Command::new(program);
            c.args(args).arg(&server);
            c
        }
        None => Command::new(&server),
    };
    if let Some(file) = &opts.config_file {
        cmd.arg(file);
    }
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .args(["--enable-debug-command", "yes"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--protected-mode", "no"])
        .args(["--daemonize", "no"])
        .arg("--logfile")
        .arg(&logfile);
    if opts.module {
        cmd.arg("--loadmodule").arg(module_path());
    }
    cmd.args(&opts.args);
    for line in &opts.config {
        let mut words = line.split_whitespace();
        let name = words.next().expect("empty config line");
        cmd.arg(format!("--{name}"));
        cmd.args(words);
    }
    for (k, v) in &opts.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(stderr));
    let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {}: {e}", server.display()))?;

    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = Instant::now() + opts.start_timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&logfile).unwrap_or_default();
            let err = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            return Err(format!("redis-server exited ({status}) on port {port}:\n{log}\n{err}"));
        }
        if let Ok(mut c) = try_connect(&url) {
            let pong: Result<String, _> = redis::cmd("PING").query(&mut c);
            if let Ok(p) = pong {
                if p == "PONG" {
                    // Make sure it is our process that answered, not another test's.
                    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap_or_default();
                    let pid = super::cmd::parse_info(&info).get("process_id").cloned().unwrap_or_default();
                    if pid == child.id().to_string() {
                        return Ok(child);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("not our server answered on port {port}"));
                }
            }
            // LOADING or similar: keep waiting.
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(&logfile).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} did not answer PING within {:?}:\n{}",
                opts.start_timeout,
                tail(&log, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
