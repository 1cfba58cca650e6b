//! Chaos: the server's wall clock steps forward and back under load (libfaketime).
//!
//! redis-server runs with `LD_PRELOAD=libfaketime.so.1`, reading its offset from a file
//! the test rewrites (`+600s`, `-600s`, ...), with `FAKETIME_NO_CACHE=1` so a step takes
//! effect at once and `FAKETIME_DONT_FAKE_MONOTONIC=1` so only the wall clock steps (NTP
//! stepping the clock, a VM restored from a snapshot).
//!
//! libfaketime 0.9.10 alone deadlocks Debian's redis-server at start-up (its jemalloc
//! calls `clock_gettime` and `pthread_cond_init` while initialising; libfaketime then
//! initialises itself, `dlsym` allocates, and jemalloc waits on its own init lock:
//! wolfcw/libfaketime#130). A ten-line shim preloaded in front of it answers those two
//! calls from the kernel until the process's constructors have run, then hands every
//! call to libfaketime. It is compiled with `cc` into the server's directory. Load threads take and release
//! mutexes, read-write locks and fences on shared keys while the clock jumps, and the
//! server is also killed with `kill -9` and restarted (AOF, `appendfsync always`) while
//! its clock is behind the tokens it already issued.
//!
//! Asserted (fencing token rule 1): on every key, a grant acknowledged before another
//! grant was asked for has the smaller token, across every step forward and back and
//! every restart; `FENCE.NEXT` likewise.
//!
//! Observed and printed, not asserted beyond the contract ("the lease ends at now + ttl
//! on the server's clock"): what a step does to leases that are held and to clients
//! waiting with `WAIT`.

#[path = "support/chaos.rs"]
mod chaos;
mod common;
#[path = "support/fault_kit.rs"]
mod fault_kit;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::{full, scale};
use common::*;
use fault_kit::*;
use rand::seq::SliceRandom;
use rand::Rng;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Preloaded before libfaketime: until its constructor runs (after those of the libraries
/// redis-server links, i.e. after jemalloc has initialised), `clock_gettime` goes straight
/// to the kernel and `pthread_cond_init` makes a default condition variable; from then on
/// both go to libfaketime.
const SHIM_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static int (*next_clock_gettime)(clockid_t, struct timespec *);
static int (*next_cond_init)(pthread_cond_t *, const pthread_condattr_t *);
static volatile int ready;
int clock_gettime(clockid_t clk, struct timespec *ts) {
    if (ready) return next_clock_gettime(clk, ts);
    return (int)syscall(SYS_clock_gettime, clk, ts);
}
int pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a) {
    if (ready) return next_cond_init(c, a);
    memset(c, 0, sizeof *c);
    return 0;
}
__attribute__((constructor)) static void shim_init(void) {
    next_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    next_cond_init = (int (*)(pthread_cond_t *, const pthread_condattr_t *))dlsym(RTLD_NEXT, "pthread_cond_init");
    if (next_clock_gettime && next_cond_init) ready = 1;
    (void)time(NULL); /* libfaketime initialises now, with jemalloc ready */
}
"#;

fn build_shim(dir: &Path) -> PathBuf {
    let src = dir.join("ftshim.c");
    let lib = dir.join("ftshim.so");
    fs::write(&src, SHIM_C).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc to build the libfaketime shim ({e}): install gcc (`make deps`)"));
    assert!(out.status.success(), "building the libfaketime shim failed:\n{}", String::from_utf8_lossy(&out.stderr));
    lib
}

// ---------------------------------------------------------------------------------------
// A redis-server under libfaketime (the harness cannot set a server's environment). Same
// arguments as the harness's servers.
// ---------------------------------------------------------------------------------------

struct FakeClockServer {
    port: u16,
    dir: PathBuf,
    clock_file: PathBuf,
    preload: String,
    config: Vec<String>,
    child: Option<Child>,
}

fn pick_port() -> u16 {
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

impl FakeClockServer {
    fn start(config: &[&str]) -> FakeClockServer {
        assert!(
            Path::new(LIBFAKETIME).is_file(),
            "{LIBFAKETIME} is missing: the clock-step tests need libfaketime. Install it with \
             `make deps` (or `apt-get install -y faketime`)"
        );
        let dir =
            std::env::temp_dir().join(format!("fencelock-clock-{}-{}", std::process::id(), rand::random::<u32>()));
        fs::create_dir_all(&dir).unwrap();
        let preload = format!("{} {LIBFAKETIME}", build_shim(&dir).display());
        let mut s = FakeClockServer {
            port: 0,
            preload,
            clock_file: dir.join("faketime"),
            dir,
            config: config.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.write_offset("+0");
        let mut last = String::new();
        for _ in 0..20 {
            s.port = pick_port();
            match s.spawn() {
                Ok(()) => return s,
                Err(e) if e.contains("Address already in use") || e.contains("another server") => last = e,
                Err(e) => panic!("redis-server under libfaketime did not start: {e}"),
            }
        }
        panic!("could not start redis-server under libfaketime: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let logfile = self.dir.join("redis.log");
        let stderr = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("stderr.log")).unwrap();
        let mut cmd = Command::new(redis_server_bin());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .arg("--loadmodule")
            .arg(module_path())
            .args(["--enable-debug-command", "yes", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--logfile"])
            .arg(&logfile);
        for line in &self.config {
            let mut words = line.split_whitespace();
            cmd.arg(format!("--{}", words.next().unwrap()));
            cmd.args(words);
        }
        cmd.env("LD_PRELOAD", &self.preload)
            .env("FAKETIME_TIMESTAMP_FILE", &self.clock_file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env_remove("FAKETIME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}):\n{}",
                    fs::read_to_string(&logfile).unwrap_or_default()
                ));
            }
            if let Some(pid) = server_pid(self.port) {
                if pid == child.id() {
                    self.child = Some(child);
                    return Ok(());
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err("another server answered on the port".into());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server did not answer PING in 20 s:\n{}",
                    fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is down").id()
    }

    fn conn(&self) -> redis::Connection {
        let c = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let con = c.get_connection_with_timeout(Duration::from_secs(2)).expect("connect");
        con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        con
    }

    /// Sets the server's wall-clock offset from the real clock (libfaketime syntax).
    /// The file is replaced atomically, so the server never reads half of it.
    fn write_offset(&self, offset: &str) {
        let tmp = self.dir.join("faketime.new");
        fs::write(&tmp, format!("{offset}\n")).unwrap();
        fs::rename(&tmp, &self.clock_file).unwrap();
    }

    /// Steps the clock to `offset_s` seconds from real time and waits until the
    /// server's `TIME` shows it.
    fn step(&self, offset_s: i64) {
        self.write_offset(&format!("{offset_s:+}s"));
        let mut c = self.conn();
        wait_until(Duration::from_secs(10), &format!("the server's clock shows {offset_s:+} s"), || {
            (server_time_ms(&mut c) - now_ms() - offset_s * 1000).abs() < 2_000
        });
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is down");
        if let Ok(Some(status)) = child.try_wait() {
            self.dump_log();
            panic!("redis-server died by itself: {status}");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && e.contains("Address already in use") => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    self.dump_log();
                    panic!("redis-server under libfaketime did not restart: {e}");
                }
            }
        }
    }

    fn dump_log(&self) {
        let log = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "----- redis.log ({}) -----\n{}\n-----",
            self.dir.display(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
    }
}

impl Drop for FakeClockServer {
    fn drop(&mut self) {
        let mut died = None;
        if let Some(mut child) = self.child.take() {
            died = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || died.is_some() {
            self.dump_log();
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let (Some(status), false) = (died, std::thread::panicking()) {
            panic!("redis-server under libfaketime died during the test: {status}");
        }
    }
}

fn server_pid(port: u16) -> Option<u32> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut con = c.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let pong: String = redis::cmd("PING").query(&mut con).ok()?;
    if pong != "PONG" {
        return None;
    }
    let text: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    parse_info(&text).get("process_id")?.parse().ok()
}

/// The server's wall clock (`TIME`), in ms.
fn server_time_ms(c: &mut redis::Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(c).unwrap();
    s * 1000 + us / 1000
}

// ---------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------

const MUTEXES: usize = 6;
const RWLOCKS: usize = 3;
const FENCES: usize = 2;

struct Shared {
    port: u16,
    stop: AtomicBool,
    /// The server that is up (0 while down): threads talk only to it.
    current_pid: AtomicU32,
    ops: AtomicU64,
}

fn connect(shared: &Shared) -> Option<redis::Connection> {
    let want = shared.current_pid.load(Ordering::SeqCst);
    if want == 0 {
        return None;
    }
    let c = redis::Client::open(format!("redis://127.0.0.1:{}/", shared.port)).ok()?;
    let mut con = c.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let text: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    let pid: u32 = parse_info(&text).get("process_id")?.parse().ok()?;
    (pid == want).then_some(con)
}

/// Takes and releases locks on shared keys (short leases, no WAIT) and draws fence
/// tokens until told to stop, reconnecting across restarts. Returns every fresh grant.
fn load(shared: Arc<Shared>, id: usize) -> Vec<Grant> {
    let owner = format!("t{id}");
    let mut rng = rand::thread_rng();
    let mut grants = vec![];
    // Keys this thread may hold: released before it acquires them again, so every
    // acquire is a fresh grant (never a reentry). An acquire cut by a kill may have
    // been granted: it goes here too.
    let mut held: Vec<(String, &'static str)> = vec![];
    let mut con: Option<redis::Connection> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(c) = con.as_mut() else {
            con = connect(&shared);
            if con.is_none() {
                std::thread::sleep(Duration::from_millis(2));
            }
            continue;
        };
        if !held.is_empty() && rng.gen_bool(0.5) {
            let i = rng.gen_range(0..held.len());
            let r: redis::RedisResult<i64> = redis::cmd(held[i].1).arg(&held[i].0).arg(&owner).query(c);
            match r {
                Ok(_) => {
                    held.swap_remove(i);
                }
                Err(e) if is_transient(&e) => con = None,
                Err(e) => panic!("{} {}: {e}", held[i].1, held[i].0),
            }
            continue;
        }
        let roll = rng.gen_range(0..10);
        let (key, acquire, release) = match roll {
            0..=4 => (format!("m{}", rng.gen_range(0..MUTEXES)), "LOCK.ACQUIRE", "LOCK.RELEASE"),
            5 | 6 => (format!("r{}", rng.gen_range(0..RWLOCKS)), "RWLOCK.RLOCK", "RWLOCK.RUNLOCK"),
            7 => (format!("r{}", rng.gen_range(0..RWLOCKS)), "RWLOCK.WLOCK", "RWLOCK.WUNLOCK"),
            _ => (format!("f{}", rng.gen_range(0..FENCES)), "FENCE.NEXT", ""),
        };
        if held.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let invoked = Instant::now();
        let r: redis::RedisResult<Option<i64>> = if release.is_empty() {
            redis::cmd(acquire).arg(&key).query(c)
        } else {
            redis::cmd(acquire).arg(&key).arg(&owner).arg(rng.gen_range(20..400)).query(c)
        };
        match r {
            Ok(Some(t)) => {
                grants.push(Grant {
                    key: key.clone(),
                    invoked,
                    completed: Instant::now(),
                    token: t,
                    what: format!("{acquire} by {owner}"),
                });
                if !release.is_empty() {
                    held.push((key, release));
                }
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if is_transient(&e) => {
                if !release.is_empty() {
                    held.push((key, release));
                }
                con = None;
            }
            Err(e) => panic!("{acquire} {key} {owner}: {e}"),
        }
    }
    grants
}

// ---------------------------------------------------------------------------------------
// What a step does to leases (printed for the README; the handoff to a waiter is asserted)
// ---------------------------------------------------------------------------------------

/// A client blocked in `LOCK.ACQUIRE key waiter 10000 WAIT <timeout>`: its answer and
/// when it came.
fn blocked_acquire(port: u16, key: &'static str, timeout: i64) -> std::thread::JoinHandle<(Option<i64>, Instant)> {
    std::thread::spawn(move || {
        let cl = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut w = cl.get_connection().unwrap();
        w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let r: Option<i64> = redis::cmd("LOCK.ACQUIRE")
            .arg(key)
            .arg("waiter")
            .arg(10_000)
            .arg("WAIT")
            .arg(timeout)
            .query(&mut w)
            .unwrap();
        (r, Instant::now())
    })
}

fn observe_leases(server: &FakeClockServer) {
    let mut c = server.conn();
    server.step(0);

    // Forward: three 3 s leases; one with no waiter, one with a client in WAIT 20000,
    // one with a client in WAIT 0. Then the clock jumps an hour ahead.
    let lease = 3_000;
    for k in ["obs:free", "obs:wait", "obs:wait0"] {
        assert!(acquire(&mut c, k, "holder", lease).is_some());
    }
    let granted_at = Instant::now();
    let w20 = blocked_acquire(server.port, "obs:wait", 20_000);
    let w0 = blocked_acquire(server.port, "obs:wait0", 0);
    wait_until(Duration::from_secs(5), "the waiters are queued", || {
        lock_info(&mut c, "obs:wait").is_some_and(|i| i.waiters == 1)
            && lock_info(&mut c, "obs:wait0").is_some_and(|i| i.waiters == 1)
    });
    server.step(3600);
    let stepped_at = Instant::now();
    let info_after = lock_info(&mut c, "obs:free");
    let other = acquire(&mut c, "obs:free", "other", 10_000);
    let (r20, t20) = w20.join().unwrap();
    let (r0, t0) = w0.join().unwrap();
    let since = |t: Instant| {
        format!(
            "{} ms after the step, {} ms after the grant",
            (t - stepped_at).as_millis(),
            (t - granted_at).as_millis()
        )
    };
    eprintln!(
        "clock +1 h, {lease} ms leases granted {} ms before the step: LOCK.INFO at once: {info_after:?}; \
         another owner's LOCK.ACQUIRE at once: {other:?}; the client in WAIT 20000 got {r20:?} {}; \
         the client in WAIT 0 got {r0:?} {}",
        (stepped_at - granted_at).as_millis(),
        since(t20),
        since(t0)
    );

    // The lease is over once the clock jumped: the waiter with no time limit must be
    // served then, not when the lease would have ended on the monotonic clock (3 s).
    assert!(r0.is_some(), "the WAIT 0 client was not granted after the step");
    assert!(
        t0 - stepped_at < Duration::from_millis(lease as u64 / 2),
        "the WAIT 0 client was granted {} after the step, as late as the unstepped lease",
        since(t0)
    );

    // Back: a 1 s lease, the clock goes 10 min back.
    server.step(0);
    assert!(acquire(&mut c, "obs:back", "holder", 1_000).is_some());
    server.step(-600);
    let info_back = lock_info(&mut c, "obs:back");
    std::thread::sleep(Duration::from_millis(1_500)); // the fault: time passing
    let still = lock_info(&mut c, "obs:back");
    let other = acquire(&mut c, "obs:back", "other", 1_000);
    eprintln!(
        "clock -10 min: LOCK.INFO of a 1 s lease just after the step: ttl {:?}; 1.5 s later: {:?}; another owner's \
         LOCK.ACQUIRE then: {other:?}",
        info_back.map(|i| i.ttl),
        still.map(|i| (i.owner_str(), i.ttl))
    );
    server.step(0);
}

#[test]
fn tokens_never_go_back_when_the_wall_clock_steps() {
    let started = Instant::now();
    let threads = 3;
    let mut server = FakeClockServer::start(&["appendonly yes", "appendfsync always"]);
    // First, on a server with no other lease (another lease's timer would end these too).
    observe_leases(&server);
    ok(&mut server.conn(), &["FLUSHALL"]);
    let shared = Arc::new(Shared {
        port: server.port,
        stop: AtomicBool::new(false),
        current_pid: AtomicU32::new(server.pid()),
        ops: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || load(s, i))
        })
        .collect();

    // The schedule: offsets in seconds, and restarts (`None`) while the clock is behind
    // the tokens already issued.
    let schedule: Vec<Option<i64>> = if full() {
        let offsets = [-3600, -600, -60, -5, 0, 5, 60, 600, 3600];
        let mut rng = rand::thread_rng();
        let mut s = vec![];
        let mut last = 0;
        for _ in 0..100 {
            let next = **offsets.iter().filter(|&&o| o != last).collect::<Vec<_>>().choose(&mut rng).unwrap();
            s.push(Some(next));
            last = next;
            if next < 0 && rng.gen_bool(0.3) {
                s.push(None);
            }
        }
        s
    } else {
        vec![Some(600), Some(-600), None, Some(0), Some(3600), Some(-60), None, Some(0)]
    };
    let hold = Duration::from_millis(scale(400, 700));
    let mut steps = 0;
    let mut restarts = 0;
    let mut rng = rand::thread_rng();
    for what in &schedule {
        let ops0 = shared.ops.load(Ordering::SeqCst);
        match what {
            Some(offset) => {
                server.step(*offset);
                steps += 1;
            }
            None => {
                shared.current_pid.store(0, Ordering::SeqCst);
                server.kill9();
                server.start_again();
                shared.current_pid.store(server.pid(), Ordering::SeqCst);
                restarts += 1;
            }
        }
        // Load on the new clock: some work done, then a while longer.
        wait_until(Duration::from_secs(30), "the load goes on after a step", || {
            assert!(!handles.iter().any(|h| h.is_finished()), "a load thread stopped early");
            shared.ops.load(Ordering::SeqCst) >= ops0 + 20
        });
        std::thread::sleep(hold.mul_f64(rng.gen_range(0.5..1.5)));
    }
    shared.stop.store(true, Ordering::SeqCst);
    let grants: Vec<Grant> = handles.into_iter().flat_map(|h| h.join().expect("a load thread failed")).collect();

    let bad = check_token_order(&grants);
    assert!(
        bad.is_empty(),
        "tokens went back across clock steps ({} cases):\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );

    // Once more, on every key, after everything: above all that was issued on it.
    let mut c = server.conn();
    let mut late = vec![];
    for key in (0..MUTEXES).map(|n| format!("m{n}")) {
        let invoked = Instant::now();
        if let Some(t) = acquire(&mut c, &key, "late", 1_000) {
            late.push(Grant {
                key,
                invoked,
                completed: Instant::now(),
                token: t,
                what: "the last LOCK.ACQUIRE".into(),
            });
        }
    }
    for key in (0..FENCES).map(|n| format!("f{n}")) {
        let invoked = Instant::now();
        let t = fence_next(&mut c, &key);
        late.push(Grant { key, invoked, completed: Instant::now(), token: t, what: "the last FENCE.NEXT".into() });
    }
    let mut everything = grants.clone();
    everything.extend(late);
    let bad = check_token_order(&everything);
    assert!(bad.is_empty(), "tokens went back:\n{}", bad.join("\n"));

    eprintln!(
        "clock steps: {steps} steps, {restarts} restarts with the clock behind, {} grants, {:?}",
        grants.len(),
        started.elapsed()
    );
}
