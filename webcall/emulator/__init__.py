"""A local DialNexa: the REST API (faithful where DialNexa is documented, DESIGN.md §4 where not), fault injection,
control routes and, when the ``emulator`` extra is installed, WHIP media with a simulated agent.

Public API: :class:`EmulatorConfig`, :func:`create_emulator_app`, :class:`EmulatorServer`, :func:`default_agents`;
:mod:`webcall.emulator.testing` drives a running emulator's control routes from a test suite.
"""

from webcall.emulator.app import create_emulator_app
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.server import EmulatorServer
from webcall.emulator.state import default_agents

__all__ = ["EmulatorConfig", "EmulatorServer", "create_emulator_app", "default_agents"]
