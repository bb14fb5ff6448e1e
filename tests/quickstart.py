"""The README's quickstart, runnable by any Python: its five-line app served on a free port, its curl command, and
a call started as the widget starts one.

Used by ``test_readme`` (the test environment's Python) and ``test_minimum_versions`` (a venv holding the lowest
dependency versions ``pyproject.toml`` allows).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .net import free_port
from .service import clean_environment, running_service

ROOT = Path(__file__).resolve().parents[1]


def block(marker: str) -> str:
    """The code of the README block that follows ``<!-- quickstart:{marker} -->``."""
    return readme_block(f"quickstart:{marker}")


def readme_block(name: str) -> str:
    """The code of the README block that follows ``<!-- {name} -->``."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {re.escape(name)} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


@contextmanager
def serve_quickstart(
    python: str | Path, workdir: Path, *, this_checkout: bool = False, startup_timeout: float = 30
) -> Iterator[int]:
    """Run the README's Python block as ``app.py`` in ``workdir`` with ``python``; yield its port once it listens.

    The app sees no ``DIALNEXA_*`` or ``WEBCALL_*`` variables, so it runs on the embedded emulator, as the README
    says. ``this_checkout`` puts this repository first on the import path (the test environment's Python may have
    another checkout installed); a venv's Python keeps the package installed in it. Its output goes to a file in
    ``workdir`` (a pipe nobody reads could fill and block it); if it exits before listening, or does not stop on
    SIGTERM, the assertion carries that output.
    """
    script = workdir / "app.py"
    script.write_text(block("python"))
    port = free_port()
    env = clean_environment(PORT=str(port))
    if this_checkout:
        env["PYTHONPATH"] = str(ROOT)
    with running_service(
        [str(python), str(script)],
        workdir,
        env=env,
        port=port,
        ready_path="/webcall/healthz",
        startup_timeout=startup_timeout,
    ) as quickstart:
        yield port
        quickstart.stop()  # SIGTERM: the app must shut down gracefully (the assertion carries its output)


def health_with_curl(port: int) -> dict[str, Any]:
    """Run the README's curl command against the quickstart on ``port``; return the JSON it prints."""
    command = block("curl").replace("8080", str(port))
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True).stdout
    body: dict[str, Any] = json.loads(out)
    return body


def start_call(port: int, offer: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``POST /webcall/sessions`` with ``offer`` as the widget sends it from the site's own origin: status, headers,
    body."""
    origin = f"http://localhost:{port}"
    request = urllib.request.Request(
        f"{origin}/webcall/sessions",
        method="POST",
        data=json.dumps({"agent": "sales", "variables": {"name": "Priya"}, "offer": offer}).encode(),
        headers={"Origin": origin, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())
