"""Is the browser still there? What a media server judges by: anything at all arriving on the call's transport.

A caller who sends no audio (a visitor without a microphone: a ``recvonly`` transceiver, or a ``sendrecv`` one
without a track) is still heard from while the connection lives: the browser answers and sends ICE consent checks
(RFC 7675, every few seconds), RTCP receiver reports for the agent's audio, and DTLS/SCTP for the data channel.
Only when none of that arrives has the network gone away. aiortc's own consent checks take ~30 s to give up, so the
session watches the packets itself: :class:`InboundWatch` records when the last datagram arrived from the browser on
each ICE connection of a peer connection.
"""

from __future__ import annotations

import time
from typing import Any

from aioice import Connection
from aiortc import RTCPeerConnection

__all__ = ["InboundWatch", "ice_connections"]


class InboundWatch:
    """The time (``time.monotonic()``) of the last datagram of any kind from the remote peer of ``pc``."""

    def __init__(self) -> None:
        self.heard_at: float | None = None
        self._watched: set[int] = set()

    def attach(self, pc: RTCPeerConnection) -> int:
        """Watch every ICE connection ``pc`` has now (call after the remote description); returns how many."""
        for connection in ice_connections(pc):
            if id(connection) in self._watched:
                continue
            self._watched.add(id(connection))
            self._wrap(connection)
        return len(self._watched)

    def silent_for(self, now: float) -> float | None:
        """Seconds since the browser was last heard from (None: never)."""
        return None if self.heard_at is None else now - self.heard_at

    def _heard(self) -> None:
        self.heard_at = time.monotonic()

    def _wrap(self, connection: Connection) -> None:
        # aioice hands non-STUN datagrams (DTLS, SRTP, SRTCP) to ``data_received`` and the browser's STUN checks
        # to ``request_received``; an instance attribute shadows each method, so every arrival is seen first.
        data_received = connection.data_received
        request_received = connection.request_received

        def on_data(*args: Any, **kwargs: Any) -> None:
            self._heard()
            data_received(*args, **kwargs)

        def on_request(*args: Any, **kwargs: Any) -> None:
            self._heard()
            request_received(*args, **kwargs)

        vars(connection).update(data_received=on_data, request_received=on_request)


def ice_connections(pc: RTCPeerConnection) -> list[Connection]:
    """The ICE connections under ``pc``'s transports (one when bundled), from aiortc's private ``_connection``."""
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    connections: dict[int, Connection] = {}
    for dtls in transports:
        if dtls is not None:
            connection = dtls.transport._connection
            connections[id(connection)] = connection
    return list(connections.values())
