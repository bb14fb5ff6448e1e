"""Command line, reading the same environment as the plugin (``DIALNEXA_API_KEY``, ``WEBCALL_PUBLIC_URL``,
``WEBCALL_WEBHOOK_SECRETS``, ``WEBCALL_AGENTS``…):

* ``python -m webcall register-webhook`` makes sure DialNexa's webhook points at this site (finds, creates or updates
  the one subscription) and exits;
* ``python -m webcall doctor [--json] [--place-test-call]`` checks the configuration against the DialNexa account,
  one line per check with the fix, and exits 0 only when nothing failed;
* ``python -m webcall serve [--host] [--port] [--prefix]`` runs the plugin as a standalone service (on the embedded
  emulator when no DialNexa key is set) until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from aiohttp import web

from . import ConfigError, DialNexaError, WebCallConfig, setup
from .doctor import FAILED, Check, diagnose, failed
from .service import create_runner, create_service, prefix_from_env, run_service


async def register_webhook(config: WebCallConfig, prefix: str) -> str:
    host = web.Application()
    handle = setup(host, config, prefix=prefix)
    runner = web.AppRunner(host)
    await runner.setup()  # opens the DialNexa client and the store
    try:
        return await handle.ensure_webhook()
    finally:
        await runner.cleanup()


def doctor(prefix: str, *, as_json: bool, place_test_call: bool) -> int:
    """Print the doctor's report; the exit status (0: nothing failed)."""
    try:
        config = WebCallConfig.from_env()
    except ConfigError as err:
        checks = [Check("configuration", FAILED, str(err), "correct the environment variable it names")]
    else:
        checks = asyncio.run(diagnose(config, prefix=prefix, place_test_call=place_test_call))
    if as_json:
        print(json.dumps({"ok": not failed(checks), "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print("\n".join(check.line() for check in checks))
    return 1 if failed(checks) else 0


def serve(host: str, port: int, prefix: str) -> None:
    """Run the service until SIGINT/SIGTERM; open calls' streams are closed and the store flushed on the way out."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = WebCallConfig.from_env()
        service = create_service(config, prefix=prefix)
    except ConfigError as err:
        sys.exit(f"webcall: {err}")
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    where = "the embedded DialNexa emulator" if config.uses_emulator else "DialNexa"

    def announce() -> None:
        print(f"webcall: serving on http://{shown}:{port}/ with {where} (Ctrl-C stops it)", flush=True)
        print(f"webcall: the embed snippet is at http://{shown}:{port}{prefix}/snippet", flush=True)

    try:
        asyncio.run(run_service(create_runner(service, config), host, port, ready=announce))
    except KeyboardInterrupt:  # where signals cannot be handled by the loop (Windows)
        pass
    except OSError as err:
        sys.exit(f"webcall: cannot listen on {host}:{port} ({err.strerror}); choose another --port")
    except (ConfigError, DialNexaError) as err:  # raised while starting: the emulator, agents, webhook binding
        sys.exit(f"webcall: {err}")
    print("webcall: stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webcall", description="webcall maintenance commands")
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register-webhook", help="point exactly one DialNexa webhook at this site")
    register.add_argument("--prefix", default="/webcall", help="where the plugin is mounted (default /webcall)")
    check = commands.add_parser("doctor", help="check the configuration against the DialNexa account")
    check.add_argument("--prefix", default="/webcall", help="where the plugin is mounted (default /webcall)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--place-test-call", action="store_true", help="create (and end) one real, billable web call")
    run = commands.add_parser("serve", help="run the plugin as a standalone service")
    run.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="address (default 127.0.0.1, $HOST)")
    run.add_argument("--port", type=int, default=os.environ.get("PORT", "8080"), help="port (default 8080, $PORT)")
    run.add_argument("--prefix", default=prefix_from_env(), help="where the routes live (default /webcall)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.prefix)
        return
    if args.command == "doctor":
        logging.basicConfig(level=logging.ERROR, format="%(message)s")
        sys.exit(doctor(args.prefix, as_json=args.json, place_test_call=args.place_test_call))
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
