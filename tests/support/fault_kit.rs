//! Small tools shared by the chaos tests that stop, kill and restart processes
//! (`chaos_paused`, `chaos_crash`, `chaos_failover`, `chaos_clock`):
//!
//! - `sigstop(pid)` / `sigcont(pid)`: really stop and resume a process.
//! - `cut_off_replica`: stop a replica so that its master's next writes never reach it.
//! - `Children`: child processes killed (after a SIGCONT) when dropped, also on panic.
//! - `is_io` / `is_transient`: tell a dead or restarting server from an error reply.
//! - `check_token_order`: for one key, a grant acknowledged before another grant was
//!   asked for has the smaller token (fencing token rule 1, checked in real time).
//!
//! `support::fault_kit` (run sizes come from `support::chaos`: `full()`, `scale(short, full)`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Instant;

fn signal(pid: u32, sig: libc::c_int) {
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error());
}

/// Stops process `pid` for real (SIGSTOP cannot be caught or ignored).
pub fn sigstop(pid: u32) {
    signal(pid, libc::SIGSTOP);
}

/// Resumes a process stopped with `sigstop`.
pub fn sigcont(pid: u32) {
    signal(pid, libc::SIGCONT);
}

/// Whether `pid` is in the stopped state (`T` in /proc/<pid>/stat).
pub fn is_stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')).unwrap_or(false)
}

/// Stops the replica `replica_pid` and fills the link from its master (`m`, a connection
/// to the master) until the master drops the stalled replica, as it would in production
/// once the replica's output buffer passes `client-output-buffer-limit replica` (give the
/// master a small one, e.g. `4mb 4mb 0`): nothing the master writes from then on can
/// reach the replica. Without the fill the kernel's socket buffers would carry a small
/// write to the stopped process. Returns how many `filler:<n>` keys (1 MB each) it wrote.
pub fn cut_off_replica(m: &mut redis::Connection, replica_pid: u32) -> usize {
    sigstop(replica_pid);
    super::cmd::wait_until(std::time::Duration::from_secs(5), "the replica is stopped", || is_stopped(replica_pid));
    let filler = vec![b'x'; 1024 * 1024];
    let mut filled = 0;
    while super::cmd::info(m, "replication").get("connected_slaves").map(String::as_str) != Some("0") {
        assert!(filled < 200, "200 MB written and the master still streams to a stopped replica");
        let _: () = redis::cmd("SET").arg(format!("filler:{filled}")).arg(&filler).query(m).unwrap();
        filled += 1;
    }
    filled
}

/// Child processes of a test: dropped (normally or while panicking) they are resumed,
/// killed and reaped, so no test leaves a process behind.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Children {
    pub fn push(&mut self, c: Child) {
        self.0.push(c);
    }
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// The server is gone (killed, restarting) rather than answering an error.
pub fn is_io(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// An error that says "try again": I/O, or the server still loading its data.
pub fn is_transient(e: &redis::RedisError) -> bool {
    is_io(e) || e.code() == Some("LOADING")
}

/// One fresh grant on a key, with when it was asked for and when its reply arrived.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key: String,
    pub invoked: Instant,
    pub completed: Instant,
    pub token: i64,
    pub what: String,
}

/// Rule 1 in real time: for every key, a grant acknowledged before another grant on the
/// same key was asked for has a smaller token. (Grants whose calls overlap may come in
/// either order.) Returns the violations, described.
pub fn check_token_order(grants: &[Grant]) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in grants {
        by_key.entry(&g.key).or_default().push(g);
    }
    let mut bad = vec![];
    for (key, gs) in by_key {
        // Sorted by completion, with the running maximum token (and who had it).
        let mut done: Vec<&Grant> = gs.clone();
        done.sort_by_key(|g| g.completed);
        let mut best: Vec<&Grant> = Vec::with_capacity(done.len());
        for g in &done {
            let b = match best.last() {
                Some(p) if p.token >= g.token => *p,
                _ => *g,
            };
            best.push(b);
        }
        for g in &gs {
            // Grants completed strictly before g was invoked.
            let n = done.partition_point(|d| d.completed < g.invoked);
            if n == 0 {
                continue;
            }
            let before = best[n - 1];
            if before.token >= g.token {
                bad.push(format!(
                    "key {key}: {} got token {} although {} had been acknowledged token {} before it was asked",
                    g.what, g.token, before.what, before.token
                ));
            }
        }
    }
    bad
}
