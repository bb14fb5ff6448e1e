"""The README's quickstart runs as written: the five-line app starts, answers the curl command, and starts a call; and
the commands and snippets of the README and of the pages under ``docs/`` do what they say."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webcall import WebCallConfig
from webcall.emulator.server import EmulatorServer

from .conftest import MakeHost, mint, problem, runtime
from .net import free_port
from .offers import OFFER
from .quickstart import ROOT, health_with_curl, readme_block, serve_quickstart, start_call
from .service import clean_environment, running_service

EMULATOR_PAGE = ROOT / "docs" / "emulator.md"
TICKETS_PAGE = ROOT / "docs" / "tickets.md"


def block_after(marker: str, text: str) -> str:
    """The code of the block that follows ``<!-- {marker} -->`` in ``text``."""
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"no {marker} block"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[int]:
    with serve_quickstart(sys.executable, tmp_path, this_checkout=True) as port:
        yield port


def test_quickstart_answers_curl_and_starts_a_call(quickstart: int) -> None:
    health = health_with_curl(quickstart)
    assert health["status"] == "ok" and health["upstream"] == "emulator"
    assert health["agents"] == ["collections", "sales", "support"]
    status, headers, body = start_call(quickstart, OFFER)
    assert status == 201, body
    assert body["call_id"].startswith("call_") and body["agent"] == "sales" and body["answer"].startswith("v=0")
    assert headers["Location"] == body["media_url"] and body["token"]
    assert "access_token" not in body and "media" not in body


def test_the_two_commands_name_extras_modules_and_markers_that_exist() -> None:
    """The demo command, the full test command and the offline one beside it, as a fresh checkout runs them: every
    extra they install, module they run and marker they select exists."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Two commands") : readme.index("## Mount it in five lines")]
    demo, full, offline = code_blocks(section, "sh")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for command in (demo, full):
        for extra in re.findall(r"\.\[([a-z,]+)\]", command):
            assert set(extra.split(",")) <= extras.keys(), f"no such extra: {extra}"
    assert re.fullmatch(r'pip install -e "\.\[emulator\]" && python -m demo\n', demo)
    assert (ROOT / "demo" / "__main__.py").is_file()
    assert full.startswith("npm ci && ") and (ROOT / "package-lock.json").is_file()
    assert full.rstrip().endswith("python -m pytest") and offline.startswith("python -m pytest -m ")
    declared = {marker.partition(":")[0] for marker in pyproject["tool"]["pytest"]["ini_options"]["markers"]}
    selected = set(re.findall(r"not (\w+)", offline))
    assert selected == {"browser", "packaging"} and selected <= declared, f"markers {selected}, declared {declared}"
    assert (ROOT / ".ci" / "run").is_file(), "the README says .ci/run installs what the tests need"


def test_the_serve_command_is_the_one_the_fresh_venv_test_runs() -> None:
    """``test_minimum_versions`` installs the project with its emulator extra and runs ``python -m webcall serve``."""
    command = readme_block("quickstart:serve").strip()
    assert command == 'pip install ".[emulator]" && python -m webcall serve'


def test_the_readme_installs_from_a_checkout_or_a_wheel_never_from_an_index() -> None:
    """``dialnexa-webcall`` is not on a package index: ``pip install dialnexa-webcall`` would fail (or install someone
    else's package), so every install line names a checkout or a wheel built from one."""
    readme = (ROOT / "README.md").read_text()
    assert not re.findall(r"pip install [\"']?dialnexa-webcall", readme)
    assert "is not on a package index yet: install it from a checkout" in readme
    for line in re.findall(r"pip install [^`\n]*", readme):
        assert re.search(r"pip install (-e )?[\"']?(\.|dist/dialnexa_webcall-)", line) or "PyJWT" in line, line


async def test_the_python_ticket_snippet_signs_what_the_service_accepts(
    make_host: MakeHost, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snippet reads the variable the service reads, ``WEBCALL_TICKET_SECRETS``, and signs with its first secret
    (it once read ``WEBCALL_TICKET_SECRET``, which the service never sets)."""
    secret, previous = "the-host-backend-ticket-secret-0123456789", "the-previous-ticket-secret-0123456789abc"
    monkeypatch.delenv("WEBCALL_TICKET_SECRET", raising=False)
    monkeypatch.setenv("WEBCALL_TICKET_SECRETS", f"{secret},{previous}")
    snippet: dict[str, Any] = {}
    exec(compile(readme_block("tickets:python"), "README.md", "exec"), snippet)
    ticket = snippet["call_ticket"]("user-7", "Grace")
    client, handle = await make_host(ticket_secrets=WebCallConfig.from_env().ticket_secrets, require_ticket=True)
    response = await mint(client, {"agent": "sales", "ticket": ticket})
    assert response.status == 201, await response.text()
    call_id = (await response.json())["call_id"]
    assert emulator.state.calls[call_id].metadata["name"] == "Grace"
    context = await runtime(handle).store.get_context(call_id)
    assert context is not None and context["identity"] == "user-7"
    await problem(await mint(client, {"agent": "sales", "ticket": ticket}), 409, "ticket_used")


def test_every_ticket_snippet_reads_the_variable_the_service_reads() -> None:
    readme, page = (ROOT / "README.md").read_text(), TICKETS_PAGE.read_text()
    assert not re.findall(r"WEBCALL_TICKET_SECRET(?!S)", readme + page)
    assert "WEBCALL_TICKET_SECRETS" in readme_block("tickets:python")
    snippets = code_blocks(page, "python") + code_blocks(page, "js") + code_blocks(page, "ruby")
    assert len(snippets) == 3 and all("WEBCALL_TICKET_SECRETS" in snippet for snippet in snippets)


async def test_the_sign_ticket_snippet_signs_what_the_service_accepts(
    make_host: MakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/tickets.md's ``webcall.sign_ticket`` example, run as written, makes a ticket the service takes."""
    secret = "the-host-backend-ticket-secret-0123456789"
    monkeypatch.setenv("WEBCALL_TICKET_SECRETS", secret)
    (snippet,) = code_blocks(TICKETS_PAGE.read_text(), "python")
    names: dict[str, Any] = {}
    exec(compile(snippet, "docs/tickets.md", "exec"), names)
    client, _ = await make_host(ticket_secrets=(secret,), require_ticket=True)
    response = await mint(client, {"agent": "sales", "ticket": names["ticket"]})
    assert response.status == 201, await response.text()


async def test_a_bad_webhook_signature_gets_the_json_error_the_readme_names(make_host: MakeHost) -> None:
    """The security notes once said a bad signature gets "a bare 401": it gets the plugin's JSON error."""
    client, _ = await make_host(webhook_secrets=("readme-webhook-secret-0123",))
    response = await client.post(
        "/webcall/webhooks", data=b'{"event_type": "call_ended"}', headers={"x-nexa-signature": "sha256=" + "0" * 64}
    )
    body = await problem(response, 401, "invalid_signature")
    security = (ROOT / "docs" / "security.md").read_text()
    assert "bare `401`" not in security
    assert f'`401` with the plugin\'s JSON error (`"code": "{body["code"]}"`' in security


def test_the_production_line_registers_the_webhook() -> None:
    """The production gunicorn line once had no WEBCALL_WEBHOOK_SECRETS: no webhook was ever registered."""
    block = readme_block("service:production")
    names = re.findall(r"\b((?:WEBCALL|DIALNEXA)_[A-Z_]+)=", block)
    assert {"WEBCALL_PUBLIC_URL", "WEBCALL_WEBHOOK_SECRETS"} <= set(names)
    samples = {"...": "a-long-random-secret-for-the-readme-test-0123456789", "agent_...": "agent_x"}
    env = {}
    for name, value in re.findall(r"\b((?:WEBCALL|DIALNEXA)_[A-Z_]+)=(\S+)", block):
        env[name] = samples.get(value, value.replace("agent_...", "agent_x"))
    config = WebCallConfig.from_env(env)
    assert config.public_url and config.webhook_secrets, "the plugin registers its webhook at start-up"


# -- the emulator's broken account, caught by the doctor ----------------------------------------------------------
def numbered_ids(text: str) -> str:
    """Webhook ids as webhook_01, webhook_02… in order of appearance, so the README's output does not change per run."""
    names: dict[str, str] = {}
    return re.sub(r"\bwebhook_[0-9a-f]{14}\b", lambda m: names.setdefault(m[0], f"webhook_{len(names) + 1:02d}"), text)


def exports(session: str) -> str:
    """The ``export`` statement a session begins with (its continued lines included)."""
    lines = session.splitlines()
    end = next(i for i, line in enumerate(lines) if not line.endswith("\\"))
    return "\n".join(lines[: end + 1])


def test_the_broken_account_session_is_caught_by_the_doctor(tmp_path: Path) -> None:
    """docs/emulator.md's broken account, run as written: the doctor prints what the page shows, and the fix works."""
    page = EMULATOR_PAGE.read_text()
    start = block_after("emulator:broken-account", page).rstrip()
    write_agents, _, command = start.rpartition("\n")
    subprocess.run(["bash", "-c", write_agents], cwd=tmp_path, check=True, timeout=30)
    port = free_port()
    argv = [
        sys.executable if part == "python" else "{port}" if part == "8700" else part for part in shlex.split(command)
    ]
    assert argv[1:] == ["-m", "webcall.emulator", "--port", "{port}", "--agents", "agents.json"]

    def run(script: str) -> subprocess.CompletedProcess[str]:
        script = script.replace("8700", str(port)).replace("python ", f"{sys.executable} ")
        return subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=120
        )

    emulator_env = clean_environment()
    with running_service(argv, tmp_path, env=emulator_env, port=port, ready_path="/_control/requests") as emulator:
        session = block_after("emulator:doctor-session", page)
        done = run(session)
        assert done.returncode == 1, done.stdout + done.stderr
        printed = numbered_ids(done.stdout).replace(str(port), "8700")
        documented = block_after("emulator:doctor-output", page)
        if os.environ.get("WEBCALL_WRITE_DOCS") == "1":
            marker = "<!-- emulator:doctor-output -->\n```text\n"
            EMULATOR_PAGE.write_text(page.replace(marker + documented, marker + printed, 1))
            documented = printed
        assert printed == documented, "docs/emulator.md's doctor output is out of date: run WEBCALL_WRITE_DOCS=1 pytest"
        assert "✖ agent 'support': agent_support has no published version" in printed
        assert "✖ agent 'sales' webhook: bound to webhook_02, not the plugin's webhook_01" in printed
        fixed = run(exports(session) + "\n" + block_after("emulator:fix-session", page))
        assert fixed.returncode == 0 and fixed.stdout.strip() == "the doctor found nothing wrong", (
            fixed.stdout + fixed.stderr
        )
        assert emulator.stop() == 0
