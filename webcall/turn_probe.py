"""Allocate a relay on a TURN server, as a browser would, to tell whether its URL and credentials work.

Only the standard library: a TURN Allocate is two request/response exchanges (RFC 8656 §7.2, long-term credentials
of RFC 8489 §9.2). The first request carries no credentials and is answered 401 with the server's REALM and NONCE;
the second carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (HMAC-SHA1 keyed with MD5(username:realm:password))
and is answered with the relayed address. The allocation is then released (a Refresh with LIFETIME 0).

``turn:`` URLs go over UDP (``?transport=tcp``: over TCP), ``turns:`` over TLS on TCP. TLS is checked as a browser
checks it: the certificate must chain to a trusted CA and name the URL's host. The trusted CAs are the system's, or
those of ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (read by OpenSSL), or the ``ssl_context`` given.

Each way it can fail is a :class:`TurnProbeError` with a ``reason`` (one of the ``REASON_*`` names) and a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAGIC_COOKIE = 0x2112A442
ALLOCATE_REQUEST, ALLOCATE_SUCCESS, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
REFRESH_REQUEST = 0x0004
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
REALM, NONCE, XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0016, 0x0019
XOR_MAPPED_ADDRESS, SOFTWARE = 0x0020, 0x8022
UDP_PROTOCOL = 17
DEFAULT_PORTS = {"turn": 3478, "turns": 5349}
UDP_RETRANSMIT = 0.5
"""RFC 8489 §6.2.1: the first retransmission over UDP after 500 ms, then doubling."""

REASON_URL = "url"
REASON_DNS = "dns"
REASON_REFUSED = "refused"
REASON_UNREACHABLE = "unreachable"
REASON_TIMEOUT = "timeout"
REASON_TLS_NAME = "tls-name"
REASON_TLS_UNTRUSTED = "tls-untrusted"
REASON_TLS = "tls"
REASON_CREDENTIALS = "credentials"
REASON_REFUSED_ALLOCATION = "allocation-refused"
REASON_PROTOCOL = "protocol"

# OpenSSL's X509_V_ERR_* codes for a certificate that does not name the host (hostname, e-mail, IP address).
_NAME_MISMATCH = {62, 63, 64}
_UNTRUSTED = {2, 18, 19, 20, 21, 27, 28}


class TurnProbeError(Exception):
    """The allocation did not succeed; ``reason`` says why (one of the ``REASON_*`` names)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TurnUrl:
    """A ``turn:``/``turns:`` URL taken apart (RFC 7065)."""

    url: str
    scheme: str
    host: str
    port: int
    transport: str
    """``udp`` or ``tcp`` (``turns:`` is TLS over TCP)."""

    @property
    def secure(self) -> bool:
        return self.scheme == "turns"

    @property
    def carried_over(self) -> str:
        return "tls" if self.secure else self.transport


def parse_turn_url(url: str) -> TurnUrl:
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS or not rest:
        raise TurnProbeError(REASON_URL, f"{url!r} is not a turn: or turns: URL")
    address, _, query = rest.partition("?")
    parts = urlsplit("//" + address)
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise TurnProbeError(REASON_URL, f"{url!r} has an invalid port") from None
    if not parts.hostname:
        raise TurnProbeError(REASON_URL, f"{url!r} names no host")
    transport = "tcp" if scheme == "turns" else "udp"
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name.lower() == "transport":
            transport = value.lower()
    if transport not in ("udp", "tcp") or (scheme == "turns" and transport != "tcp"):
        raise TurnProbeError(REASON_URL, f"{url!r}: transport must be udp or tcp (turns: is always tcp)")
    return TurnUrl(url, scheme, parts.hostname, port, transport)


@dataclass(frozen=True)
class Relay:
    """A relay the server allocated (and that was released again)."""

    url: TurnUrl
    relayed: tuple[str, int]
    mapped: tuple[str, int] | None
    seconds: float
    software: str = ""

    @property
    def relayed_address(self) -> str:
        host, port = self.relayed
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- messages ------------------------------------------------------------------------------------------------------
def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _message(kind: int, transaction: bytes, attributes: bytes, key: bytes | None = None) -> bytes:
    if key is not None:
        # MESSAGE-INTEGRITY covers the header (its length counting the MESSAGE-INTEGRITY attribute) and what precedes.
        header = struct.pack("!HHI", kind, len(attributes) + 24, MAGIC_COOKIE) + transaction
        digest = hmac.new(key, header + attributes, hashlib.sha1).digest()
        attributes += _attribute(MESSAGE_INTEGRITY, digest)
    return struct.pack("!HHI", kind, len(attributes), MAGIC_COOKIE) + transaction + attributes


@dataclass(frozen=True)
class Response:
    kind: int
    transaction: bytes
    attributes: dict[int, bytes]

    def error(self) -> tuple[int, str]:
        value = self.attributes.get(ERROR_CODE, b"")
        if len(value) < 4:
            return 0, ""
        return (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", "replace")

    def xor_address(self, kind: int) -> tuple[str, int] | None:
        value = self.attributes.get(kind)
        if value is None or len(value) < 8:
            return None
        family = value[1]
        port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC_COOKIE >> 16)
        if family == 0x01:
            address = struct.unpack("!I", value[4:8])[0] ^ MAGIC_COOKIE
            return str(ipaddress.IPv4Address(address)), port
        if family == 0x02 and len(value) >= 20:
            mask = struct.pack("!I", MAGIC_COOKIE) + self.transaction
            raw = bytes(a ^ b for a, b in zip(value[4:20], mask, strict=True))
            return str(ipaddress.IPv6Address(raw)), port
        return None


def _parse(data: bytes) -> Response:
    if len(data) < 20:
        raise TurnProbeError(REASON_PROTOCOL, "the answer is not a STUN message (too short)")
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    if cookie != MAGIC_COOKIE or kind & 0xC000 or len(data) < 20 + length:
        raise TurnProbeError(REASON_PROTOCOL, "the answer is not a STUN message: is this port a TURN server?")
    attributes: dict[int, bytes] = {}
    offset, end = 20, 20 + length
    while offset + 4 <= end:
        attribute, size = struct.unpack("!HH", data[offset : offset + 4])
        attributes.setdefault(attribute, data[offset + 4 : offset + 4 + size])
        offset += 4 + size + (-size % 4)
    return Response(kind, data[8:20], attributes)


# -- transports ----------------------------------------------------------------------------------------------------
class _Channel:
    """One request/response at a time to the server, over UDP (with retransmissions) or a TCP/TLS stream."""

    async def exchange(self, request: bytes, transaction: bytes, deadline: float) -> Response:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _StreamChannel(_Channel):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes, transaction: bytes, deadline: float) -> Response:
        self.writer.write(request)
        await self.writer.drain()
        while True:
            remaining = deadline - time.monotonic()
            header = await asyncio.wait_for(self.reader.readexactly(20), max(remaining, 0.001))
            length = struct.unpack("!H", header[2:4])[0]
            body = await asyncio.wait_for(self.reader.readexactly(length), max(deadline - time.monotonic(), 0.001))
            response = _parse(header + body)
            if response.transaction == transaction:
                return response

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


class _DatagramChannel(_Channel):
    def __init__(self, transport: asyncio.DatagramTransport, protocol: _DatagramProtocol) -> None:
        self.transport = transport
        self.protocol = protocol

    async def exchange(self, request: bytes, transaction: bytes, deadline: float) -> Response:
        wait = UDP_RETRANSMIT
        while True:
            self.transport.sendto(request)
            resend = min(time.monotonic() + wait, deadline)
            wait *= 2
            while (remaining := resend - time.monotonic()) > 0:
                try:
                    item = await asyncio.wait_for(self.protocol.queue.get(), remaining)
                except TimeoutError:
                    break
                if isinstance(item, Exception):
                    raise item
                with contextlib.suppress(TurnProbeError):
                    response = _parse(item)
                    if response.transaction == transaction:
                        return response
            if time.monotonic() >= deadline:
                raise TimeoutError

    async def close(self) -> None:
        self.transport.close()


async def _open(url: TurnUrl, deadline: float, ssl_context: ssl.SSLContext | None) -> _Channel:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(
                url.host, url.port, type=socket.SOCK_DGRAM if url.transport == "udp" else socket.SOCK_STREAM
            ),
            max(deadline - time.monotonic(), 0.001),
        )
    except socket.gaierror as err:
        raise TurnProbeError(REASON_DNS, f"{url.host} does not resolve ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    ip, port = str(address[0]), int(address[1])
    remaining = max(deadline - time.monotonic(), 0.001)
    if url.transport == "udp":
        transport, protocol = await loop.create_datagram_endpoint(
            _DatagramProtocol, remote_addr=(ip, port), family=family
        )
        return _DatagramChannel(transport, protocol)
    context = None
    if url.secure:
        context = ssl_context or ssl.create_default_context()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            ip,
            port,
            ssl=context,
            server_hostname=url.host if context is not None else None,
            family=family,
        ),
        remaining,
    )
    return _StreamChannel(reader, writer)


def _tls_error(url: TurnUrl, err: ssl.SSLCertVerificationError) -> TurnProbeError:
    code = err.verify_code
    message = err.verify_message or str(err)
    if code in _NAME_MISMATCH:
        return TurnProbeError(REASON_TLS_NAME, f"the TLS certificate does not name {url.host} ({message})")
    if code in _UNTRUSTED:
        return TurnProbeError(REASON_TLS_UNTRUSTED, f"the TLS certificate is not from a trusted CA ({message})")
    return TurnProbeError(REASON_TLS, f"the TLS certificate was refused ({message})")


# -- the allocation ------------------------------------------------------------------------------------------------
async def allocate(
    url: str, username: str, password: str, *, within: float = 5.0, ssl_context: ssl.SSLContext | None = None
) -> Relay:
    """Allocate a relay on the TURN server of ``url`` with these credentials, then release it. Raises
    :class:`TurnProbeError` when it cannot be done, within ``within`` seconds in all."""
    turn = parse_turn_url(url)
    started = time.monotonic()
    deadline = started + within
    try:
        channel = await _open(turn, deadline, ssl_context)
    except TurnProbeError:
        raise
    except ssl.SSLCertVerificationError as err:
        raise _tls_error(turn, err) from None
    except ssl.SSLError as err:
        raise TurnProbeError(REASON_TLS, f"the TLS handshake failed ({err.reason or err}): is this port TLS?") from None
    except ConnectionRefusedError:
        raise TurnProbeError(REASON_REFUSED, f"{turn.host}:{turn.port} refused the connection (TCP)") from None
    except TimeoutError:
        raise TurnProbeError(REASON_TIMEOUT, f"no connection to {turn.host}:{turn.port} within {within:g} s") from None
    except OSError as err:
        raise TurnProbeError(
            REASON_UNREACHABLE, f"{turn.host}:{turn.port} cannot be reached ({err.strerror or err})"
        ) from None
    try:
        return await _allocate(channel, turn, username, password, started, deadline)
    except TurnProbeError:
        raise
    except ConnectionRefusedError:
        # Over UDP: an ICMP port unreachable came back, nothing listens on that port.
        raise TurnProbeError(REASON_REFUSED, f"nothing listens on {turn.host}:{turn.port} (UDP)") from None
    except (TimeoutError, asyncio.IncompleteReadError) as err:
        if isinstance(err, asyncio.IncompleteReadError):
            raise TurnProbeError(REASON_PROTOCOL, "the server closed the connection without answering") from None
        raise TurnProbeError(
            REASON_TIMEOUT, f"{turn.host}:{turn.port} did not answer over {turn.carried_over} within {within:g} s"
        ) from None
    except OSError as err:
        raise TurnProbeError(
            REASON_UNREACHABLE, f"{turn.host}:{turn.port} cannot be reached ({err.strerror or err})"
        ) from None
    finally:
        await channel.close()


async def _allocate(
    channel: _Channel, turn: TurnUrl, username: str, password: str, started: float, deadline: float
) -> Relay:
    transport = _attribute(REQUESTED_TRANSPORT, bytes([UDP_PROTOCOL, 0, 0, 0]))
    transaction = os.urandom(12)
    response = await channel.exchange(_message(ALLOCATE_REQUEST, transaction, transport), transaction, deadline)
    sent_credentials = False
    for _ in range(3):
        if response.kind == ALLOCATE_SUCCESS:
            break  # a server that asks no credentials
        if response.kind != ALLOCATE_ERROR:
            raise TurnProbeError(REASON_PROTOCOL, f"unexpected answer (message type {response.kind:#06x})")
        code, text = response.error()
        if code == 401 and sent_credentials:
            raise TurnProbeError(REASON_CREDENTIALS, f"the server refused the credentials (401 {text})".strip())
        if code not in (401, 438):  # 438: Stale Nonce, try again with the new one
            raise TurnProbeError(REASON_REFUSED_ALLOCATION, f"the server refused the allocation ({code} {text})")
        realm = response.attributes.get(REALM)
        nonce = response.attributes.get(NONCE)
        if realm is None or nonce is None:
            raise TurnProbeError(REASON_PROTOCOL, f"{code} without REALM and NONCE: not long-term credentials")
        key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
        credentials = _attribute(USERNAME, username.encode()) + _attribute(REALM, realm) + _attribute(NONCE, nonce)
        transaction = os.urandom(12)
        request = _message(ALLOCATE_REQUEST, transaction, transport + credentials, key)
        response = await channel.exchange(request, transaction, deadline)
        sent_credentials = True
    else:
        raise TurnProbeError(REASON_PROTOCOL, "the server kept asking for a new nonce")
    relayed = response.xor_address(XOR_RELAYED_ADDRESS)
    if relayed is None:
        raise TurnProbeError(REASON_PROTOCOL, "the allocation succeeded without a relayed address")
    seconds = time.monotonic() - started
    if sent_credentials:
        # Release the relay at once (RFC 8656 §7.3: a Refresh with LIFETIME 0); a failure here changes nothing.
        transaction = os.urandom(12)
        release = _attribute(LIFETIME, struct.pack("!I", 0)) + credentials
        with contextlib.suppress(Exception):
            await channel.exchange(
                _message(REFRESH_REQUEST, transaction, release, key), transaction, min(deadline, time.monotonic() + 1)
            )
    software = response.attributes.get(SOFTWARE, b"").decode("utf-8", "replace")
    return Relay(turn, relayed, response.xor_address(XOR_MAPPED_ADDRESS), seconds, software)
