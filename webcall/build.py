"""``python -m webcall.build``: writes ``static/webcall.min.js``, the widget as served, from ``static/webcall.js``.

Run it in a source checkout after every change to ``static/webcall.js``, once ``npm ci`` has installed esbuild (the
version pinned in ``package-lock.json``) into ``node_modules``. esbuild minifies the source (names shortened, syntax
compacted, the ``/*! ... */`` licence comment kept at the top); the file's first line records the sha256 of the source
it was made from. The plugin serves the file only while that record matches ``static/webcall.js``, and otherwise
minifies the source itself with rjsmin (larger) and warns once with this command. The output depends only on the
source and esbuild's version, so ``tests/test_widget_build.py`` rebuilds it and expects the same bytes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .resources import WIDGET_MINIFIED, WIDGET_SOURCE, built_from_line

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"
ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"
ESBUILD_OPTIONS = ("--minify", "--target=es2022", "--legal-comments=inline")


class BuildError(Exception):
    """The widget cannot be built here; the message says what to do."""


def esbuild_version(esbuild: Path = ESBUILD) -> str:
    if not esbuild.exists():
        raise BuildError(f"{esbuild} is missing: run `npm ci` at the top of the checkout first.")
    result = subprocess.run([esbuild, "--version"], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise BuildError(f"{esbuild} --version failed: {result.stderr.strip()}")
    return result.stdout.strip()


def minified(source: bytes, esbuild: Path = ESBUILD) -> bytes:
    """What ``webcall.min.js`` holds for the bytes of ``webcall.js``: the line recording their sha256 and esbuild's
    version, then esbuild's output. The source is read once by the caller and handed to esbuild on stdin, so the
    record always describes the bytes that were minified."""
    version = esbuild_version(esbuild)
    command = [str(esbuild), *ESBUILD_OPTIONS, f"--sourcefile=static/{WIDGET_SOURCE}"]
    result = subprocess.run(command, input=source, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise BuildError(f"esbuild could not minify {WIDGET_SOURCE}:\n{result.stderr.decode(errors='replace').strip()}")
    return built_from_line(source, f"esbuild {version}") + result.stdout


def build(static: Path = STATIC, esbuild: Path = ESBUILD) -> Path:
    """Writes ``static/webcall.min.js`` (replaced whole, never half-written) and returns its path."""
    source = static / WIDGET_SOURCE
    if not source.is_file():
        raise BuildError(f"{source} is missing: run this in a source checkout of dialnexa-webcall.")
    body = minified(source.read_bytes(), esbuild)
    target = static / WIDGET_MINIFIED
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(body)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webcall.build", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    try:
        target = build()
    except BuildError as error:
        print(f"webcall.build: {error}", file=sys.stderr)
        return 1
    print(f"webcall.build: wrote {target.relative_to(ROOT)} ({target.stat().st_size} B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
