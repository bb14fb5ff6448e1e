"""The lowest dependency versions ``pyproject.toml`` allows really run the README's quickstart.

A fresh venv gets exactly the floor (``>=X`` read as ``==X``) of every runtime dependency, from PyPI through pip's
cache, and this checkout built and installed without dependencies. The quickstart app then serves the widget and a
call page, answers the README's curl command, starts a call on its embedded emulator as the widget does (an SDP offer
in, DialNexa's answer out) and hangs it up with the call's token. The embedded emulator needs the ``emulator`` extra
for its media; that extra is installed with the runtime dependencies held at their floors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from .offers import OFFER
from .quickstart import ROOT, health_with_curl, serve_quickstart, start_call
from .service import clean_environment, running_service

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]


def floors() -> dict[str, str]:
    """Each runtime dependency's lowest allowed version, from its ``>=`` bound in ``pyproject.toml``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest: dict[str, str] = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(bounds) == 1, f"runtime dependency {line!r} needs exactly one '>=' floor"
        lowest[requirement.name] = bounds[0]
    return lowest


def pip(python: Path, *args: str) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def floor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv's Python holding the dependency floors and this checkout."""
    venv = tmp_path_factory.mktemp("floors") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in floors().items()]
    pip(python, *pins)
    constraints = venv / "floors.txt"
    constraints.write_text("\n".join(pins) + "\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip(python, "--constraint", str(constraints), *project["optional-dependencies"]["emulator"])
    pip(python, "--no-deps", str(ROOT))
    return python


def http(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        status: int = response.status
        return status, response.read()


def test_floors_are_what_the_venv_holds(floor_python: Path) -> None:
    """The venv runs the installed project against exactly the floors (not this checkout, not newer releases)."""
    probe = (
        "import importlib.metadata as m, json, sys, webcall; "
        "print(json.dumps({'file': webcall.__file__, 'version': webcall.__version__, "
        "'dist': m.version('dialnexa-webcall'), 'deps': {n: m.version(n) for n in sys.argv[1:]}}))"
    )
    out = subprocess.run(
        [str(floor_python), "-c", probe, *floors()], cwd=floor_python.parent, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert Path(found["file"]).is_relative_to(floor_python.parents[1])
    assert {name: Version(v) for name, v in found["deps"].items()} == {n: Version(v) for n, v in floors().items()}
    assert found["dist"] == found["version"]  # the version has one source: webcall/__init__.py


def test_quickstart_serves_on_the_floors(floor_python: Path, tmp_path: Path) -> None:
    with serve_quickstart(floor_python, tmp_path) as port:
        base = f"http://127.0.0.1:{port}/webcall"
        status, widget = http("GET", f"{base}/widget.js")
        assert status == 200 and b"dialnexa-webcall" in widget
        status, page = http("GET", f"{base}/call/sales")
        assert status == 200 and b'<dialnexa-webcall agent="sales"' in page

        health = health_with_curl(port)
        assert health["status"] == "ok" and health["upstream"] == "emulator"
        status, _, session = start_call(port, OFFER)
        assert status == 201, session
        assert session["call_id"].startswith("call_") and session["answer"].startswith("v=0")

        status, ended = http(
            "POST", f"http://127.0.0.1:{port}{session['end_url']}", {"Authorization": f"Bearer {session['token']}"}
        )
        assert status == 200 and json.loads(ended)["call_id"] == session["call_id"]


def test_the_service_serves_from_the_fresh_venv(floor_python: Path, tmp_path: Path) -> None:
    """``pip install "dialnexa-webcall[emulator]" && python -m webcall serve``: a call page at once, calls start."""
    command = [str(floor_python), "-m", "webcall", "serve", "--port", "{port}"]
    with running_service(command, tmp_path, env=clean_environment()) as service:
        status, page = http("GET", f"{service.url}/webcall/call/sales")
        assert status == 200 and b'<dialnexa-webcall agent="sales"' in page
        request = urllib.request.Request(
            f"{service.url}/webcall/sessions",
            data=json.dumps({"agent": "sales", "offer": OFFER}).encode(),
            headers={"Content-Type": "application/json", "Origin": service.origin},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201 and json.loads(response.read())["answer"].startswith("v=0")
        assert service.stop() == 0
