"""Real redis-server processes with the fencelock module, on free loopback ports,
started for the tests and stopped after them. FENCELOCK_MODULE names the module (.so);
REDIS_SERVER the server binary (default: redis-server on PATH); REDIS_CLI the redis-cli
that joins the 3-master cluster (default: the one beside REDIS_SERVER, else on PATH)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Sequence, Set

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

MODULE = os.environ.get("FENCELOCK_MODULE", "")
REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")


def pytest_configure(config: Any) -> None:
    if not MODULE or not os.path.isfile(MODULE):
        raise pytest.UsageError(f"set FENCELOCK_MODULE to the path of libfencelock.so (got {MODULE!r})")
    if shutil.which(REDIS_SERVER) is None:
        raise pytest.UsageError(f"no redis-server at {REDIS_SERVER!r}; set REDIS_SERVER")


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `condition` until it is truthy (and return it) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def _free_port(cluster: bool) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not cluster:
            return port
        if port < 55535:  # the cluster bus listens on port + 10000
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    pass


class Server:
    def __init__(self, cluster: bool = False, one_node: bool = True, extra: Sequence[str] = ()) -> None:
        """A server; with `cluster`, cluster-enabled, and (with `one_node`) given every
        slot, else left for `Cluster` to join."""
        self.dir = tempfile.mkdtemp(prefix="fencelock-py-")
        self.cluster = cluster
        for _ in range(5):  # a port taken between probing and binding: try another
            self.port = _free_port(cluster)
            args = [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--loadmodule", MODULE,
                "--notify-keyspace-events", "KEA", "--logfile", "server.log", *extra,
            ]
            if cluster:
                args += ["--cluster-enabled", "yes", "--cluster-config-file", os.path.join(self.dir, "nodes.conf")]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self._wait_up():
                break
        else:
            raise RuntimeError(f"redis-server did not start; see {self.dir}/server.log")
        if cluster and one_node:
            c = self.client()
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_until(lambda: b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO"), 10, "cluster_state:ok")
            c.close()

    def _wait_up(self) -> bool:
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as c:
                    return bool(c.ping())
            except redis.ConnectionError:
                time.sleep(0.01)
        self.stop()
        return False

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def calls(self, command: str) -> int:
        """How many times the server has run `command` since the last CONFIG RESETSTAT."""
        with self.client() as c:
            stats = c.info("commandstats")
        return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _redis_cli() -> str:
    if os.environ.get("REDIS_CLI"):
        return os.environ["REDIS_CLI"]
    server = shutil.which(REDIS_SERVER)
    beside = os.path.join(os.path.dirname(server), "redis-cli") if server else ""
    return beside if os.access(beside, os.X_OK) else "redis-cli"


class Cluster:
    """Three masters (no replicas) joined by `redis-cli --cluster create`, with the
    steps of a slot migration. Node indexes are into `nodes`."""

    def __init__(self) -> None:
        cli = _redis_cli()
        if shutil.which(cli) is None:
            raise RuntimeError(f"no redis-cli at {cli!r}; set REDIS_CLI")
        extra = ["--cluster-node-timeout", "1000", "--enable-debug-command", "yes"]
        self.nodes: List[Server] = []
        self.migrating: Set[int] = set()  # slots a test began to move and has not finished
        try:
            for _ in range(3):
                self.nodes.append(Server(cluster=True, one_node=False, extra=extra))
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            done = subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
            )
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout.decode(errors='replace')}")
            self.conns = [n.client() for n in self.nodes]
            self.ids = [c.execute_command("CLUSTER", "MYID").decode() for c in self.conns]
            self.await_ok()
        except BaseException:
            self.stop()
            raise

    def await_ok(self) -> None:
        """Every node says cluster_state:ok and agrees on who serves every slot."""

        def ok() -> bool:
            if not all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in self.conns):
                return False
            views = [sorted((s[0], s[1], s[2][1]) for s in c.execute_command("CLUSTER", "SLOTS")) for c in self.conns]
            return all(v == views[0] for v in views)

        wait_until(ok, 20, "cluster_state:ok on every node")

    def owner(self, slot: int) -> int:
        """The node that serves `slot`, as the first node sees it."""
        for start, end, master, *_ in self.conns[0].execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return [n.port for n in self.nodes].index(int(master[1]))
        raise AssertionError(f"slot {slot} is not served")

    def key_on(self, node: int, prefix: str) -> str:
        """A key `{<prefix><n>}` whose slot `node` serves."""
        return next(k for k in (f"{{{prefix}{n}}}" for n in range(100000)) if self.owner(key_slot(k.encode())) == node)

    def keys_in(self, node: int, slot: int) -> List[bytes]:
        return list(self.conns[node].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000))

    def begin_migration(self, slot: int, src: int, dst: int) -> None:
        self.conns[dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[src])
        self.conns[src].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[dst])
        self.migrating.add(slot)

    def move_keys(self, slot: int, src: int, dst: int) -> int:
        keys = self.keys_in(src, slot)
        if keys:
            self.conns[src].execute_command("MIGRATE", "127.0.0.1", self.nodes[dst].port, "", 0, 5000, "KEYS", *keys)
        return len(keys)

    def end_migration(self, slot: int, src: int, dst: int) -> None:
        for node in [dst, src] + [n for n in range(3) if n not in (src, dst)]:
            self.conns[node].execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.ids[dst])
        self.migrating.discard(slot)

    def reset(self) -> None:
        """Between tests: a slot a failed test left half moved is stable again, and
        every node is empty, with its command counts reset."""
        for slot in self.migrating:
            for c in self.conns:
                c.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        self.migrating.clear()
        for c in self.conns:
            c.flushall()
            c.config_resetstat()

    def calls(self, node: int, command: str) -> Dict[str, int]:
        """`command`'s counts on `node` since the last CONFIG RESETSTAT: `calls` (it
        ran) and `rejected_calls` (refused before running, e.g. -MOVED, -ASK)."""
        stats = self.conns[node].info("commandstats").get(f"cmdstat_{command.lower()}", {})
        return {"calls": int(stats.get("calls", 0)), "rejected_calls": int(stats.get("rejected_calls", 0))}

    def stop(self) -> None:
        for c in getattr(self, "conns", []):
            c.close()
        for n in self.nodes:
            n.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def fresh_server() -> Iterator[Server]:
    """A server of one's own, for tests that stop it."""
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def cluster_server() -> Iterator[Server]:
    s = Server(cluster=True)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def cluster3() -> Iterator[Cluster]:
    """Three masters, shared by the tests that move slots (each moves its own)."""
    c = Cluster()
    yield c
    c.stop()


@pytest.fixture
def c3(cluster3: Cluster) -> Iterator[Cluster]:
    cluster3.reset()
    yield cluster3


@pytest.fixture
def r(server: Server) -> Iterator[redis.Redis]:
    c = server.client()
    c.flushall()
    c.config_resetstat()
    yield c
    c.close()


@pytest.fixture
def rc(cluster_server: Server) -> Iterator[RedisCluster]:
    c = RedisCluster(host="127.0.0.1", port=cluster_server.port)
    c.flushall()
    yield c
    c.close()


def info(client: Any, command: str, key: str) -> Dict[str, Any]:
    """INFO reply as a str-keyed dict ({} when free), without the package's parser."""
    reply = client.execute_command(command, key)
    return {} if reply is None else {k.decode(): v for k, v in zip(reply[::2], reply[1::2])}


def subscribers(client: Any, channel: str) -> int:
    counts = {k.decode() if isinstance(k, bytes) else k: n for k, n in client.pubsub_numsub(channel)}
    return int(counts[channel])


def keyspace(key: str) -> str:
    return f"__keyspace@0__:{key}"


def keeper_threads(name: str) -> List[Any]:
    import threading

    return [t for t in threading.enumerate() if t.name == f"fencelock-keeper:{name}"]


STALE = re.compile(r"STALE token (\d+) is older than (\d+)")
