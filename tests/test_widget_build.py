"""static/webcall.min.js, the widget as served: made by ``python -m webcall.build`` (esbuild) from the current
static/webcall.js, byte for byte what esbuild makes again, and replaced by rjsmin's minification, with a warning,
whenever it was built from another source."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from webcall import build, resources
from webcall.resources import BUILD_COMMAND, built_from, built_from_line, minify_script, widget_asset

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"
SOURCE = STATIC / "webcall.js"
MINIFIED = STATIC / "webcall.min.js"
REBUILD = f"static/webcall.min.js was built from another static/webcall.js: run `{BUILD_COMMAND}` and commit it"


def test_the_minified_widget_was_built_from_the_current_source() -> None:
    assert MINIFIED.is_file(), f"static/webcall.min.js is missing: run `{BUILD_COMMAND}` and commit it"
    recorded = built_from(MINIFIED.read_bytes())
    assert recorded is not None, "static/webcall.min.js does not start with the line recording its source"
    assert recorded == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), REBUILD
    served = MINIFIED.read_bytes().split(b"\n", 1)[1]
    assert widget_asset().body == served, "the plugin serves the file as it is, without the line recording its source"


def test_esbuild_makes_the_committed_file_again() -> None:
    """esbuild is deterministic: the same source and version give the same bytes (CI installs it with npm ci)."""
    if not build.ESBUILD.exists():
        pytest.skip("esbuild is not installed here: run `npm ci`")
    source = SOURCE.read_bytes()
    if built_from(MINIFIED.read_bytes()) != hashlib.sha256(source).hexdigest():
        pytest.fail(REBUILD)
    assert build.minified(source) == MINIFIED.read_bytes(), f"run `{BUILD_COMMAND}` with the pinned esbuild (npm ci)"


def test_the_minified_widget_keeps_the_licence_after_its_record() -> None:
    body = MINIFIED.read_text(encoding="utf-8")
    record, licence = body.split("\n", 1)
    assert record.startswith("/*! webcall.min.js built from webcall.js sha256:") and record.endswith(" */")
    assert licence.startswith("/*! <dialnexa-webcall>"), "the licence comment follows the record"


@pytest.fixture
def static(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A static folder of its own for ``widget_asset()``, with a copy of the current widget source."""
    shutil.copy(SOURCE, tmp_path / "webcall.js")
    monkeypatch.setattr(resources, "static_dir", lambda: tmp_path)
    widget_asset.cache_clear()
    yield tmp_path
    widget_asset.cache_clear()


def rebuild_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "webcall" and r.levelno == logging.WARNING]


def test_a_fresh_minified_file_is_served_as_it_is(static: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = (static / "webcall.js").read_bytes()
    fresh = built_from_line(source, "a test") + b"/*! licence */const served=1;\n"
    (static / "webcall.min.js").write_bytes(fresh)
    assert built_from(fresh) == hashlib.sha256(source).hexdigest()
    assert widget_asset().body == b"/*! licence */const served=1;\n"
    assert rebuild_warnings(caplog) == []


def test_a_stale_minified_file_falls_back_to_rjsmin_with_one_warning(
    static: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_source = b"/*! an older widget */\nconst widget = 1;\n"
    (static / "webcall.min.js").write_bytes(built_from_line(old_source, "a test") + b"const widget=1;\n")
    with caplog.at_level(logging.WARNING, logger="webcall"):
        body = widget_asset().body
        assert widget_asset().body is body, "read once per process"
    assert body == minify_script((static / "webcall.js").read_text(encoding="utf-8")).encode()
    [warning] = rebuild_warnings(caplog)
    assert "was not built from this webcall.js" in warning and BUILD_COMMAND in warning


def test_a_missing_or_unrecorded_minified_file_falls_back_to_rjsmin(
    static: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = minify_script((static / "webcall.js").read_text(encoding="utf-8")).encode()
    with caplog.at_level(logging.WARNING, logger="webcall"):
        assert widget_asset().body == expected
        widget_asset.cache_clear()
        (static / "webcall.min.js").write_bytes(b"/*! no record */const widget=1;\n")
        assert widget_asset().body == expected
    missing, unrecorded = rebuild_warnings(caplog)
    assert "is missing" in missing and BUILD_COMMAND in missing
    assert "was not built from this webcall.js" in unrecorded and BUILD_COMMAND in unrecorded


def test_the_build_writes_a_file_the_plugin_serves(static: Path, caplog: pytest.LogCaptureFixture) -> None:
    if not build.ESBUILD.exists():
        pytest.skip("esbuild is not installed here: run `npm ci`")
    written = build.build(static)
    assert written == static / "webcall.min.js" and not list(static.glob("*.partial"))
    assert widget_asset().body == written.read_bytes().split(b"\n", 1)[1] and rebuild_warnings(caplog) == []


def test_the_build_refuses_without_esbuild(tmp_path: Path) -> None:
    shutil.copy(SOURCE, tmp_path / "webcall.js")
    with pytest.raises(build.BuildError, match="npm ci"):
        build.build(tmp_path, tmp_path / "no-esbuild")
    assert not (tmp_path / "webcall.min.js").exists()
