"""The README's quickstart runs as written: the five-line app starts and the curl command mints a session."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- quickstart:{marker} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no quickstart:{marker} block"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    script = tmp_path / "app.py"
    script.write_text(block("python"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))}
    env["PORT"] = str(port)
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"quickstart exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("quickstart did not start listening within 30 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_quickstart_mints_a_session_with_curl(quickstart: int) -> None:
    command = block("curl").replace("8080", str(quickstart))
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True).stdout
    body = json.loads(out)
    assert body["call_id"].startswith("call_") and body["agent"] == "sales"
    assert body["media"]["whip_url"].startswith("http://127.0.0.1:")
    assert body["token"] and body["access_token"]
