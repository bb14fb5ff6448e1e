"""ICE checks that do not wait out a lost first try: RFC 8445 §7.3.1.4's triggered check on an In-Progress pair.

The emulator's ICE agent (aioice) starts checking the browser's candidates as soon as it has answered, so its first
check reaches the browser about when the answer does. A browser that has not applied the answer yet does not
respond to it (Chromium, now and then), and aioice retransmits only after its 500 ms RTO; meanwhile the browser's own
checks on that pair arrive and are answered, but aioice starts no triggered check for a pair whose check is still in
progress, so the pair stays unconfirmed and ICE (and DTLS and the agent's first audio after it) waits half a second.

RFC 8445 §7.3.1.4 says what to do instead: when a check arrives on an In-Progress pair, the agent cancels that
transaction's retransmissions and checks the pair again at once. :func:`recheck_on_incoming` adds that to an aioice
connection, once per pair (the browser's later checks need no new transaction).
"""

from __future__ import annotations

from typing import Any

from aioice import Connection
from aioice.ice import CandidatePair

__all__ = ["recheck_on_incoming"]


def recheck_on_incoming(connection: Connection) -> None:
    """Make ``connection`` check a pair again at once when the other side's check arrives on it while its own is
    still waiting for an answer. aioice calls ``check_incoming`` for every authenticated check it answers (including
    those that came before ``connect()``); an instance attribute shadows the method, as :mod:`.liveness` does."""
    check_incoming = connection.check_incoming
    rechecked: set[int] = set()

    def on_check(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        for pair in connection._check_list:
            if (
                pair.state == CandidatePair.State.IN_PROGRESS
                and pair.task is not None
                and pair.protocol is protocol
                and pair.remote_addr == addr
                and id(pair) not in rechecked
            ):
                rechecked.add(id(pair))
                pair.task.cancel()
                pair.task = None
                pair.state = CandidatePair.State.WAITING  # aioice's check_incoming starts a check on a Waiting pair
        check_incoming(message, addr, protocol)

    vars(connection)["check_incoming"] = on_check
