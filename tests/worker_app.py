"""A host site worker process for the scale-out tests: mounts webcall from the environment, records callbacks.

Each host callback writes a "start" and a "done" line (JSON) to ``WORKER_EVENTS``; ``WORKER_SLOW`` seconds pass
between the two, so a test can kill a worker while its callback runs.
"""

from __future__ import annotations

import asyncio
import json
import os

from aiohttp import web

import webcall
from webcall.events import CallEvent


def main() -> None:
    name = os.environ["WORKER_NAME"]
    events_file = os.environ["WORKER_EVENTS"]
    slow = float(os.environ.get("WORKER_SLOW", "0"))
    app = web.Application()
    handle = webcall.setup(app, webcall.WebCallConfig.from_env())

    def write(phase: str, event: CallEvent) -> None:
        with open(events_file, "a") as out:
            out.write(json.dumps({"worker": name, "phase": phase, "id": event.id}) + "\n")

    async def record(event: CallEvent) -> None:
        write("start", event)
        if slow:
            await asyncio.sleep(slow)
        write("done", event)

    handle.on_call_event.append(record)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, shutdown_timeout=2)


if __name__ == "__main__":
    main()
