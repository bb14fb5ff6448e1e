"""Where the widget and the templates are: inside an installed wheel, or at the top of a source checkout."""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


def _find(installed: str, checkout: str) -> Path:
    for candidate in (_PACKAGE / installed, _PACKAGE.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"webcall's {checkout}/ folder is missing from this installation; reinstall dialnexa-webcall.")


def static_dir() -> Path:
    return _find("_static", "static")


def templates_dir() -> Path:
    return _find("_templates", "templates")


@dataclass(frozen=True)
class Asset:
    """A static file held in memory with its validators: ETag, SRI hash, and a gzip copy."""

    body: bytes
    gzipped: bytes
    etag: str
    version: str
    sri: str
    content_type: str

    @classmethod
    def load(cls, path: Path, content_type: str) -> Asset:
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        return cls(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            etag=f'"{digest[:32]}"',
            version=digest[:12],
            sri="sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode(),
            content_type=content_type,
        )


@cache
def widget_asset() -> Asset:
    """The widget, read once per process."""
    return Asset.load(static_dir() / "webcall.js", "text/javascript")


@cache
def page_css() -> Asset:
    """The stylesheet of the plugin's own pages (call page, snippet, errors)."""
    return Asset.load(static_dir() / "call.css", "text/css")
