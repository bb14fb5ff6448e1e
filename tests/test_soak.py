"""Soak: over a thousand real webhook deliveries from the emulator through the plugin to a host callback, with
duplicated and badly signed deliveries, a callback that fails transiently for some events and permanently for a few.

What the plugin must end up with (DialNexa's semantics: a refused delivery is retried, up to 3 times):

* every event with at least one correctly signed attempt reaches the host callback exactly once (a callback that
  failed transiently succeeds once on its retry); an event whose every attempt was badly signed is lost upstream;
* each 401 answer was a badly signed attempt, and each badly signed attempt was answered 401;
* a duplicated delivery is answered ``"duplicate": true`` and never reaches the callback again;
* the dead-letter list holds exactly the events whose callback fails permanently.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

import pytest

from webcall.bus import callback_name
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.keys import WEBHOOKS_KEY
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import DeliveryRecord, EmulatorControl
from webcall.events import NAMES, CallEvent

from .conftest import MakeHost, runtime

SECRET = "soak-webhook-secret-0123456789"
SEED = 20_26_07_31
CALLBACK_ATTEMPTS = 3
RETRIES = 3
DUPLICATE_PROBABILITY = 0.15
BAD_SIGNATURE_PROBABILITY = 0.08
# (calls, how far each call runs, metadata): the host callback reads metadata["soak"].
BATCHES: list[tuple[int, str, dict[str, str]]] = [
    (400, "call_ended", {}),
    (70, "call_ended", {"soak": "transient"}),
    (10, "call_ended", {"soak": "permanent"}),
    (40, "transfer_completed", {}),
]
# The events a synthetic call emits when it runs up to a given event type.
STAGES = {
    "call_initiated": ("call_initiated",),
    "call_ended": ("call_initiated", "call_ended"),
    "transfer_completed": ("call_initiated", "transfer_completed", "call_ended"),
}


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    """The shared emulator fixture, with fast retries and a fixed fault seed so every run meets the same faults."""
    config = EmulatorConfig(
        api_keys=frozenset({"emu_test:Sup3rSecretEmulatorKey"}),
        webhook_retries=RETRIES,
        webhook_backoff=0.005,
        webhook_seed=SEED,
    )
    async with EmulatorServer(config) as emu:
        yield emu


class Refusals(logging.Handler):
    """Counts the receiver's own "webhook refused" log lines (one per 401 it answered)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("webcall: webhook refused"):
            self.count += 1


def emitted_events(call_id: str, last: str) -> set[str]:
    """The plugin's event ids (``<call id>:<dotted type>``) for one synthetic call."""
    return {f"{call_id}:{NAMES[stage]}" for stage in STAGES[last]}


async def test_soak_every_valid_event_reaches_the_host_exactly_once(
    make_host: MakeHost, emulator: EmulatorServer
) -> None:
    client, handle = await make_host(webhook_secrets=(SECRET,), callback_attempts=CALLBACK_ATTEMPTS)
    runtime(handle).bus.backoff = 0.005
    calls_seen: Counter[str] = Counter()
    succeeded: Counter[str] = Counter()

    async def on_event(event: CallEvent) -> None:
        calls_seen[event.id] += 1
        fate = (event.call.get("metadata") or {}).get("soak")
        if fate == "permanent":
            raise RuntimeError("the CRM rejects this call")
        if fate == "transient" and calls_seen[event.id] == 1:
            raise ConnectionError("the CRM is briefly unreachable")
        succeeded[event.id] += 1

    handle.on_call_event.append(on_event)
    refusals = Refusals()
    logging.getLogger("webcall").addHandler(refusals)
    try:
        await handle.ensure_webhook(str(client.make_url("/webcall/webhooks")))
        emitted: set[str] = set()
        fates: dict[str, str] = {}
        async with EmulatorControl(emulator.origin, timeout=30.0) as control:
            await control.add_webhook_fault(kind="duplicate", probability=DUPLICATE_PROBABILITY, count=0)
            await control.add_webhook_fault(kind="bad_signature", probability=BAD_SIGNATURE_PROBABILITY, count=0)
            for count, last, metadata in BATCHES:
                body = await control.emit(count=count, event_type=last, metadata=metadata)
                assert len(body["call_ids"]) == count
                assert body["events"] == body["deliveries"] == count * len(STAGES[last])
                for call_id in body["call_ids"]:
                    events = emitted_events(call_id, last)
                    emitted |= events
                    fates.update(dict.fromkeys(events, metadata.get("soak", "ok")))
            await emulator.app[WEBHOOKS_KEY].drain(within=60.0)
            await runtime(handle).bus.drain(within=30.0)
            records = await control.deliveries()
    finally:
        logging.getLogger("webcall").removeHandler(refusals)

    # Volume, and the log is complete (the emulator keeps the last 5000 attempts).
    assert len(emitted) == sum(count * len(STAGES[last]) for count, last, _ in BATCHES) == 1080
    assert 1000 <= len(records) < 5000
    by_delivery: dict[str, list[DeliveryRecord]] = defaultdict(list)
    for record in records:
        by_delivery[record["delivery_id"]].append(record)
    assert {f"{r[0]['call_id']}:{NAMES[r[0]['event_type']]}" for r in by_delivery.values()} == emitted
    assert len(by_delivery) == len(emitted)

    # Fault rates: at least 10% of deliveries duplicated, at least 5% with a bad signature.
    duplicated = [r for r in records if r["copy"] == 2]
    badly_signed = [r for r in records if not r["signed_ok"]]
    assert len({r["delivery_id"] for r in duplicated}) >= 0.10 * len(emitted)
    assert len({r["delivery_id"] for r in badly_signed}) >= 0.05 * len(emitted)

    # Each 401 was a badly signed attempt and vice versa; nothing else failed; the receiver logged each refusal.
    assert all(r["status"] in (200, 401) and r["error"] is None for r in records)
    assert all((r["status"] == 401) == (not r["signed_ok"]) for r in records)
    assert sum(r["status"] == 401 for r in records) == len(badly_signed) == refusals.count

    # Per delivery: refused attempts are retried; the first accepted copy is fresh, every later one a duplicate.
    lost: set[str] = set()
    answered_duplicate = 0
    for attempts in by_delivery.values():
        event_id = f"{attempts[0]['call_id']}:{NAMES[attempts[0]['event_type']]}"
        numbers = sorted({r["attempt"] for r in attempts})
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) <= RETRIES + 1
        accepted = [r for r in attempts if r["status"] == 200]
        assert all(r["status"] == 401 for r in attempts if r["attempt"] < numbers[-1])
        if not accepted:
            assert numbers[-1] == RETRIES + 1  # only a delivery whose every attempt was refused gives up
            lost.add(event_id)
            continue
        assert {r["attempt"] for r in accepted} == {numbers[-1]}
        flags = [r["response"] and json.loads(r["response"])["duplicate"] for r in accepted]
        assert flags == [False] + [True] * (len(accepted) - 1)
        answered_duplicate += len(accepted) - 1
    assert answered_duplicate == sum(1 for r in duplicated if r["status"] == 200) > 0
    # With this seed no event draws a bad signature on all four attempts (p**4 is about 4e-5 per event).
    assert lost == set()

    # The host: every event reached the callback; each succeeded exactly once unless it fails permanently.
    assert set(calls_seen) == emitted - lost
    permanent = {e for e, fate in fates.items() if fate == "permanent"}
    transient = {e for e, fate in fates.items() if fate == "transient"}
    assert len(transient) >= 0.10 * len(emitted) and len(permanent) == 20
    assert all(succeeded[e] == 1 for e in emitted - lost - permanent)
    assert all(calls_seen[e] == 2 for e in transient) and all(
        calls_seen[e] == 1 for e in emitted - transient - permanent
    )
    assert all(succeeded[e] == 0 and calls_seen[e] == CALLBACK_ATTEMPTS for e in permanent)

    # Dead letters: exactly the permanently failing events, once each, for this callback.
    letters = await handle.dead_letters()
    assert sorted(letter.event.id for letter in letters) == sorted(permanent)
    assert {(letter.callback, letter.attempts) for letter in letters} == {(callback_name(on_event), CALLBACK_ATTEMPTS)}
    assert await runtime(handle).store.outbox_depth() == 0
