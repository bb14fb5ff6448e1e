"""``python -m webcall.emulator``: serve a local DialNexa until Ctrl-C.

``--agents FILE`` starts it with the agents a JSON file describes (see :mod:`webcall.emulator.agent_file`) instead of
the demo's three, e.g. an account with an unpublished agent; ``PATCH /v1/agents/{id}`` changes them while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from webcall.emulator.agent_file import AgentFileError, load_agents
from webcall.emulator.config import DEFAULT_API_KEY, DTLS_SETUPS, EmulatorConfig
from webcall.emulator.server import EmulatorServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webcall.emulator",
        description="Serve a local DialNexa emulator (REST API, fault injection and, if installed, WHIP media).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8700, help="port to listen on; 0 picks a free one (default: 8700)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"API key clients must send as 'Authorization: Bearer KEY' (repeatable; default: {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="origin browsers use to reach the emulator, e.g. https://emu.example.test (default: the bound address)",
    )
    parser.add_argument(
        "--max-media-sessions", type=int, default=16, metavar="N", help="simultaneous WHIP sessions (default: 16)"
    )
    parser.add_argument(
        "--media-connect-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="end a WHIP session whose media has not connected by then (default: 30)",
    )
    parser.add_argument(
        "--dtls-setup",
        choices=DTLS_SETUPS,
        default="passive",
        help="the DTLS role of the SDP answers: passive, the browser opens the handshake and the agent's first audio "
        "arrives as the browser connects; active, the emulator opens it, one round trip later (default: passive)",
    )
    parser.add_argument(
        "--agents",
        type=Path,
        metavar="FILE",
        help='start with the agents in this JSON file ({"agents": [...]}, as GET /v1/agents answers) instead of the '
        "demo's sales, support and collections",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


async def _serve(server: EmulatorServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        print(f"DialNexa emulator listening on {server.origin}", flush=True)
        print(f"  base URL: {server.base_url}", flush=True)
        print(f"  API key:  {server.api_key}", flush=True)
        print(f"  agents:   {', '.join(server.state.agents)}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await stop.wait()
    finally:
        await server.stop()
        print("Emulator stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = EmulatorConfig(
            api_keys=frozenset(args.api_keys or [DEFAULT_API_KEY]),
            public_url=args.public_url,
            max_media_sessions=args.max_media_sessions,
            media_connect_timeout=args.media_connect_timeout,
            media_dtls_setup=args.dtls_setup,
        )
        if args.agents is not None:
            config = dataclasses.replace(config, agents=load_agents(args.agents))
    except (AgentFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    server = EmulatorServer(config, host=args.host, port=args.port)
    try:
        asyncio.run(_serve(server))
    except KeyboardInterrupt:
        pass
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
