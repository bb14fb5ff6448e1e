"""GET /webcall/widget.js: ETag, revalidation, gzip, versioned immutability, SRI; and the two pages."""

from __future__ import annotations

import base64
import gzip
import hashlib

import brotli

from webcall.resources import static_dir, widget_asset

from .conftest import MakeHost


async def test_widget_served_with_validators(make_host: MakeHost) -> None:
    client, handle = await make_host()
    source = (static_dir() / "webcall.js").read_text(encoding="utf-8")
    raw = widget_asset().body  # served minified (static/webcall.min.js); the validators are over the bytes served
    assert len(raw) < len(source)
    plain = await client.get("/webcall/widget.js", headers={"Accept-Encoding": "identity"})
    assert plain.status == 200 and await plain.read() == raw
    assert plain.headers["Content-Type"].startswith("text/javascript")
    assert "must-revalidate" in plain.headers["Cache-Control"]
    etag = plain.headers["ETag"]
    again = await client.get("/webcall/widget.js", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    zipped = await client.get("/webcall/widget.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == raw
    versioned = await client.get(handle.widget_url)
    assert "immutable" in versioned.headers["Cache-Control"]
    assert handle.widget_sri == "sha384-" + base64.b64encode(hashlib.sha384(raw).digest()).decode()


async def test_call_page_and_snippet(make_host: MakeHost) -> None:
    client, handle = await make_host()
    page = await client.get("/webcall/call/sales")
    assert page.status == 200
    html = await page.text()
    assert handle.widget_url in html and handle.widget_sri in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    missing = await client.get("/webcall/call/nobody")
    assert missing.status == 404 and "There is no agent" in await missing.text()
    snippet = await client.get("/webcall/snippet?agent=sales")
    assert snippet.status == 200 and "dialnexa-webcall" in await snippet.text()


async def test_widget_compressed_as_the_browser_asks(make_host: MakeHost) -> None:
    """Brotli before gzip, both over the same served bytes; an encoding refused with q=0 is not used."""
    client, _ = await make_host()
    raw = widget_asset().body

    async def fetch(accept: str) -> tuple[str | None, bytes]:
        response = await client.get("/webcall/widget.js", headers={"Accept-Encoding": accept}, auto_decompress=False)
        assert response.status == 200 and response.headers["Vary"] == "Accept-Encoding"
        return response.headers.get("Content-Encoding"), await response.read()

    encoding, body = await fetch("gzip, deflate, br")
    assert encoding == "br" and brotli.decompress(body) == raw
    assert len(body) < len(gzip.compress(raw, 9)) < len(raw)
    encoding, body = await fetch("br;q=0, gzip")
    assert encoding == "gzip" and gzip.decompress(body) == raw
    encoding, body = await fetch("gzip;q=0")
    assert encoding is None and body == raw
    encoding, body = await fetch("identity")
    assert encoding is None and body == raw


async def test_the_snippet_is_ready_to_paste_on_another_origin(make_host: MakeHost) -> None:
    client, handle = await make_host(
        public_url="https://calls.example.com",
        ticket_secrets=("snippet-ticket-secret-0123456789-abcdef",),
        require_ticket=True,
    )
    text = await (await client.get("/webcall/snippet?agent=sales")).text()
    assert f'src="https://calls.example.com{handle.widget_url}"' in text, "an absolute address to paste"
    assert 'data-ticket="<var>TICKET</var>"' in text and 'ticket="<var>TICKET</var>"&gt;' in text
    assert "Calls here need a call ticket" in text
    own = "https://calls.example.com"
    assert f"script-src &#39;self&#39; {own}; connect-src &#39;self&#39; {own}" in text
    plain = await (await (await make_host())[0].get("/webcall/snippet?agent=sales")).text()
    assert "data-ticket" not in plain and "call ticket" not in plain
