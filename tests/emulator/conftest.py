"""Fixtures of the emulator's own tests: a running emulator with quick phone calls, and an API client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from webcall.emulator import EmulatorConfig, EmulatorServer
from webcall.emulator.testing import EmulatorControl


def make_config(**overrides: Any) -> EmulatorConfig:
    """An emulator configuration whose phone calls ring and talk for a few hundredths of a second."""
    options: dict[str, Any] = {"phone_ring_seconds": 0.02, "phone_talk_seconds": 0.04}
    options.update(overrides)
    return EmulatorConfig(**options)


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(make_config()) as server:
        yield server


@pytest.fixture
async def client(emu: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """The emulator's REST API with its key (uses whichever ``emu`` the test module provides)."""
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with httpx.AsyncClient(base_url=emu.origin, headers=headers, timeout=5.0) as http:
        yield http


@pytest.fixture
def control(emu: EmulatorServer) -> EmulatorControl:
    """The emulator's control routes (faults, records, deliveries) through the typed client host suites use."""
    return emu.control
