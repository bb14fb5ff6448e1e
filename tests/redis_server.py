"""Real redis-server processes on free loopback ports, for the tests that need them: one server
(:class:`RedisServer`), a Redis Cluster of three masters (:class:`RedisClusterNodes`) and a primary with a replica
watched by Sentinel (:class:`RedisSentinelGroup`). Every process is stopped, and every directory removed, by ``stop``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from .net import free_port, stop_process

CLUSTER_SLOTS = 16384


def command(client: redis.Redis, *args: object) -> Any:
    """The reply to one command (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def synced(replica: redis.Redis) -> bool:
    """Whether a replica's link to its primary is up."""
    return bool(replica.info("replication")["master_link_status"] == "up")


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Return once ``condition()`` is true (a Redis error counts as false); raise ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} within {timeout:g} s")


class RedisServer:
    """One redis-server: ``options`` are extra command-line settings (``--replicaof``, ``--sentinel``), read after
    ``config_file`` if there is one (Sentinel needs a file of its own, which it rewrites)."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, options: Sequence[str] = (), config_file: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.options = list(options)
        self.config_file = config_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A synchronous client of this server alone (for setting it up and looking at it)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server (.ci/run does it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                *([str(self.config_file)] if self.config_file else []),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} ({' '.join(self.options)})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as a crashed machine does."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class RedisClusterNodes:
    """A Redis Cluster of ``masters`` redis-server processes, the slots split evenly between them, each master with
    ``replicas`` replicas (promoted by the cluster itself when their master fails for ``node_timeout_ms``)."""

    def __init__(self, workdir: Path, masters: int = 3, *, replicas: int = 0, node_timeout_ms: int = 5000) -> None:
        self.workdir = workdir
        self.bus_ports: dict[int, int] = {}
        """Each node's cluster bus port by its port (chosen: the default, the node's port + 10000, may be taken)."""
        self.masters = [self._node(f"master-{index}", node_timeout_ms) for index in range(masters)]
        self.replicas = [
            self._node(f"replica-{index}-{number}", node_timeout_ms)
            for index in range(masters)
            for number in range(replicas)
        ]

    def _node(self, name: str, node_timeout_ms: int) -> RedisServer:
        bus_port = free_port()
        node = RedisServer(
            self.workdir / name,
            options=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.workdir / name / "nodes.conf"),
                "--cluster-port",
                str(bus_port),
                "--cluster-node-timeout",
                str(node_timeout_ms),
            ],
        )
        self.bus_ports[node.port] = bus_port
        return node

    @property
    def nodes(self) -> list[RedisServer]:
        return [*self.masters, *self.replicas]

    @property
    def url(self) -> str:
        """The store URL naming every master as a startup node."""
        return "redis+cluster://" + ",".join(node.address for node in self.masters)

    def master_of(self, key: str) -> RedisServer:
        """The master that holds ``key`` (its hash slot), as the cluster was formed."""
        share = CLUSTER_SLOTS // len(self.masters)
        return self.masters[min(key_slot(key.encode()) // share, len(self.masters) - 1)]

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            with contextlib.ExitStack() as closing:
                clients = {node.port: closing.enter_context(contextlib.closing(node.client())) for node in self.nodes}
                share = CLUSTER_SLOTS // len(self.masters)
                for index, master in enumerate(self.masters):
                    last = CLUSTER_SLOTS - 1 if index == len(self.masters) - 1 else (index + 1) * share - 1
                    command(clients[master.port], "CLUSTER ADDSLOTS", *range(index * share, last + 1))
                first = clients[self.masters[0].port]
                for node in self.nodes[1:]:
                    command(first, "CLUSTER MEET", "127.0.0.1", node.port, self.bus_ports[node.port])
                for index, replica in enumerate(self.replicas):
                    master = self.masters[index * len(self.masters) // len(self.replicas)]
                    master_id = command(clients[master.port], "CLUSTER MYID")
                    wait_until(
                        partial(command, clients[replica.port], "CLUSTER REPLICATE", master_id),
                        30,
                        "a replica did not get to know its master",
                    )

                def formed() -> bool:
                    return all(command(c, "CLUSTER INFO")["cluster_state"] == "ok" for c in clients.values())

                wait_until(formed, 30, "the cluster did not reach cluster_state:ok")
                for replica in self.replicas:
                    wait_until(partial(synced, clients[replica.port]), 30, "a replica did not sync with its master")
        except BaseException:
            self.stop()
            raise

    def wait_until_served(self, dead: RedisServer, timeout: float = 30) -> None:
        """Wait until every live node holds ``dead`` as failed and says the cluster serves every slot again (once
        ``dead``'s replica took its slots over)."""
        live = [node for node in self.nodes if node.proc is not None]
        with contextlib.ExitStack() as closing:
            clients = [closing.enter_context(contextlib.closing(node.client())) for node in live]

            def served() -> bool:
                for client in clients:
                    flags = command(client, "CLUSTER NODES")[dead.address]["flags"].split(",")
                    if "fail" not in flags or command(client, "CLUSTER INFO")["cluster_state"] != "ok":
                        return False
                return True

            wait_until(served, timeout, "the cluster did not serve every slot again")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RedisSentinelGroup:
    """A primary, its replica and ``sentinels`` Sentinel processes watching them (quorum 1, failure noticed after
    ``down_after_ms``), under the service name ``service``."""

    def __init__(
        self, workdir: Path, *, service: str = "webcall", sentinels: int = 1, down_after_ms: int = 1000
    ) -> None:
        self.workdir = workdir
        self.service = service
        self.down_after_ms = down_after_ms
        self.primary = RedisServer(workdir / "primary")
        self.replica = RedisServer(workdir / "replica", options=["--replicaof", "127.0.0.1", str(self.primary.port)])
        self.sentinels = [RedisServer(workdir / f"sentinel-{index}") for index in range(sentinels)]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(s.address for s in self.sentinels) + f"/{self.service}"

    def start(self) -> None:
        try:
            self.primary.start()
            self.replica.start()
            with contextlib.closing(self.replica.client()) as replica:
                wait_until(partial(synced, replica), 30, "the replica did not sync with the primary")
            for sentinel in self.sentinels:
                self._start_sentinel(sentinel)
            for sentinel in self.sentinels:
                with contextlib.closing(sentinel.client()) as client:
                    wait_until(
                        partial(command, client, "SENTINEL REPLICAS", self.service),
                        30,
                        "Sentinel did not find the replica",
                    )
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, sentinel: RedisServer) -> None:
        sentinel.workdir.mkdir(parents=True, exist_ok=True)
        sentinel.config_file = sentinel.workdir / "sentinel.conf"
        sentinel.config_file.write_text(
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} 10000\n"
        )
        sentinel.options = ["--sentinel"]
        sentinel.start()

    def primary_port(self) -> int:
        """The primary's port as the first Sentinel names it now."""
        with contextlib.closing(self.sentinels[0].client()) as client:
            _, port = command(client, "SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
            return int(port)

    def wait_for_promotion(self, old_primary_port: int, timeout: float = 30) -> None:
        """Wait until Sentinel names another primary and that server says it is one."""
        wait_until(lambda: self.primary_port() != old_primary_port, timeout, "Sentinel promoted no replica")
        with contextlib.closing(redis.Redis(host="127.0.0.1", port=self.primary_port(), socket_timeout=5)) as promoted:
            wait_until(
                lambda: promoted.info("replication")["role"] == "master",
                timeout,
                "the promoted replica did not become a primary",
            )

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
