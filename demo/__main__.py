"""``python -m demo``: run the demo site (on the embedded emulator unless DIALNEXA_API_KEY is set)."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from .app import create_demo_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description="Run the webcall demo site.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    app = create_demo_app()
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host

    def announce(message: str) -> None:
        if message.startswith("======== Running"):
            print(f"webcall demo: open http://{shown}:{args.port}/  (Ctrl-C stops it)", flush=True)

    try:
        web.run_app(app, host=args.host, port=args.port, print=announce, shutdown_timeout=3)
    except OSError as err:
        sys.exit(f"webcall demo: cannot listen on {args.host}:{args.port} ({err.strerror}); try --port 8081")
    print("webcall demo: stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
