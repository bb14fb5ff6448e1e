"""The simulated agent's conversation: welcome, then one script line per caller turn, then the closing line."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from webcall.emulator.state import render

if TYPE_CHECKING:
    from .session import MediaSession

__all__ = ["MAX_DURATION_LINE", "UNINTELLIGIBLE", "run_agent", "welcome_line"]

MAX_DURATION_LINE = "We have reached the time limit for this call. Goodbye!"
UNINTELLIGIBLE = "(unintelligible)"


def welcome_line(session: MediaSession) -> str:
    """What the agent says first on this call (its version's welcome, placeholders filled); "" for none."""
    call, agent = session.call, session.agent
    version = agent.published_version(call.agent_version_number)
    welcome = (version.welcome_message if version is not None else "") or agent.welcome_message
    return render(welcome, session.state.variables_for(call)) if welcome else ""


async def run_agent(session: MediaSession, welcome: str) -> None:
    """Run the conversation on a connected session, opening with ``welcome`` (:func:`welcome_line`; "" for none),
    until the agent hangs up (``agent_disconnected``)."""
    state, call, agent = session.state, session.call, session.agent
    variables = state.variables_for(call)
    if welcome:
        await session.say(welcome)
    session.set_agent_state("listening")
    script = iter(agent.script)
    while True:
        turns = await session.next_turns()
        session.set_agent_state("thinking")
        heard = await session.transcribe(turns) or UNINTELLIGIBLE
        session.log(logging.DEBUG, "caller said: %s", heard)
        session.send({"type": "transcript", "role": "user", "text": heard, "final": True})
        state.add_transcript(call, "user", heard)
        line = next(script, None)
        if line is None:
            await session.say(render(agent.closing, variables))
            await session.hang_up("agent_disconnected")
            return
        await session.say(render(line, variables))
        session.set_agent_state("listening")
