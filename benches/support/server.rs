//! The benchmark's `redis-server`: the harness's one launcher (`tests/support/server.rs`,
//! mounted as `crate::support`) configured to measure the lock and nothing else: no RDB,
//! no AOF, `noeviction`, `loglevel warning`, `DEBUG` enabled, client connections with 60 s
//! time-outs; with or without the module.

use std::time::Duration;

use crate::support::Options;
pub use crate::support::Server;

fn options() -> Options {
    Options::new()
        .config(&["maxmemory-policy noeviction", "loglevel warning"])
        .start_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
}

/// A server with the module.
pub fn start() -> Server {
    options().start()
}

/// A server with the module and extra config lines (figure 8's setups).
pub fn start_with(config: &[&str]) -> Server {
    options().config(config).start()
}

/// A replica of `master`, with the module.
pub fn start_replica_of(master: &Server) -> Server {
    options().replica_of(master).start()
}

/// The same server without the module (the baseline of figure 6).
pub fn start_plain() -> Server {
    options().without_module().start()
}

/// `SHUTDOWN NOSAVE`; a server that has not exited 10 s later is killed.
pub fn stop(mut server: Server) {
    let _ = server.shutdown(Duration::from_secs(10));
}
