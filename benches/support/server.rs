//! A `redis-server` with the module, on a free loopback port, for the benchmark.
//!
//! Configured to measure the lock and nothing else: no RDB, no AOF, `noeviction`,
//! `loglevel warning`, `DEBUG` enabled.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;

use crate::util::{connect, info};

pub struct Server {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The module: `$FENCELOCK_MODULE`, else `target/release/libfencelock.so`.
pub fn module_path() -> PathBuf {
    let path = match std::env::var_os("FENCELOCK_MODULE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libfencelock.so"),
    };
    if !path.is_file() {
        panic!(
            "fencelock module not found at {}: run `cargo build --release` (or `make build`) first, \
             or set FENCELOCK_MODULE",
            path.display()
        );
    }
    path
}

fn redis_server_bin() -> PathBuf {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().unwrap().port()
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Some(&module_path()))
    }

    /// The same server without the module (the baseline of figure 6).
    pub fn start_plain() -> Server {
        Server::start_with(None)
    }

    fn start_with(module: Option<&Path>) -> Server {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("fencelock-bench-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the server's temp dir");
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_port();
            match spawn(module, port, &dir) {
                Ok(child) => return Server { port, dir, child: Some(child) },
                Err(e) => last = e,
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("could not start redis-server: {last}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        connect(&self.url())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Panics (with the log's tail) if the server died.
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                self.child = None;
                panic!("redis-server on port {} died ({status}); log:\n{log}", self.port);
            }
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(2)) {
                    let _: redis::RedisResult<Value> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut c);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn spawn(module: Option<&Path>, port: u16, dir: &Path) -> Result<Child, String> {
    let logfile = dir.join("redis.log");
    let _ = fs::remove_file(&logfile);
    let mut cmd = Command::new(redis_server_bin());
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--daemonize", "no", "--protected-mode", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--enable-debug-command", "yes", "--maxmemory-policy", "noeviction"])
        .args(["--loglevel", "warning"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&logfile);
    if let Some(module) = module {
        cmd.arg("--loadmodule").arg(module);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {}: {e}", redis_server_bin().display()))?;
    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&logfile).unwrap_or_default();
            return Err(format!("redis-server exited ({status}) on port {port}:\n{log}"));
        }
        if let Ok(client) = redis::Client::open(url.as_str()) {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500)) {
                if let Ok(pong) = redis::cmd("PING").query::<String>(&mut c) {
                    if pong == "PONG" {
                        let pid = info(&mut c, "server").get("process_id").cloned().unwrap_or_default();
                        if pid == child.id().to_string() {
                            return Ok(child);
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("another server answered on port {port}"));
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-server on port {port} did not answer PING in time"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
