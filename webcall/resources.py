"""Where the widget and the templates are: inside an installed wheel, or at the top of a source checkout."""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import rjsmin  # type: ignore[import-untyped]

from .errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent
log = logging.getLogger("webcall")

WIDGET_SOURCE = "webcall.js"
WIDGET_MINIFIED = "webcall.min.js"
BUILD_COMMAND = "python -m webcall.build"
_BUILT_FROM = re.compile(rb"/\*! webcall\.min\.js built from webcall\.js sha256:([0-9a-f]{64})\b[^\n]*\*/\n")


def _find(installed: str, checkout: str) -> Path:
    for candidate in (_PACKAGE / installed, _PACKAGE.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"webcall's {checkout}/ folder is missing from this installation; reinstall dialnexa-webcall.")


def static_dir() -> Path:
    return _find("_static", "static")


def templates_dir() -> Path:
    return _find("_templates", "templates")


def _brotli(body: bytes) -> bytes | None:
    """``body`` compressed with brotli at its best quality, when the ``brotli`` package is installed."""
    try:
        import brotli
    except ImportError:
        return None
    compressed: bytes = brotli.compress(body, quality=11)
    return compressed


def _gzip(body: bytes) -> bytes:
    """``body`` in gzip format: by zopfli where the ``zopfli`` package is installed (about 4 % smaller, for some
    tens of milliseconds once per process), else by zlib at its best level. Any gzip reader decodes either."""
    try:
        import zopfli.gzip
    except ImportError:
        return gzip.compress(body, compresslevel=9, mtime=0)
    compressed: bytes = zopfli.gzip.compress(body)
    return compressed


@dataclass(frozen=True)
class Asset:
    """A static file held in memory with its validators (ETag, SRI hash) and its compressed copies: gzip always
    (zopfli's where it is installed), brotli where the ``brotli`` package is installed."""

    body: bytes
    gzipped: bytes
    etag: str
    version: str
    sri: str
    content_type: str
    brotlied: bytes | None = None

    def encoded(self, accept_encoding: str) -> tuple[bytes, str | None]:
        """The bytes to send for an ``Accept-Encoding`` header and their ``Content-Encoding`` (None: as they are).
        Brotli before gzip; an encoding the client refuses with ``q=0`` is not used."""
        accepted = set()
        for part in accept_encoding.lower().split(","):
            name, _, params = part.strip().partition(";")
            quality = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
            try:
                refused = float(quality) <= 0
            except ValueError:
                refused = False
            if name and not refused:
                accepted.add(name.strip())
        if self.brotlied is not None and ("br" in accepted or "*" in accepted):
            return self.brotlied, "br"
        if "gzip" in accepted or "*" in accepted:
            return self.gzipped, "gzip"
        return self.body, None

    @classmethod
    def load(cls, path: Path, content_type: str) -> Asset:
        return cls.of(path.read_bytes(), content_type)

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        """The asset serving exactly ``body``: its ETag, version and SRI hash are computed over these bytes."""
        digest = hashlib.sha256(body).hexdigest()
        return cls(
            body=body,
            gzipped=_gzip(body),
            etag=f'"{digest[:32]}"',
            version=digest[:12],
            sri="sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode(),
            content_type=content_type,
            brotlied=_brotli(body),
        )


def minify_script(source: str) -> str:
    """JavaScript minified by rjsmin, the fallback when ``static/webcall.min.js`` is missing or stale: comments and
    insignificant whitespace removed (strings, template literals and regular expressions kept as they are), the
    ``/*! ... */`` licence comment kept, names left alone."""
    minified: str = rjsmin.jsmin(source, keep_bang_comments=True)
    return minified.strip() + "\n"


def built_from_line(source: bytes, tool: str) -> bytes:
    """The first line of ``webcall.min.js`` made from ``source`` by ``tool``: which ``webcall.js`` it was built from."""
    digest = hashlib.sha256(source).hexdigest()
    return f"/*! webcall.min.js built from webcall.js sha256:{digest} by {tool} */\n".encode()


def built_from(minified: bytes) -> str | None:
    """The sha256 (hex) of the ``webcall.js`` that ``minified`` records it was built from; None without a record."""
    match = _BUILT_FROM.match(minified)
    return match.group(1).decode() if match else None


@cache
def widget_asset() -> Asset:
    """The widget as served, read once per process: ``static/webcall.min.js`` (made by esbuild at build time, see
    ``webcall/build.py``) while it was built from the ``static/webcall.js`` next to it; otherwise ``webcall.js``
    minified by rjsmin here, larger, with one warning naming the command that rebuilds the file. The line recording
    which source the file was built from is for this check only and is not served (its hash does not compress)."""
    folder = static_dir()
    source = (folder / WIDGET_SOURCE).read_bytes()
    try:
        minified: bytes | None = (folder / WIDGET_MINIFIED).read_bytes()
    except FileNotFoundError:
        minified = None
    if minified is not None and built_from(minified) == hashlib.sha256(source).hexdigest():
        return Asset.of(_BUILT_FROM.sub(b"", minified, count=1), "text/javascript")
    problem = "is missing" if minified is None else f"was not built from this {WIDGET_SOURCE}"
    log.warning(
        "%s %s: serving %s minified by rjsmin instead (larger). Run %s in a checkout with node_modules "
        "(npm ci) to rebuild it.",
        folder / WIDGET_MINIFIED,
        problem,
        WIDGET_SOURCE,
        BUILD_COMMAND,
    )
    return Asset.of(minify_script(source.decode("utf-8")).encode(), "text/javascript")


@cache
def page_css() -> Asset:
    """The stylesheet of the plugin's own pages (call page, snippet, errors)."""
    return Asset.load(static_dir() / "call.css", "text/css")
