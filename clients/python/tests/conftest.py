"""Real redis-server processes with the fencelock module, on free loopback ports,
started for the tests and stopped after them. FENCELOCK_MODULE names the module (.so);
REDIS_SERVER the server binary (default: redis-server on PATH)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest
import redis
from redis.cluster import RedisCluster

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
    def __init__(self, cluster: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="fencelock-py-")
        self.cluster = cluster
        for _ in range(5):  # a port taken between probing and binding: try another
            self.port = _free_port(cluster)
            args = [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--loadmodule", MODULE,
                "--notify-keyspace-events", "KEA", "--logfile", "server.log",
            ]
            if cluster:
                args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self._wait_up():
                break
        else:
            raise RuntimeError(f"redis-server did not start; see {self.dir}/server.log")
        if cluster:
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
