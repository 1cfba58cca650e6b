//! A Redis Cluster of fencelock servers on loopback, for the cluster suites.
//!
//! [`Cluster`] starts `masters * (1 + replicas)` servers with `cluster-enabled yes`, joins
//! them with `redis-cli --cluster create` (as an operator would), and waits until every
//! node sees every slot served and every replica in sync. It moves a slot with the
//! standard steps (`CLUSTER SETSLOT ... IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT ... NODE`)
//! one step at a time, so a test can act between them. [`Client`] is a cluster client as
//! the usual libraries are: it routes by hash slot and follows `-MOVED` and `-ASK`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use redis::{ErrorKind, RedisError, RedisResult, Value};

use super::cmd::{info, parse_info, wait_until};
use super::server::{redis_server_bin, Options, Server};

/// Every node's own config: a short node timeout, so a killed master is failed over
/// within seconds.
pub const NODE_CONFIG: &[&str] = &["cluster-enabled yes", "cluster-node-timeout 1000", "repl-diskless-sync-delay 0"];

pub struct Cluster {
    pub nodes: Vec<Server>,
}

/// `$REDIS_CLI` (`make compat` sets it), else `redis-cli` (or `valkey-cli`) beside the
/// server under test, else on the PATH.
pub fn cli_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_CLI") {
        return PathBuf::from(p);
    }
    let server = redis_server_bin();
    if let Some(dir) = server.parent() {
        for name in ["redis-cli", "valkey-cli"] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    PathBuf::from("redis-cli")
}

/// The hash slot of `key` (CRC16/XMODEM of its hash tag, or of the whole key).
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

fn text(con: &mut redis::Connection, args: &[&str]) -> RedisResult<String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
}

impl Cluster {
    /// `masters` masters with `replicas` replicas each, every node with `config` too.
    pub fn start(masters: usize, replicas: usize, config: &[&str]) -> Cluster {
        Cluster::start_with(masters, replicas, |_| Options::new().config(config))
    }

    /// The same, node `i` started from `options(i)` (a fake clock for one node, say).
    pub fn start_with(masters: usize, replicas: usize, options: impl Fn(usize) -> Options) -> Cluster {
        let n = masters * (1 + replicas);
        let nodes: Vec<Server> = (0..n).map(|i| options(i).config(NODE_CONFIG).start()).collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|s| format!("127.0.0.1:{}", s.port)));
        args.extend(["--cluster-replicas".into(), replicas.to_string(), "--cluster-yes".into()]);
        let out = Command::new(cli_bin()).args(&args).output().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cli_bin()));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        cluster.await_ok();
        cluster
    }

    pub fn conn(&self, i: usize) -> redis::Connection {
        self.nodes[i].conn()
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    pub fn index_of_port(&self, port: u16) -> usize {
        self.nodes.iter().position(|s| s.port == port).unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The node id of node `i`.
    pub fn id(&self, i: usize) -> String {
        text(&mut self.conn(i), &["CLUSTER", "MYID"]).unwrap()
    }

    pub fn is_master(&self, i: usize) -> bool {
        info(&mut self.conn(i), "replication").get("role").map(String::as_str) == Some("master")
    }

    /// The nodes whose server runs (not killed by a test).
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_alive()).collect()
    }

    /// The live masters.
    pub fn masters(&self) -> Vec<usize> {
        self.live().into_iter().filter(|&i| self.is_master(i)).collect()
    }

    /// A live master other than `m`.
    pub fn another_master(&self, m: usize) -> usize {
        self.masters().into_iter().find(|&o| o != m).unwrap_or_else(|| panic!("no master but node {m}"))
    }

    /// A replica of master `m`.
    pub fn replica_of(&self, m: usize) -> Option<usize> {
        let port = self.port(m).to_string();
        self.live().into_iter().find(|&i| i != m && info(&mut self.conn(i), "replication").get("master_port") == Some(&port))
    }

    /// The node that serves `slot`, as node `seen_by` sees it.
    pub fn owner_seen_by(&self, seen_by: usize, slot: u16) -> Option<usize> {
        let port = *self.slot_map(seen_by)?.get(slot as usize)?;
        (port != 0).then(|| self.index_of_port(port))
    }

    /// The master that serves `key`'s slot, as the first live master sees it.
    pub fn owner_of(&self, key: &str) -> usize {
        let seen_by = self.masters()[0];
        self.owner_seen_by(seen_by, slot_of(key)).unwrap_or_else(|| panic!("no node serves {key}"))
    }

    /// Waits until every live node says the cluster is ok, serves every slot, agrees with
    /// the others on who serves each, and every replica is in sync.
    pub fn await_ok(&self) {
        let live = self.live();
        let not_ok = || -> Vec<usize> {
            live.iter()
                .copied()
                .filter(|&i| {
                    let Some(info) = self.cluster_info(i) else { return true };
                    !(info.get("cluster_state").map(String::as_str) == Some("ok")
                        && info.get("cluster_slots_ok").map(String::as_str) == Some("16384"))
                })
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let bad = not_ok();
            if bad.is_empty() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let views: Vec<String> = bad
                    .iter()
                    .map(|&i| {
                        let info = text(&mut self.conn(i), &["CLUSTER", "INFO"]).unwrap_or_default();
                        let nodes = text(&mut self.conn(i), &["CLUSTER", "NODES"]).unwrap_or_default();
                        format!("node {i} (port {}):\n{info}\n{nodes}", self.port(i))
                    })
                    .collect();
                panic!("after 60 s the cluster is not ok on nodes {bad:?}:\n{}", views.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Every slot, not a sample: a replica that has not yet heard that its master
        // gained a slot would leave that slot to a dead node if it took over now, and
        // `redis-cli --cluster` refuses to work on a cluster whose nodes disagree.
        wait_until(Duration::from_secs(60), "every node agrees on every slot, every replica in sync", || {
            let views: Vec<Option<Vec<u16>>> = live.iter().map(|&i| self.slot_map(i)).collect();
            let agree = views.windows(2).all(|w| w[0] == w[1]);
            let covered = views.first().is_some_and(|v| v.as_ref().is_some_and(|m| m.iter().all(|&port| port != 0)));
            let synced = live.iter().all(|&i| {
                let r = info(&mut self.conn(i), "replication");
                r.get("role").map(String::as_str) == Some("master") || r.get("master_link_status").map(String::as_str) == Some("up")
            });
            agree && covered && synced
        });
        // And on who replicates whom: a master ignores `CLUSTER FAILOVER`'s request from a
        // replica it has not yet heard of by gossip, and the manual failover times out.
        wait_until(Duration::from_secs(60), "every node agrees on every live node's role", || {
            let Some(views) = live.iter().map(|&i| self.roles_seen_by(i)).collect::<Option<Vec<_>>>() else { return false };
            live.iter().zip(&views).all(|(&j, own_view)| {
                let own = own_view.get(&self.port(j));
                own.is_some() && views.iter().all(|seen| seen.get(&self.port(j)) == own)
            })
        });
    }

    /// Each node's role as node `i` sees it, by port: `None` for a master, else the port
    /// of the master it replicates.
    fn roles_seen_by(&self, i: usize) -> Option<HashMap<u16, Option<u16>>> {
        let nodes = text(&mut self.conn(i), &["CLUSTER", "NODES"]).ok()?;
        let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).filter(|f: &Vec<&str>| f.len() >= 4).collect();
        let port_of = |field: &str| -> Option<u16> { field.split(['@', ',']).next()?.rsplit(':').next()?.parse().ok() };
        let port_by_id: HashMap<&str, u16> = lines.iter().filter_map(|f| Some((f[0], port_of(f[1])?))).collect();
        lines
            .iter()
            .map(|f| {
                let master = if f[2].split(',').any(|flag| flag == "slave") { Some(*port_by_id.get(f[3])?) } else { None };
                Some((port_of(f[1])?, master))
            })
            .collect()
    }

    /// `CLUSTER FAILOVER` on `replica`, awaited until it serves as master.
    pub fn failover(&self, replica: usize) {
        assert_eq!(text(&mut self.conn(replica), &["CLUSTER", "FAILOVER"]).unwrap(), "OK");
        wait_until(Duration::from_secs(30), "the replica is promoted by the manual failover", || self.is_master(replica));
    }

    /// Who serves each slot (by port; 0: nobody), as node `i` sees it.
    pub fn slot_map(&self, i: usize) -> Option<Vec<u16>> {
        let v: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut self.conn(i)).ok()?;
        let Value::Array(ranges) = v else { return None };
        let mut map = vec![0u16; 16384];
        for range in ranges {
            let Value::Array(fields) = range else { return None };
            let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) = (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let Some(Value::Int(port)) = master.get(1) else { return None };
            for slot in *lo..=*hi {
                *map.get_mut(slot as usize)? = *port as u16;
            }
        }
        Some(map)
    }

    // ---- moving a slot, one step at a time (what `redis-cli --cluster reshard` does) ----

    /// `CLUSTER SETSLOT slot IMPORTING` on `to`, then `MIGRATING` on `from`.
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        assert_eq!(text(&mut self.conn(to), &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &self.id(from)]).unwrap(), "OK");
        assert_eq!(text(&mut self.conn(from), &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &self.id(to)]).unwrap(), "OK");
    }

    /// `MIGRATE`s every key of `slot` from `from` to `to`; returns how many.
    pub fn move_keys(&self, slot: u16, from: usize, to: usize) -> usize {
        let mut con = self.conn(from);
        let mut moved = 0;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100).query(&mut con).unwrap();
            if keys.is_empty() {
                return moved;
            }
            let mut cmd = redis::cmd("MIGRATE");
            cmd.arg("127.0.0.1").arg(self.port(to)).arg("").arg(0).arg(5000).arg("KEYS");
            for k in &keys {
                cmd.arg(k);
            }
            let r: String = cmd.query(&mut con).unwrap();
            assert_eq!(r, "OK");
            moved += keys.len();
        }
    }

    /// `CLUSTER SETSLOT slot NODE to` on `to`, `from`, then every other master.
    pub fn end_migration(&self, slot: u16, from: usize, to: usize) {
        // The importer takes a new config epoch on `SETSLOT NODE` only if its own is not
        // already the newest it knows of. One that has not yet heard of a newer epoch
        // (the previous move's, on a loaded machine) claims the slot with a stale epoch:
        // the others keep crediting the old owner and tell the importer so, and it can
        // lose the slot in its own view too. So every node must know the newest first.
        self.await_epoch_agreement();
        let id = self.id(to);
        let slot_s = slot.to_string();
        let mut order = vec![to, from];
        order.extend(self.masters().into_iter().filter(|m| *m != to && *m != from));
        for i in order {
            assert_eq!(text(&mut self.conn(i), &["CLUSTER", "SETSLOT", &slot_s, "NODE", &id]).unwrap(), "OK");
        }
        self.await_owner(slot, to);
    }

    /// Waits until every live node knows of the same newest epoch.
    pub fn await_epoch_agreement(&self) {
        let live = self.live();
        wait_until(Duration::from_secs(60), "every node knows of the newest epoch", || {
            let known: Vec<Option<u64>> = live.iter().map(|&i| self.epochs(i).map(|(current, _)| current)).collect();
            known.windows(2).all(|w| w[0] == w[1]) && known[0].is_some()
        });
    }

    /// Node `i`'s `(cluster_current_epoch, cluster_my_epoch)`.
    fn epochs(&self, i: usize) -> Option<(u64, u64)> {
        let info = self.cluster_info(i)?;
        let field = |name: &str| info.get(name)?.parse().ok();
        Some((field("cluster_current_epoch")?, field("cluster_my_epoch")?))
    }

    /// Node `i`'s `CLUSTER INFO` fields; None when it does not answer.
    fn cluster_info(&self, i: usize) -> Option<HashMap<String, String>> {
        Some(parse_info(&text(&mut self.conn(i), &["CLUSTER", "INFO"]).ok()?))
    }

    /// Waits until every live node credits `slot` to `owner`. Replicas learn of a move by
    /// gossip, which carries the owner's config epoch, and keep the old owner if its epoch
    /// is not lower: two moves in quick succession can leave two masters with the same
    /// epoch (each bumps its own when it imports). The operator's remedy is `CLUSTER
    /// BUMPEPOCH` on the new owner, which makes its claim the newest; it is applied
    /// when the news has not spread within a second.
    pub fn await_owner(&self, slot: u16, owner: usize) {
        let live = self.live();
        let start = std::time::Instant::now();
        let mut bumped_at = start;
        loop {
            if live.iter().all(|&i| self.owner_seen_by(i, slot) == Some(owner)) {
                return;
            }
            if start.elapsed() >= Duration::from_secs(60) {
                let views: Vec<String> = live
                    .iter()
                    .map(|&i| format!("node {i}: owner {:?}, (current, own) epoch {:?}", self.owner_seen_by(i, slot), self.epochs(i)))
                    .collect();
                panic!("slot {slot} is not credited to node {owner} everywhere after 60 s:\n{}", views.join("\n"));
            }
            if bumped_at.elapsed() >= Duration::from_secs(1) {
                let _ = text(&mut self.conn(owner), &["CLUSTER", "BUMPEPOCH"]);
                bumped_at = std::time::Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole move of `slot` from `from` to `to`.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        self.begin_migration(slot, from, to);
        self.move_keys(slot, from, to);
        self.end_migration(slot, from, to);
    }

    /// `redis-cli --cluster reshard`: moves `slots` slots (the tool picks them) from
    /// `from` to `to`, with their keys.
    pub fn reshard(&self, from: usize, to: usize, slots: usize) {
        // The tool's first `SETSLOT NODE` has the race `end_migration` explains.
        self.await_epoch_agreement();
        let out = Command::new(cli_bin())
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", self.port(from))])
            .args(["--cluster-from", &self.id(from), "--cluster-to", &self.id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cli_bin()));
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client of this cluster.
    pub fn client(&self) -> Client {
        let seeds = self.live().into_iter().map(|i| self.port(i)).collect();
        Client { seeds, slots: HashMap::new(), conns: HashMap::new(), read_timeout: Duration::from_secs(30) }
    }
}

/// A cluster client: routes each command by the slot of its first key (its second
/// word), caches where slots live, follows `-MOVED` (learning the new owner) and `-ASK`
/// (`ASKING` then the command, once), as cluster-aware libraries do.
pub struct Client {
    seeds: Vec<u16>,
    slots: HashMap<u16, u16>,
    conns: HashMap<u16, redis::Connection>,
    pub read_timeout: Duration,
}

impl Client {
    fn conn(&mut self, port: u16) -> RedisResult<&mut redis::Connection> {
        if !self.conns.contains_key(&port) {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
            let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
            con.set_read_timeout(Some(self.read_timeout))?;
            self.conns.insert(port, con);
        }
        Ok(self.conns.get_mut(&port).unwrap())
    }

    fn port_for(&self, slot: u16) -> u16 {
        self.slots.get(&slot).copied().unwrap_or(self.seeds[slot as usize % self.seeds.len()])
    }

    /// Runs `args`, following redirections (up to 8); connection errors drop the
    /// connection and are returned.
    pub fn call(&mut self, args: &[&str]) -> RedisResult<Value> {
        let slot = slot_of(args.get(1).copied().unwrap_or(""));
        let mut port = self.port_for(slot);
        let mut asking = false;
        let mut last = None;
        for _ in 0..8 {
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            let con = self.conn(port)?;
            if asking {
                redis::cmd("ASKING").query::<()>(con)?;
            }
            match cmd.query::<Value>(con) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let redirect = e.redirect_node().and_then(|(addr, _)| addr.rsplit(':').next()?.parse::<u16>().ok());
                    match (e.kind(), redirect) {
                        (ErrorKind::Moved, Some(to)) => {
                            self.slots.insert(slot, to);
                            port = to;
                            asking = false;
                        }
                        (ErrorKind::Ask, Some(to)) => {
                            port = to;
                            asking = true;
                        }
                        (ErrorKind::TryAgain | ErrorKind::ClusterDown, _) => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        _ => {
                            if e.is_io_error() || e.is_timeout() {
                                self.conns.remove(&port);
                                self.slots.remove(&slot);
                            }
                            return Err(e);
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::ClientError, "too many redirections"))))
    }
}
