"""The README's quickstart, runnable by any Python: its five-line app served on a free port, its curl command.

Used by ``test_readme`` (the test environment's Python) and ``test_minimum_versions`` (a venv holding the lowest
dependency versions ``pyproject.toml`` allows).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .net import free_port

ROOT = Path(__file__).resolve().parents[1]


def block(marker: str) -> str:
    """The code of the README block that follows ``<!-- quickstart:{marker} -->``."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- quickstart:{marker} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no quickstart:{marker} block"
    return match.group(1)


@contextmanager
def serve_quickstart(python: str | Path, workdir: Path, *, startup_timeout: float = 30) -> Iterator[int]:
    """Run the README's Python block as ``app.py`` in ``workdir`` with ``python``; yield its port once it listens.

    The app sees no ``DIALNEXA_*`` or ``WEBCALL_*`` variables, so it runs on the embedded emulator, as the README
    says. If it exits before listening, the assertion carries its output.
    """
    port = free_port()
    script = workdir / "app.py"
    script.write_text(block("python"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))}
    env["PORT"] = str(port)
    proc = subprocess.Popen(
        [str(python), str(script)], env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"quickstart exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"quickstart did not start listening within {startup_timeout:g} s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def mint_with_curl(port: int) -> dict[str, Any]:
    """Run the README's curl command against the quickstart on ``port``; return the JSON it prints."""
    command = block("curl").replace("8080", str(port))
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True).stdout
    body: dict[str, Any] = json.loads(out)
    return body
