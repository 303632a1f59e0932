"""A local Redis Cluster for the tests: three masters and three replicas on loopback ports.

Started by the test suite itself (``redis-server --cluster-enabled yes``, then ``redis-cli
--cluster create``), each node's files in a temporary folder, stopped by PID when the suite ends.
Nothing here is mocked: the nodes are real servers that answer MOVED, fail over and promote.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MASTERS = 3
REPLICAS_PER_MASTER = 1
START_WAIT = 30.0  # seconds for every node to answer and every slot to be served


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]  # the redis-server; stopped by its PID

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node (a master failing, for the failover tests)."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@dataclass
class Cluster:
    folder: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def url(self, prefix: str | None = None) -> str:
        """The store URL Nudge is given for this cluster (every node, so any can seed the client)."""
        url = "redis+cluster://" + ",".join(self.addresses)
        return url + (f"?prefix={prefix}" if prefix else "")

    def cli(self, *args: str, port: int | None = None) -> str:
        """``redis-cli`` against one node (the first by default), its output as text."""
        port = port or self.nodes[0].port
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True, text=True, timeout=30, check=True,
        )
        return done.stdout

    def masters(self) -> list[int]:
        """The ports of the nodes that are masters now (a failover changes them)."""
        ports = []
        for line in self.cli("cluster", "nodes").splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2]:
                ports.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(ports)

    def healthy(self) -> bool:
        try:
            info = self.cli("cluster", "info")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return False
        return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    """``count`` free loopback ports whose cluster-bus ports (port + 10000) are free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _await(condition, what: str, timeout: float = START_WAIT) -> None:
    """Poll a condition of the external processes (they cannot be awaited), bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local Redis Cluster: timed out waiting for {what}")
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def local_cluster(masters: int = MASTERS, replicas: int = REPLICAS_PER_MASTER) -> Iterator[Cluster]:
    """Start a cluster of ``masters`` masters with ``replicas`` replicas each, stop it afterwards."""
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        raise RuntimeError("redis-server and redis-cli are needed for the cluster tests (scripts/setup --tests)")
    folder = Path(tempfile.mkdtemp(prefix="nudge-cluster-"))
    cluster = Cluster(folder)
    try:
        for port in _free_ports(masters * (1 + replicas)):
            home = folder / str(port)
            home.mkdir()
            process = subprocess.Popen(
                [
                    "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", str(home / "nodes.conf"),
                    "--cluster-node-timeout", "2000", "--dir", str(home),
                    "--save", "", "--appendonly", "no", "--logfile", str(home / "redis.log"),
                ],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            cluster.nodes.append(Node(port, process))
        for node in cluster.nodes:
            _await(lambda node=node: _answers(node.port), f"node {node.port} to answer")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *cluster.addresses,
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=True,
        )
        _await(cluster.healthy, "every slot to be served")
        yield cluster
    finally:
        cluster.stop()
