"""Hostile networks for the visitor's browser: a network namespace the test makes, joined to this machine by a veth
pair, with nftables inside the namespace dropping UDP (all of it, or a random share), and a real coturn.

::

    root namespace                                    visitor namespace (wcv<pid>x<n>)
    test process, site, emulator, coturn              the browser (Chromium or Firefox), nftables
    wcv<pid>h<n>  10.213.N.1/30  <------- veth ------->  wcv<pid>n<n>  10.213.N.2/30, lo

The test's servers listen on ``network.host_address`` (the root end of the veth), so the browser reaches them over
the veth and through the namespace's firewall; nothing leaves the machine. ``await network.drop_udp()``,
``await network.drop_share(30)`` and ``await network.open()`` change the firewall at any time (one atomic ``nft``
transaction each).

Browsers run inside the namespace by ``ip netns exec``:

* Chromium: Playwright starts it over a pipe (``--remote-debugging-pipe``), which ``ip netns exec`` passes on, so an
  ``executable_path`` wrapper script is enough.
* Firefox: its WebDriver BiDi server listens on the namespace's loopback only (the Remote Agent binds ``localhost``
  whatever it is told). This process reaches it through a forwarder on its own loopback whose outgoing sockets are
  made inside the namespace (``setns`` on one thread for the ``socket()`` call), so the BiDi traffic never crosses the
  veth or the firewall.

TLS to coturn (``turns:``) is checked by both engines against the certificate's names, so each browser is given the
harness CA in its own NSS certificate database, and only for that browser: Firefox in its fresh profile
(``certutil -A -t C,,``, before it starts), Chromium in a fresh ``$HOME/.pki/nssdb`` set by its wrapper script.
Nothing is relaxed for other certificates.

Namespaces, links and forwarders are removed at teardown, also when the test fails; leftovers of crashed runs (their
pid in the name is no longer alive) are removed before a new network is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import itertools
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio
from playwright.async_api import Playwright

from ..turn_server import TurnServer
from .bidi import Firefox, firefox_prefs, launch_firefox
from .conftest import AnyBrowser
from .shared import CHROMIUM, CHROMIUM_ARGS

PREFIX = "wcv"
"""Names of namespaces and links made here: ``wcv<pid>x<n>`` (namespace), ``wcv<pid>h<n>`` / ``wcv<pid>n<n>`` (the
veth's root and namespace ends); at most 15 characters, the kernel's limit for a link name."""
SUBNET = "10.213.{}.{}"
HOST_NAME = "host.visitor.test"
"""The name of the root end of the veth inside the namespace (``.test``: a name reserved for testing, RFC 2606)."""
NETNS_ETC = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
NFT_TABLE = "visitor"
T = TypeVar("T")

_serial = itertools.count()


def _run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=input, capture_output=True, text=True, check=check, timeout=30)


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(f"{binary} is missing: apt-get install {package} (.ci/run does it)")
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OURS = re.compile(rf"^{PREFIX}(\d+)[xhn]\d+$")


def clean_stale() -> None:
    """Remove namespaces and links of ours left by runs whose process is gone (a crashed or killed run)."""
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split(" ", 1)[0]
        if (match := _OURS.match(name)) and not _alive(int(match[1])):
            # Browsers a killed run left inside keep the namespace alive: end them (they are ours, by its name).
            for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _run("ip", "netns", "delete", name, check=False)
    for directory in NETNS_ETC.glob(f"{PREFIX}*") if NETNS_ETC.is_dir() else ():
        if (match := _OURS.match(directory.name)) and not _alive(int(match[1])):
            shutil.rmtree(directory, ignore_errors=True)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(": ")
        name = parts[1].split("@", 1)[0] if len(parts) > 1 else ""
        if (match := _OURS.match(name)) and not _alive(int(match[1])):
            _run("ip", "link", "delete", name, check=False)


def _used_subnets() -> set[int]:
    used = set()
    for line in _run("ip", "-o", "-4", "addr", "show", check=False).stdout.splitlines():
        if match := re.search(r"inet 10\.213\.(\d+)\.", line):
            used.add(int(match[1]))
    return used


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _in_namespace(path: str, function: Callable[[], T]) -> T:
    """``function()`` on a thread of its own that has joined the network namespace at ``path``: sockets it makes
    belong to that namespace for good. The thread ends afterwards, so no thread of this process stays in it."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with open(path, "rb") as target:
                _setns(target.fileno())
            result.append(function())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, name="in-visitor-namespace")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


@dataclass
class VisitorNetwork:
    """A network namespace for the visitor's browser, joined to the root namespace by a veth pair."""

    name: str
    host_link: str
    visitor_link: str
    host_address: str
    visitor_address: str
    mode: str = "open"
    forwarders: list[asyncio.Server] = field(default_factory=list)
    pipes: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @property
    def etc(self) -> Path:
        return NETNS_ETC / self.name

    @property
    def host_name(self) -> str:
        """The root end's name inside the namespace (for ``turns:`` URLs: Firefox ignores a TURN/TLS server given by
        IP address); it resolves to ``host_address`` there, and nowhere else."""
        return HOST_NAME

    @property
    def command_prefix(self) -> tuple[str, ...]:
        """What runs a command inside the namespace: ``ip netns exec NAME``."""
        return ("ip", "netns", "exec", self.name)

    # -- making and removing ------------------------------------------------------------------------------------
    @classmethod
    def create(cls) -> VisitorNetwork:
        _require("ip", "iproute2")
        _require("nft", "nftables")
        clean_stale()
        serial = next(_serial)
        used = _used_subnets()
        subnet = next((n for n in range(256) if n not in used), None)
        if subnet is None:
            raise RuntimeError("every 10.213.N.0/30 is taken")
        tag = f"{PREFIX}{os.getpid()}"
        network = cls(
            name=f"{tag}x{serial}",
            host_link=f"{tag}h{serial}",
            visitor_link=f"{tag}n{serial}",
            host_address=SUBNET.format(subnet, 1),
            visitor_address=SUBNET.format(subnet, 2),
        )
        try:
            network._build()
        except BaseException:
            network._remove()
            raise
        return network

    def _build(self) -> None:
        ns = ("ip", "-n", self.name)
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.visitor_link)
        _run("ip", "link", "set", self.visitor_link, "netns", self.name)
        _run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")
        _run(*ns, "addr", "add", f"{self.visitor_address}/30", "dev", self.visitor_link)
        _run(*ns, "link", "set", self.visitor_link, "up")
        _run(*ns, "link", "set", "lo", "up")
        # A default route through the root end, as a visitor's machine has: browsers find their "default" address
        # from it (Firefox offers no host candidate without one before the microphone is allowed). The guard chain
        # below drops whatever would leave for anywhere but the veth's /30, so nothing reaches past the root end.
        # `ip netns exec` mounts /etc/netns/NAME/* over /etc/*: the root end has a name (hosts), and DNS asks the
        # namespace's own loopback, where nothing answers (resolv.conf).
        _run(*ns, "route", "add", "default", "via", self.host_address)
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{self.host_address}\t{HOST_NAME}\n"
        )
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self._nft(
            f"table inet {NFT_TABLE} {{\n"
            "  chain input { type filter hook input priority 0; policy accept; }\n"
            "  chain output { type filter hook output priority 0; policy accept; }\n"
            "  chain guard { type filter hook output priority -10; policy accept;\n"
            f'    oifname != "lo" ip daddr != {ipaddress.ip_interface(self.host_address + "/30").network} drop\n'
            '    oifname != "lo" meta nfproto ipv6 drop\n'
            "  }\n"
            "}\n"
        )

    def _remove(self) -> None:
        _run("ip", "netns", "delete", self.name, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)
        # Deleting the namespace deletes the veth pair, unless something still holds the namespace.
        _run("ip", "link", "delete", self.host_link, check=False)

    async def close(self) -> None:
        for server in self.forwarders:
            server.close()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        for server in self.forwarders:
            await server.wait_closed()
        await asyncio.to_thread(self._remove)

    # -- the firewall -------------------------------------------------------------------------------------------
    def _nft(self, script: str) -> None:
        done = _run(*self.command_prefix, "nft", "-f", "-", input=script, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nft in {self.name} failed: {done.stderr.strip()}\n{script}")

    async def _set(self, mode: str, rule: str | None) -> None:
        script = f"flush chain inet {NFT_TABLE} input\nflush chain inet {NFT_TABLE} output\n"
        if rule is not None:
            script += f"add rule inet {NFT_TABLE} input {rule}\nadd rule inet {NFT_TABLE} output {rule}\n"
        await asyncio.to_thread(self._nft, script)
        self.mode = mode

    async def open(self) -> None:
        """Let everything through."""
        await self._set("open", None)

    async def drop_udp(self) -> None:
        """Drop every UDP packet in and out of the namespace (loopback included): only TCP works."""
        await self._set("drop-udp", "meta l4proto udp drop")

    async def drop_share(self, percent: int) -> None:
        """Drop a random ``percent`` of UDP packets, each direction on its own; TCP goes through."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be 0-100, not {percent}")
        await self._set(f"drop-udp-{percent}%", f"meta l4proto udp numgen random mod 100 < {percent} drop")

    def ruleset(self) -> str:
        return _run(*self.command_prefix, "nft", "list", "ruleset").stdout

    # -- reaching into the namespace ----------------------------------------------------------------------------
    def socket_inside(self, kind: socket.SocketKind = socket.SOCK_DGRAM) -> socket.socket:
        """An IPv4 socket that belongs to the namespace (as if a program in it had made it)."""
        return _in_namespace(self.path, lambda: socket.socket(socket.AF_INET, kind))

    def connect_inside(self, host: str, port: int) -> socket.socket:
        """A TCP connection from inside the namespace to ``host:port`` (its loopback, say)."""

        def connect() -> socket.socket:
            return socket.create_connection((host, port), timeout=10)

        sock = _in_namespace(self.path, connect)
        sock.setblocking(False)
        return sock

    async def forward(self, host: str, port: int) -> tuple[str, int]:
        """An address on this process's loopback (a port of its own on 127.0.0.1) whose connections go on to
        ``host:port`` inside the namespace."""

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                sock = await asyncio.to_thread(self.connect_inside, host, port)
                inner_reader, inner_writer = await asyncio.open_connection(sock=sock)
            except OSError:
                writer.close()
                return
            self._pipe_both(reader, writer, inner_reader, inner_writer)

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.forwarders.append(server)
        address, own_port = server.sockets[0].getsockname()[:2]
        return address, own_port

    async def expose(self, port: int, *, host: str = "127.0.0.1") -> None:
        """Make this process's ``host:port`` (loopback) reachable inside the namespace at ``127.0.0.1:port``: for a
        site the browser must see at a secure origin (``http://127.0.0.1:PORT``: browsers give the microphone to
        no other plain-http origin). The listener belongs to the namespace; each connection goes on to ``host:port``
        here (so page loads never cross the veth or its firewall; the call's media still does)."""
        listener = self.socket_inside(socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                inner_reader, inner_writer = await asyncio.open_connection(host, port)
            except OSError:
                writer.close()
                return
            self._pipe_both(reader, writer, inner_reader, inner_writer)

        self.forwarders.append(await asyncio.start_server(accepted, sock=listener))

    def _pipe_both(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        inner_reader: asyncio.StreamReader,
        inner_writer: asyncio.StreamWriter,
    ) -> None:
        for task in (
            asyncio.ensure_future(_pipe(reader, inner_writer)),
            asyncio.ensure_future(_pipe(inner_reader, writer)),
        ):
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def reach(self, url: str) -> str:
        """``url`` (e.g. Firefox's ``ws://127.0.0.1:PORT``, on the namespace's loopback) as this process reaches it
        (Firefox's Remote Agent refuses a ``Host`` header naming another address: the client sends the one Firefox
        announced)."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        address, port = await self.forward(parts.hostname, parts.port)
        return urlunsplit(parts._replace(netloc=f"{address}:{port}"))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


# -- trusting the harness CA -----------------------------------------------------------------------------------
def add_ca_to_nssdb(database: Path, ca: Path, nickname: str = "webcall tests CA") -> None:
    """Add ``ca`` (PEM) to the NSS database in ``database`` (made if missing) as trusted for TLS servers only
    (``-t C,,``: a CA for SSL, none for e-mail or code signing)."""
    certutil = _require("certutil", "libnss3-tools")
    database.mkdir(parents=True, exist_ok=True)
    if not (database / "cert9.db").exists():
        _run(certutil, "-N", "-d", f"sql:{database}", "--empty-password")
    _run(certutil, "-A", "-d", f"sql:{database}", "-n", nickname, "-t", "C,,", "-i", str(ca))


def chromium_wrapper(network: VisitorNetwork, directory: Path, *, ca: Path | None = None) -> Path:
    """An executable that runs Debian's Chromium inside ``network``: Playwright's ``executable_path``. With ``ca``,
    Chromium's ``$HOME`` is a fresh directory whose NSS database (``~/.pki/nssdb``, where Chromium on Linux reads
    locally trusted roots) trusts that CA."""
    directory.mkdir(parents=True, exist_ok=True)
    home = directory / "home"
    home.mkdir(exist_ok=True)
    if ca is not None:
        add_ca_to_nssdb(home / ".pki" / "nssdb", ca)
    script = directory / "chromium-in-namespace"
    script.write_text(f"#!/bin/sh\nexport HOME='{home}'\nexec {' '.join(network.command_prefix)} {CHROMIUM} \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def launch_visitor_chromium(
    driver: Playwright, network: VisitorNetwork, directory: Path, *, microphone: Path | None, ca: Path | None = None
) -> AnyBrowser:
    """Chromium in ``network`` with the session harness's flags (fake microphone playing ``microphone``)."""
    wrapper = await asyncio.to_thread(chromium_wrapper, network, directory, ca=ca)
    args = list(CHROMIUM_ARGS)
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}")
    return await driver.chromium.launch(executable_path=wrapper, args=args)


async def launch_visitor_firefox(
    network: VisitorNetwork, *, ca: Path | None = None, prefs: dict[str, Any] | None = None
) -> Firefox:
    """Firefox in ``network`` (microphone allowed, a fake tone), its profile's NSS database trusting ``ca``."""

    async def prepare(profile: Path) -> None:
        if ca is not None:
            await asyncio.to_thread(add_ca_to_nssdb, profile, ca)

    return await launch_firefox(
        prefs or firefox_prefs(microphone=True),
        command_prefix=network.command_prefix,
        prepare_profile=prepare,
        reach=network.reach,
    )


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="session")
async def visitor_network() -> AsyncIterator[VisitorNetwork]:
    """A fresh visitor namespace, open; removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    network = await asyncio.to_thread(VisitorNetwork.create)
    try:
        yield network
    finally:
        await network.close()


@pytest.fixture
def turn(visitor_network: VisitorNetwork, tmp_path: Path) -> Iterator[TurnServer]:
    """coturn on the root end of the visitor's veth (UDP/TCP ``turn.port``, TLS ``turn.tls_port``)."""
    names = (visitor_network.host_name, visitor_network.host_address)
    with TurnServer(tmp_path / "coturn", visitor_network.host_address, tls_names=names) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def visitor_browser(
    engine: str,
    playwright: Playwright,
    silence_wav: Path,
    visitor_network: VisitorNetwork,
    turn: TurnServer,
    tmp_path: Path,
) -> AsyncIterator[AnyBrowser]:
    """A browser of the test's engine inside ``visitor_network``, microphone allowed, trusting ``turn``'s CA (and
    only for this browser); closed after the test, before the network goes."""
    browser: AnyBrowser
    if engine == "firefox":
        browser = await launch_visitor_firefox(visitor_network, ca=turn.ca)
    else:
        browser = await launch_visitor_chromium(
            playwright, visitor_network, tmp_path / "chromium", microphone=silence_wav, ca=turn.ca
        )
    try:
        yield browser
    finally:
        await browser.close()
