"""The widget without a browser: its size budget, CSP-safe source, valid syntax, and the jinja2 templates."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

ROOT = Path(__file__).resolve().parent.parent
WIDGET = ROOT / "static" / "webcall.js"
TEMPLATES = ROOT / "templates"
BUDGET = 12 * 1024  # gzip -9 bytes, full UI included (peer widgets ship 150-190 KiB)
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


def test_widget_within_gzip_budget() -> None:
    raw = WIDGET.read_bytes()
    packed = len(gzip.compress(raw, compresslevel=9))
    assert packed < BUDGET, f"webcall.js is {packed} B gzip -9 ({len(raw)} B raw); the budget is {BUDGET} B"


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
    assert "adoptedStyleSheets" in source and "customElements.get(TAG) || customElements.define" in source
    assert not re.search(r"^\s*(import|export)\b|\brequire\(", source, re.M), "no modules or dependencies"


def test_widget_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run([node, "--check", str(WIDGET)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def templates() -> jinja2.Environment:
    # As the plugin renders them: autoescape on, optional context keys simply absent.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)


def page(env: jinja2.Environment, name: str, **context: object) -> str:
    defaults = {"widget_url": "/webcall/widget.js?v=abc", "widget_sri": "sha384-AAAA", "agent": "sales"}
    return env.get_template(name).render(**{**defaults, **context})


def test_call_page_loads_the_widget_with_sri(templates: jinja2.Environment) -> None:
    html = page(templates, "call.html", label="Sales", attributes={"agent": "ignored", "callback": "true"})
    assert html.startswith("<!doctype html>")
    assert '<script src="/webcall/widget.js?v=abc" integrity="sha384-AAAA" crossorigin="anonymous" defer>' in html
    assert '<dialnexa-webcall agent="sales" text-title="Sales" callback="true">' in html
    assert "<style" not in html and "style=" not in html and html.count("<script") == 1


def test_call_page_omits_empty_integrity(templates: jinja2.Environment) -> None:
    html = page(templates, "call.html", widget_sri="")
    assert "integrity" not in html and '<script src="/webcall/widget.js?v=abc" defer>' in html


def test_call_page_escapes_a_hostile_agent(templates: jinja2.Environment) -> None:
    html = page(templates, "call.html", agent=HOSTILE, label=HOSTILE, attributes={"consent": HOSTILE})
    assert "<script>alert" not in html and html.count("<script") == 1
    assert 'agent="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html


def test_call_page_rejects_a_hostile_attribute_name(templates: jinja2.Environment) -> None:
    with pytest.raises(ValueError):
        page(templates, "call.html", attributes={"x onclick=alert(1)": "y"})


def test_snippet_shows_the_embed_code_as_text(templates: jinja2.Environment) -> None:
    html = page(templates, "snippet.html", attributes={"agent": "sales", "callback": "true"})
    snippet = (
        '&lt;script src="/webcall/widget.js?v=abc" integrity="sha384-AAAA" crossorigin="anonymous" '
        'data-agent="sales" data-callback="true" defer&gt;&lt;/script&gt;'
    )
    assert f"<pre><code>{snippet}</code></pre>" in html
    assert '&lt;dialnexa-webcall agent="sales" callback="true"&gt;&lt;/dialnexa-webcall&gt;' in html
    assert '<dialnexa-webcall agent="sales" callback="true"></dialnexa-webcall>' in html  # the live preview


def test_snippet_escapes_a_hostile_agent_twice(templates: jinja2.Environment) -> None:
    html = page(templates, "snippet.html", agent=HOSTILE, attributes={"label-start": HOSTILE})
    # Only the page's own widget script is a real tag; the snippet copies back the escaped value.
    assert html.count("<script") == 1 and "<script>alert" not in html
    assert 'data-agent="&amp;#34;&amp;gt;&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;"' in html


def test_error_page_escapes_its_text(templates: jinja2.Environment) -> None:
    html = page(templates, "error.html", status=404, title="No <agent>", message=HOSTILE)
    assert "<h1>No &lt;agent&gt;</h1>" in html and "<script" not in html and "Error 404" in html
