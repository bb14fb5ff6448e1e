"""A real coturn (Debian's ``turnserver``) for the tests: TURN REST credentials (``use-auth-secret``), a TCP/UDP
listener and a TLS listener with a certificate from a CA this harness makes, on the address it is given.

    with TurnServer(tmp_path, "127.0.0.1") as turn:
        username, credential = turn_rest_credentials(turn.secret, ttl=600)
        servers = [{"urls": [turn.turn_url("tcp"), turn.turns_url()], "username": username, "credential": credential}]

Clients that check the TLS certificate trust ``turn.tls.ca`` (a PEM file); the server's certificate names
``tls_names`` (by default the listening address, as an IP SAN). Every file, the log included, lives in ``workdir``;
``stop`` (or leaving the ``with``) ends the process.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .net import stop_process

TURNSERVER = "turnserver"
REALM = "webcall.test"


@dataclass(frozen=True)
class TlsFiles:
    """A CA certificate and a server certificate it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_certificates(directory: Path, names: Sequence[str], *, prefix: str = "turn") -> TlsFiles:
    """A throwaway CA and a server certificate for ``names`` (IP addresses become IP SANs, others DNS SANs)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"webcall tests CA {secrets.token_hex(4)}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TlsFiles(
        ca=_pem(directory / f"{prefix}-ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        cert=_pem(directory / f"{prefix}-cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
        key=_pem(
            directory / f"{prefix}-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        ),
    )


def free_tcp_udp_port(host: str) -> int:
    """A port on ``host`` that was free for both TCP and UDP a moment ago (coturn's plain listener takes both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free for both TCP and UDP on {host}")


@dataclass
class TurnServer:
    """One coturn listening on ``host``: ``port`` (TURN over UDP and TCP) and ``tls_port`` (TURN over TLS).

    It relays to any address except multicast ones, the test's own loopback and private addresses included
    (``allow-loopback-peers``; coturn denies loopback peers by default). Allocations last as the client asks."""

    workdir: Path
    host: str = "127.0.0.1"
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    tls_names: Sequence[str] = ()
    """What the server certificate names (default: ``host``)."""
    realm: str = REALM
    port: int = 0
    tls_port: int = 0
    tls: TlsFiles | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "turnserver.log"

    @property
    def config(self) -> Path:
        return self.workdir / "turnserver.conf"

    @property
    def ca(self) -> Path:
        """The CA that signed the server certificate (PEM), for clients that check it."""
        assert self.tls is not None, "the server has not started"
        return self.tls.ca

    def turn_url(self, transport: str = "udp") -> str:
        """``turn:HOST:PORT?transport=udp|tcp``."""
        return f"turn:{self.host}:{self.port}?transport={transport}"

    def turns_url(self, host: str | None = None) -> str:
        """``turns:HOST:TLS_PORT?transport=tcp`` (``host`` instead of the address: a name the certificate holds)."""
        return f"turns:{host or self.host}:{self.tls_port}?transport=tcp"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, *, within: float = 10.0) -> TurnServer:
        binary = shutil.which(TURNSERVER) or shutil.which(TURNSERVER, path="/usr/sbin:/usr/bin")
        if binary is None:
            raise RuntimeError("coturn is not installed: apt-get install coturn (.ci/run does it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tls = make_certificates(self.workdir, list(self.tls_names) or [self.host])
        self.port = self.port or free_tcp_udp_port(self.host)
        self.tls_port = self.tls_port or free_tcp_udp_port(self.host)
        lines = [
            f"listening-ip={self.host}",
            f"relay-ip={self.host}",
            f"listening-port={self.port}",
            f"tls-listening-port={self.tls_port}",
            # Only the listeners above: no DTLS, no RFC 5780 alternate ports (port + 1), no telnet CLI.
            "no-dtls",
            "no-rfc5780",
            "no-cli",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            f"realm={self.realm}",
            f"cert={self.tls.cert}",
            f"pkey={self.tls.key}",
            "fingerprint",
            # Peers: the test's own addresses (loopback, the veth it made); never multicast.
            "allow-loopback-peers",
            "no-multicast-peers",
            f"userdb={self.workdir / 'turndb'}",
            f"pidfile={self.workdir / 'turnserver.pid'}",
            f"log-file={self.log}",
            "simple-log",
            "no-stdout-log",
            "verbose",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_listening(within)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, within: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + within
        waiting = [self.port, self.tls_port]
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with socket.create_connection((self.host, waiting[0]), timeout=0.2):
                    waiting.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"turnserver is not listening on {self.host}:{waiting[0]} after {within:g} s:\n"
                        + self.log_text()[-3000:]
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> TurnServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
