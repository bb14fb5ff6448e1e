"""The widget without a browser: the size budget of the bytes served, CSP-safe source, valid syntax (source and served),
and the jinja2 templates."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import brotli
import jinja2
import pytest

from webcall.resources import BUILD_COMMAND, built_from, widget_asset

ROOT = Path(__file__).resolve().parent.parent
WIDGET = ROOT / "static" / "webcall.js"
TEMPLATES = ROOT / "templates"
# The widget as served (minified by esbuild: static/webcall.min.js), full UI included; peer widgets ship 150-190 KiB.
BROTLI_BUDGET = 12 * 1024
GZIP_BUDGET = 13 * 1024
HOSTILE = '"><script>alert(1)</script>'

# Constructs a strict CSP (default-src 'self', no unsafe-inline/eval, no blob:) would block, or that load outside code.
FORBIDDEN = {
    "eval": r"\beval\s*\(",
    "new Function": r"\bnew\s+Function\b",
    "innerHTML/outerHTML": r"\.(inner|outer)HTML\b",
    "insertAdjacentHTML": r"insertAdjacentHTML",
    "document.write": r"document\.write",
    "style attribute": r"""setAttribute\(\s*["'`]style|\.style\s*=|\.style\.cssText|\.style\.(?!setProperty\()\w""",
    "<style> element": r"<style|createElement\(\s*[\"'`]style",
    "string timer": r"""set(Timeout|Interval)\(\s*["'`]""",
    "inline handler attribute": r"""setAttribute\(\s*["'`]on""",
    "blob: or worker": r"blob:|createObjectURL|new\s+Worker|audioWorklet|importScripts",
    "fonts or imports": r"@font-face|@import|url\(",
    "console.error": r"console\.error",
}
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


def widget_source() -> str:
    return WIDGET.read_text(encoding="utf-8")


def sizes() -> str:
    served = widget_asset().body
    minified = WIDGET.with_name("webcall.min.js")
    fallback = not minified.is_file() or served != minified.read_bytes()
    return (
        f"source {WIDGET.stat().st_size} B, served {len(served)} B, gzip -9 {len(gzip.compress(served, 9))} B, "
        f"brotli q11 {len(brotli.compress(served, quality=11))} B"
        + (f" (rjsmin's: webcall.min.js is stale, run `{BUILD_COMMAND}`)" if fallback else " (esbuild's)")
    )


def test_served_widget_within_brotli_budget() -> None:
    packed = len(brotli.compress(widget_asset().body, quality=11))
    assert packed <= BROTLI_BUDGET, f"the served widget is over {BROTLI_BUDGET} B brotli: {sizes()}"


def test_served_widget_within_gzip_budget() -> None:
    # What the plugin sends to a browser that asks for gzip.
    packed = len(widget_asset().gzipped)
    assert packed <= GZIP_BUDGET, f"the served widget is over {GZIP_BUDGET} B gzip: {sizes()}"


def test_served_widget_is_minified_with_its_licence() -> None:
    served = widget_asset().body.decode()
    source = widget_source()
    assert len(served) < 0.95 * len(source), sizes()
    assert built_from(served.encode()) is None, "the line recording the source is not served"
    assert served.startswith("/*! <dialnexa-webcall>"), "the licence comment is kept"
    assert "// Visible strings" in source and "// Visible strings" not in served, "comments are removed"


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_widget_has_no_csp_unsafe_construct(name: str) -> None:
    hits = [
        f"line {n}: {line.strip()}"
        for n, line in enumerate(widget_source().splitlines(), 1)
        if re.search(FORBIDDEN[name], line)
    ]
    assert not hits, f"{name} in webcall.js:\n" + "\n".join(hits)


def test_widget_requests_no_outside_url() -> None:
    urls = set(re.findall(r"https?://[^\s\"'`)]+", widget_source()))
    assert urls <= ALLOWED_URLS, f"webcall.js names outside URLs: {sorted(urls - ALLOWED_URLS)}"


def test_widget_is_strict_and_self_contained() -> None:
    source = widget_source()
    assert '"use strict";' in source
    assert "adoptedStyleSheets" in source
    assert "if (!customElements.get(TAG)) customElements.define(TAG, WebCall);" in source, "defined once per page"
    assert not re.search(r"^\s*(import|export)\b|\brequire\(", source, re.M), "no modules or dependencies"


# Where the source declares a name: variables, functions, classes, parameters (arrow, function, method, catch) and
# #private members. Strings and comments are removed first; a classic for loop's index is left alone.
_COMMENTS_AND_STRINGS = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`", re.S)
_LOOP_INDEX = re.compile(r"\bfor\s*\(\s*let\s+[\w$]+\s*=")
_NAME = re.compile(r"[A-Za-z_$][\w$]*")
_DECLARED = [
    re.compile(r"\b(?:const|let|var|function|class)\s+([\w$]+)"),
    re.compile(r"#([\w$]+)"),
    re.compile(r"(?<![\w$.])([\w$]+)\s*=>"),
]
_DESTRUCTURED = re.compile(r"\b(?:const|let|var)\s*[{\[]([^}\]]*)[}\]]")
_PARAMETERS = [
    re.compile(r"\(([^()]*)\)\s*=>"),
    re.compile(r"(?<![\w$.])(?!(?:if|for|while|switch|return)\b)#?[\w$]+\s*\(([^()]*)\)\s*\{"),
]
_DEFAULT_VALUE = re.compile(r"=[^,{}\[\]]*")


def declared_names(source: str) -> set[str]:
    code = _LOOP_INDEX.sub("for (", _COMMENTS_AND_STRINGS.sub('""', source))
    names = {name for pattern in _DECLARED for name in pattern.findall(code)}
    for pattern in _PARAMETERS:
        for parameters in pattern.findall(code):
            names.update(_NAME.findall(_DEFAULT_VALUE.sub("", parameters)))
    for destructured in _DESTRUCTURED.findall(code):
        names.update(_NAME.findall(_DEFAULT_VALUE.sub("", destructured)))
    return names


def test_widget_declares_no_one_or_two_letter_names() -> None:
    """The source is written to be read: a name says what it holds (the minifier and compression do the rest)."""
    short = sorted(name for name in declared_names(widget_source()) if len(name) <= 2)
    assert not short, f"webcall.js declares names a reader must decode: {short}"


def test_the_declared_name_check_finds_short_names() -> None:
    source = """const $ = {}; let ok = 1; class Ab {} function go(e, { id }) {} const f = (ev) => ev;
    items.forEach(x => x); #xy = 0; method(a, b = 2) { } catch (er) { } const [, tag] = m; for (let i = 0; ;) {}"""
    found = {name for name in declared_names(source) if len(name) <= 2}
    assert found == {"$", "ok", "Ab", "go", "e", "id", "f", "ev", "x", "xy", "a", "b", "er"}


@pytest.mark.parametrize("which", ["source", "served"])
def test_widget_parses(which: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = WIDGET
    if which == "served":
        script = tmp_path / "widget.js"
        script.write_bytes(widget_asset().body)
    result = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def templates() -> jinja2.Environment:
    # As the plugin renders them: autoescape on, optional context keys simply absent.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)


def page(env: jinja2.Environment, name: str, **context: object) -> str:
    defaults = {"widget_url": "/webcall/widget.js?v=abc", "widget_sri": "sha384-AAAA", "agent": "sales"}
    return env.get_template(name).render(**{**defaults, **context})


def test_call_page_loads_the_widget_with_sri(templates: jinja2.Environment) -> None:
    html = page(templates, "call.html", label="Sales")
    assert html.startswith("<!doctype html>")
    assert '<script src="/webcall/widget.js?v=abc" integrity="sha384-AAAA" crossorigin="anonymous" defer>' in html
    assert '<dialnexa-webcall agent="sales" text-title="Sales"></dialnexa-webcall>' in html
    assert "<style" not in html and "style=" not in html and html.count("<script") == 1


def test_call_page_without_a_label_has_no_title_attribute(templates: jinja2.Environment) -> None:
    html = page(templates, "call.html")
    assert '<dialnexa-webcall agent="sales"></dialnexa-webcall>' in html


def test_call_page_omits_empty_integrity(templates: jinja2.Environment) -> None:
    html = page(templates, "call.html", widget_sri="")
    assert "integrity" not in html and '<script src="/webcall/widget.js?v=abc" defer>' in html


def test_call_page_escapes_a_hostile_agent(templates: jinja2.Environment) -> None:
    html = page(templates, "call.html", agent=HOSTILE, label=HOSTILE)
    assert "<script>alert" not in html and html.count("<script") == 1
    assert 'agent="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert 'text-title="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html


def test_snippet_shows_the_embed_code_as_text(templates: jinja2.Environment) -> None:
    html = page(templates, "snippet.html")
    snippet = (
        '&lt;script src="/webcall/widget.js?v=abc" integrity="sha384-AAAA" crossorigin="anonymous" '
        'data-agent="sales" defer&gt;&lt;/script&gt;'
    )
    assert f"<pre><code>{snippet}</code></pre>" in html
    assert '&lt;dialnexa-webcall agent="sales"&gt;&lt;/dialnexa-webcall&gt;' in html
    assert '<dialnexa-webcall agent="sales"></dialnexa-webcall>' in html  # the live preview


def test_snippet_escapes_a_hostile_agent_twice(templates: jinja2.Environment) -> None:
    html = page(templates, "snippet.html", agent=HOSTILE)
    # Only the page's own widget script is a real tag; the snippet copies back the escaped value.
    assert html.count("<script") == 1 and "<script>alert" not in html
    assert 'data-agent="&amp;#34;&amp;gt;&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;"' in html


def test_error_page_escapes_its_text(templates: jinja2.Environment) -> None:
    html = page(templates, "error.html", status=404, title="No <agent>", message=HOSTILE)
    assert "<h1>No &lt;agent&gt;</h1>" in html and "<script" not in html and "Error 404" in html
