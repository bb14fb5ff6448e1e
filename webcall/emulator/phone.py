"""Simulated outbound phone calls: no phone rings, but the call runs through DialNexa's states and transcript."""

from __future__ import annotations

import asyncio
import logging

from webcall.emulator.state import Call, EmulatorState, InvalidTransition, render

log = logging.getLogger("webcall.emulator")

CALLER_REPLY = "Hi, yes, this is a good time to talk."


async def simulate_phone_call(state: EmulatorState, call: Call, *, ring_seconds: float, talk_seconds: float) -> None:
    """``created → sent → received → initiated`` after ``ring_seconds``, a short conversation, then ``completed``.

    Stops quietly when the call is ended meanwhile (``POST /v1/calls/{id}/end``).
    """
    agent = state.agents[call.agent_id]
    version = agent.published_version(call.agent_version_number)
    variables = state.variables_for(call)
    try:
        await asyncio.sleep(0)
        if call.ended:
            return
        state.transition(call, "sent")
        await asyncio.sleep(ring_seconds / 2)
        if call.ended:
            return
        state.transition(call, "received")
        await asyncio.sleep(ring_seconds / 2)
        if call.ended:
            return
        state.transition(call, "initiated")
        log.info("emulator: phone call %s to %s answered", call.id, call.to_number)
        welcome = (version.welcome_message if version and version.welcome_message else "") or agent.welcome_message
        state.add_transcript(call, "agent", render(welcome, variables))
        await asyncio.sleep(talk_seconds / 2)
        if call.ended:
            return
        state.add_transcript(call, "user", CALLER_REPLY)
        if agent.script:
            state.add_transcript(call, "agent", render(agent.script[0], variables))
        await asyncio.sleep(talk_seconds / 2)
        if call.ended:
            return
        state.add_transcript(call, "agent", render(agent.closing, variables))
        state.transition(call, "completed", end_reason="agent_disconnected")
        log.info("emulator: phone call %s completed", call.id)
    except InvalidTransition as err:
        log.warning("emulator: phone call %s stopped: %s", call.id, err)
