"""Command line: ``python -m webcall register-webhook`` makes sure DialNexa's webhook points at this site.

It reads the same environment as the plugin (``DIALNEXA_API_KEY``, ``WEBCALL_PUBLIC_URL``, ``WEBCALL_WEBHOOK_SECRETS``,
``WEBCALL_AGENTS``…) and mounts nothing: it finds, creates or updates the one subscription and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from . import ConfigError, DialNexaError, WebCallConfig, setup


async def register_webhook(config: WebCallConfig, prefix: str) -> str:
    host = web.Application()
    handle = setup(host, config, prefix=prefix)
    runner = web.AppRunner(host)
    await runner.setup()  # opens the DialNexa client and the store
    try:
        return await handle.ensure_webhook()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webcall", description="webcall maintenance commands")
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register-webhook", help="point exactly one DialNexa webhook at this site")
    register.add_argument("--prefix", default="/webcall", help="where the plugin is mounted (default /webcall)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = WebCallConfig.from_env()
        if config.uses_emulator:
            sys.exit("webcall: DIALNEXA_API_KEY is not set; there is no DialNexa account to register with.")
        hook_id = asyncio.run(register_webhook(config, args.prefix))
    except (ConfigError, DialNexaError) as err:
        sys.exit(f"webcall: {err}")
    print(f"webcall: DialNexa webhook {hook_id} is registered")


if __name__ == "__main__":
    main()
