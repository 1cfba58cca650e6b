//! A `redis-server` whose wall clock the test steps, with libfaketime.
//!
//! The server runs with `LD_PRELOAD=libfaketime.so.1`, reading its offset from a file the
//! test rewrites (`+600s`, `-600s`, ...), with `FAKETIME_NO_CACHE=1` so a step takes effect
//! at once and `FAKETIME_DONT_FAKE_MONOTONIC=1` so only the wall clock steps (NTP stepping
//! the clock, a VM restored from a snapshot).
//!
//! libfaketime 0.9.10 alone deadlocks Debian's redis-server at start-up (its jemalloc
//! calls `clock_gettime` and `pthread_cond_init` while initialising; libfaketime then
//! initialises itself, `dlsym` allocates, and jemalloc waits on its own init lock:
//! wolfcw/libfaketime#130). A ten-line shim preloaded in front of it answers those two
//! calls from the kernel until the process's constructors have run, then hands every
//! call to libfaketime. It is compiled with `cc` into the server's directory.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cmd::{now_ms, server_time_ms, wait_until};
use super::server::{fresh_dir, Options, Server};

pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

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

fn clock_file(dir: &Path) -> PathBuf {
    dir.join("faketime")
}

/// Writes the clock offset (libfaketime syntax) into `dir`'s clock file, atomically, so
/// the server never reads half of it.
fn write_offset_in(dir: &Path, offset: &str) {
    let tmp = dir.join("faketime.new");
    fs::write(&tmp, format!("{offset}\n")).unwrap();
    fs::rename(&tmp, clock_file(dir)).unwrap();
}

/// A server (with the module and `config`) under libfaketime, its clock at +0.
pub fn start(config: &[&str]) -> Server {
    options(config).start()
}

/// The options of a server under libfaketime (its clock at +0), to add to and start.
pub fn options(config: &[&str]) -> Options {
    assert!(
        Path::new(LIBFAKETIME).is_file(),
        "{LIBFAKETIME} is missing: the clock-step tests need libfaketime. Install it with \
         `make deps` (or `apt-get install -y faketime`)"
    );
    let dir = fresh_dir();
    let preload = format!("{} {LIBFAKETIME}", build_shim(&dir).display());
    write_offset_in(&dir, "+0");
    Options::new()
        .config(config)
        .env("LD_PRELOAD", preload)
        .env("FAKETIME_TIMESTAMP_FILE", clock_file(&dir))
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("FAKETIME")
        .start_timeout(Duration::from_secs(20))
        .in_dir(dir)
}

/// Sets the server's wall-clock offset from the real clock (libfaketime syntax).
pub fn write_offset(server: &Server, offset: &str) {
    write_offset_in(&server.dir, offset);
}

/// Steps the clock to `offset_s` seconds from real time and waits until the server's
/// `TIME` shows it.
pub fn step(server: &Server, offset_s: i64) {
    write_offset(server, &format!("{offset_s:+}s"));
    let mut c = server.conn();
    wait_until(Duration::from_secs(10), &format!("the server's clock shows {offset_s:+} s"), || {
        (server_time_ms(&mut c) - now_ms() - offset_s * 1000).abs() < 2_000
    });
}
