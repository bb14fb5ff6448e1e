"""docs/testing.md: its example runs as a file of its own against this checkout and prints what the page says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "testing.md"


def page_block(name: str) -> str:
    """The code of the block that follows ``<!-- {name} -->`` in docs/testing.md."""
    match = re.search(rf"<!-- {re.escape(name)} -->\s*```\w*\n(.*?)```", PAGE.read_text(), re.S)
    assert match, f"docs/testing.md has no {name} block"
    return match.group(1)


def test_the_example_prints_what_the_page_says(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(page_block("testing:example"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == page_block("testing:output")


def test_the_page_names_every_public_method_of_the_client() -> None:
    from webcall.emulator.testing import EmulatorControl

    public = {name for name in vars(EmulatorControl) if not name.startswith("_") and name != "close"}
    text = PAGE.read_text()
    assert public, "EmulatorControl has no public methods"
    assert {name for name in public if f"`{name}(" not in text} == set()
