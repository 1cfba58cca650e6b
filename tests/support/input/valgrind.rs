//! `redis-server` with the module under `valgrind --leak-check=full`, and the reading of
//! its logs, for `chaos_valgrind`.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::support::server::{fresh_dir, redis_server_bin, tail, which, Options, Server};

/// `tests/support/valgrind.supp`, if there.
pub fn suppressions() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/valgrind.supp");
    p.is_file().then_some(p)
}

/// Whether valgrind can check `server` (and how we know). Its `malloc` must be libc's (a
/// `MALLOC=libc` build) or a shared library (Debian's packages link libjemalloc.so.2):
/// source builds link jemalloc in under prefixed names, so valgrind sees almost no
/// allocations and its leak check would pass without looking. And the server must run
/// under valgrind at all: Debian's Valkey 8.0 frees with jemalloc's `sdallocx`, which
/// valgrind does not replace, and dies at start-up. (`make compat` applies the same rule,
/// in `scripts/compat.sh`, to skip `random_commands_under_valgrind`, and says so.)
pub fn valgrind_can_check(valgrind: &Path, server: &Path) -> Result<String, String> {
    let version = Command::new(server)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", server.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let malloc = version.split_whitespace().find_map(|w| w.strip_prefix("malloc=")).unwrap_or("unknown");
    let ldd =
        Command::new("ldd").arg(server).output().map_err(|e| format!("cannot run ldd {}: {e}", server.display()))?;
    let how = if malloc == "libc" {
        "malloc=libc".to_string()
    } else if String::from_utf8_lossy(&ldd.stdout).contains("libjemalloc.so") {
        format!("malloc={malloc} from a shared libjemalloc.so")
    } else {
        return Err(format!(
            "{} uses malloc={malloc} linked into the binary (not libc, no libjemalloc.so in ldd), so valgrind \
             cannot see its allocations or leaks",
            server.display()
        ));
    };
    let run = Command::new(valgrind)
        .args(["-q", "--error-exitcode=99"])
        .arg(server)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        return Err(format!(
            "{} ({how}) does not run under valgrind: `valgrind {} --version` ended with {}\n{}",
            server.display(),
            server.display(),
            run.status,
            tail(&err, 12)
        ));
    }
    Ok(how)
}

/// `redis-server` with the module, under `valgrind --leak-check=full` (one log per process
/// in the server's dir, `vg.<pid>.log`; the dir is kept when the test fails). Panics, saying
/// why, when valgrind is missing or cannot check this server.
pub fn start() -> Server {
    let valgrind = which("valgrind").unwrap_or_else(|| {
        panic!("valgrind is not installed: `make deps` installs it (or `apt-get install -y valgrind`)")
    });
    let mut redis = redis_server_bin();
    if redis.components().count() == 1 {
        redis = which(&redis.to_string_lossy()).unwrap_or(redis);
    }
    if let Err(why) = valgrind_can_check(&valgrind, &redis) {
        panic!(
            "the valgrind test cannot run on this server: {why}. Run it against Debian's \
             redis-server (the default) or a server built with MALLOC=libc (REDIS_SERVER=...; \
             `scripts/servers.sh build valkey-9.1-libc` builds one)"
        );
    }
    let dir = fresh_dir();
    let mut args = vec![
        "--error-exitcode=99".to_string(),
        "--leak-check=full".into(),
        "--errors-for-leak-kinds=definite".into(),
        "--track-origins=no".into(),
        format!("--log-file={}/vg.%p.log", dir.display()),
    ];
    if let Some(supp) = suppressions() {
        args.push(format!("--suppressions={}", supp.display()));
    }
    Options::new()
        .wrapper(&valgrind, &args)
        .in_dir(dir)
        .start_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(180))
        .keep_dir_on_panic()
        .start()
}

/// `SHUTDOWN NOSAVE`, so that valgrind's leak check runs; returns the exit status.
pub fn shutdown(server: &mut Server) -> ExitStatus {
    server
        .shutdown(Duration::from_secs(300))
        .unwrap_or_else(|| panic!("redis-server under valgrind did not exit within 300 s of SHUTDOWN NOSAVE"))
}

/// The valgrind logs in the server's dir, with their text, sorted by name.
pub fn logs(server: &Server) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = fs::read_dir(&server.dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vg.") && n.ends_with(".log"))
                })
                .map(|p| {
                    let text = fs::read_to_string(&p).unwrap_or_default();
                    (p, text)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The blocks of a valgrind log (runs of non-empty `==pid==` lines).
pub fn vg_blocks(log: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in log.lines() {
        let body = line.split_once("== ").map_or("", |(_, b)| b).trim_end();
        if body.is_empty() {
            if !cur.is_empty() {
                blocks.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        blocks.push(cur.join("\n"));
    }
    blocks
}

pub const VG_ERROR_KINDS: [&str; 12] = [
    "Invalid read",
    "Invalid write",
    "Invalid free",
    "Mismatched free",
    "Conditional jump",
    "Use of uninitialised",
    "Syscall param",
    "Source and destination overlap",
    "are definitely lost",
    "Argument 'size' of function",
    "Invalid alignment",
    "Process terminating",
];

pub fn mentions_module(block: &str) -> bool {
    block.contains("libfencelock") || block.contains("fencelock::")
}
