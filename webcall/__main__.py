"""Command line, reading the same environment as the plugin (``DIALNEXA_API_KEY``, ``WEBCALL_PUBLIC_URL``,
``WEBCALL_WEBHOOK_SECRETS``, ``WEBCALL_AGENTS``…):

* ``python -m webcall register-webhook`` makes sure DialNexa's webhook points at this site (finds, creates or updates
  the one subscription) and exits;
* ``python -m webcall doctor [--json] [--place-test-call]`` checks the configuration against the DialNexa account,
  one line per check with the fix, and exits 0 only when nothing failed;
* ``python -m webcall serve [--host] [--port] [--prefix]`` runs the plugin as a standalone service (on the embedded
  emulator when no DialNexa key is set) until interrupted.

``--prefix`` defaults to ``WEBCALL_PREFIX`` (else ``/webcall``) for every command, so the doctor and
``register-webhook`` look at the webhook URL the service registers. ``serve`` and ``register-webhook`` refuse to go on
with what cannot work (a key DialNexa refuses, a DialNexa that cannot be reached, a webhook it will not register) in
one sentence, exit status 1.
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
from .app import handle_of
from .doctor import FAILED, Check, diagnose, failed
from .keys import RUNTIME
from .service import configure_logging, create_runner, create_service, prefix_from_env, run_service


def refuse_what_cannot_work(host: web.Application) -> None:
    """Make the plugin mounted in ``host`` fail its start-up (one sentence) where DialNexa refuses the key, cannot be
    reached, or will not register the webhook, instead of logging it and running on."""
    handle_of(host).app[RUNTIME].refuse_unworkable = True


async def register_webhook(config: WebCallConfig, prefix: str) -> str:
    """Start the plugin as the site does, which checks the key, registers the webhook subscription and checks each
    agent's binding to it; the subscription's id."""
    if not config.public_url:
        raise ConfigError(
            "WEBCALL_PUBLIC_URL is not set, so there is no address for DialNexa to send webhooks to: set it to the "
            "site's public https origin."
        )
    if not config.webhook_secrets:
        raise ConfigError(
            "WEBCALL_WEBHOOK_SECRETS is not set: set it to a long random secret "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))'), the same on every worker."
        )
    host = web.Application()
    setup(host, config, prefix=prefix)
    refuse_what_cannot_work(host)
    runner = web.AppRunner(host)
    await runner.setup()  # the key, the agents, the subscription and each agent's binding, as the site starts
    try:
        hook_id = handle_of(host).app[RUNTIME].subscription.id
        if hook_id is None:
            raise ConfigError("the webhook was not registered; run python -m webcall doctor to see why.")
        return hook_id
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
    configure_logging()
    try:
        config = WebCallConfig.from_env()
        service = create_service(config, prefix=prefix)
        refuse_what_cannot_work(service)
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
    prefix = prefix_from_env()
    where = f"where the plugin is mounted (default {prefix}: $WEBCALL_PREFIX, else /webcall)"
    register.add_argument("--prefix", default=prefix, help=where)
    check = commands.add_parser("doctor", help="check the configuration against the DialNexa account")
    check.add_argument("--prefix", default=prefix, help=where)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--place-test-call", action="store_true", help="create (and end) one real, billable web call")
    run = commands.add_parser("serve", help="run the plugin as a standalone service")
    run.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="address (default 127.0.0.1, $HOST)")
    run.add_argument("--port", type=int, default=os.environ.get("PORT", "8080"), help="port (default 8080, $PORT)")
    run.add_argument("--prefix", default=prefix, help=where)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.prefix)
        return
    if args.command == "doctor":
        logging.basicConfig(level=logging.ERROR, format="%(message)s")
        sys.exit(doctor(args.prefix, as_json=args.json, place_test_call=args.place_test_call))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("webcall.dialnexa").setLevel(logging.WARNING)  # each retry: the outcome is what matters here
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
