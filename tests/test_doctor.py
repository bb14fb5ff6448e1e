"""``python -m webcall doctor`` against the emulator: a healthy account, and each misconfiguration it names.

The reports of the healthy configuration and of the broken ones are written to ``docs/doctor.md`` by
:func:`test_the_documented_reports_are_current` (with ids and ports made stable), so the docs show real output.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from webcall import Agent, WebCallConfig
from webcall.dialnexa import DialNexaClient
from webcall.doctor import FAILED, OK, WARNING, Check, diagnose, failed
from webcall.emulator.server import EmulatorServer
from webcall.emulator.state import AgentVersion
from webcall.emulator.testing import EmulatorControl
from webcall.subscription import ManagedSubscription

from .hosting import SESSION_SECRET

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "docs" / "doctor.md"
PUBLIC_URL = "https://shop.example"
HOOK_SECRET = "doctor-test-webhook-secret"
AGENTS = {
    "sales": Agent(id="agent_sales", visitor_variables=frozenset({"name"})),
    "support": Agent(id="agent_support", defaults={"name": "there"}),
}


def config(emulator: EmulatorServer, **overrides: Any) -> WebCallConfig:
    settings: dict[str, Any] = {
        "api_key": emulator.api_key,
        "base_url": emulator.base_url,
        "agents": AGENTS,
        "session_secrets": (SESSION_SECRET,),
        "webhook_secrets": (HOOK_SECRET,),
        "public_url": PUBLIC_URL,
    }
    settings.update(overrides)
    return WebCallConfig(**settings)


async def register(emulator: EmulatorServer, *, bind: bool = True) -> str:
    """What the plugin does at startup (the webhook), and what the host does in DialNexa's dashboard (binding)."""
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        hook_id = await ManagedSubscription(client, (HOOK_SECRET,), ("call.completed", "call.failed")).ensure(
            PUBLIC_URL + "/webcall/webhooks"
        )
    if bind:
        for agent in emulator.state.agents.values():
            agent.webhook_id = hook_id
    return hook_id


def outcomes(checks: list[Check]) -> dict[str, str]:
    return {check.name: check.outcome for check in checks}


def find(checks: list[Check], name: str) -> Check:
    return next(check for check in checks if check.name == name)


async def test_a_healthy_configuration_passes_every_check(emulator: EmulatorServer) -> None:
    await register(emulator)
    checks = await diagnose(config(emulator))
    assert outcomes(checks) == {
        "base URL": OK,
        "API key": OK,
        "agent 'sales'": OK,
        "agent 'support'": OK,
        "public URL": OK,
        "webhook": OK,
        "webhook events": OK,
        "agent 'sales' webhook": OK,
        "agent 'support' webhook": OK,
        "store": OK,
        "call tickets": OK,
        "web calls": OK,
    }
    assert not failed(checks)
    assert not emulator.state.calls, "the doctor placed no call"


async def test_call_tickets_accepted_but_not_required_is_a_warning(emulator: EmulatorServer) -> None:
    await register(emulator)
    secrets = ("doctor-ticket-secret-0123456789-abcdefgh", "doctor-ticket-secret-previous-0123456789")
    accepted = find(await diagnose(config(emulator, ticket_secrets=secrets[:1])), "call tickets")
    assert accepted.outcome == WARNING and "WEBCALL_REQUIRE_TICKET=true" in accepted.fix
    required = find(await diagnose(config(emulator, ticket_secrets=secrets, require_ticket=True)), "call tickets")
    assert required.outcome == OK and "2 secrets" in required.detail


async def test_a_refused_key_stops_at_the_key(emulator: EmulatorServer) -> None:
    checks = await diagnose(config(emulator, api_key="emu_test:wrong"))
    assert outcomes(checks) == {"base URL": OK, "API key": FAILED}
    key = find(checks, "API key")
    assert key.detail == "DialNexa refused the key (401: API key is missing or invalid)"
    assert "DIALNEXA_API_KEY" in key.fix


async def test_a_key_without_access_is_not_called_refused_and_keeps_dialnexas_words(
    emulator: EmulatorServer, control: EmulatorControl
) -> None:
    await control.add_fault(route="GET /v1/user-webhooks", kind="status", status=403, message="KYC is not complete")
    checks = await diagnose(config(emulator))
    assert outcomes(checks) == {"base URL": OK, "API key": FAILED}
    key = find(checks, "API key")
    assert key.detail == "DialNexa denied the key access (403: KYC is not complete)"
    assert "refused" not in key.detail and "workspace that owns the agents" in key.fix


async def test_an_unreachable_base_url_fails_on_the_base_url_line(emulator: EmulatorServer) -> None:
    """It once showed "✔ base URL" and then "✖ API key … (ConnectError)": the key was never the problem."""
    checks = await diagnose(config(emulator, base_url="http://127.0.0.1:9/v1", upstream_deadline=1.0))
    assert outcomes(checks) == {"base URL": FAILED}
    (base,) = checks
    assert base.detail == "http://127.0.0.1:9/v1 cannot be reached: cannot connect to DialNexa (Connection refused)"
    assert "DIALNEXA_BASE_URL" in base.fix


async def test_a_base_url_that_is_not_dialnexas_api(emulator: EmulatorServer) -> None:
    checks = await diagnose(config(emulator, base_url=emulator.origin + "/api/v1"))
    (base,) = checks
    assert base.outcome == FAILED and base.detail.endswith(
        "answered 404 to GET /user-webhooks (Cannot GET /api/v1/user-webhooks)"
    )
    assert base.fix == "set DIALNEXA_BASE_URL to DialNexa's API, https://api.dialnexa.com/v1"


async def test_dialnexa_failing_is_named_on_the_base_url_line(
    emulator: EmulatorServer, control: EmulatorControl
) -> None:
    await control.add_fault(route="GET /v1/user-webhooks", kind="status", status=500, count=0)
    (base,) = await diagnose(config(emulator, upstream_deadline=1.0))
    assert base.outcome == FAILED and base.detail.endswith("failed (500: Internal server error)")


async def test_a_missing_agent_and_an_unpublished_version(emulator: EmulatorServer) -> None:
    await register(emulator)
    emulator.state.agents["agent_support"].versions = [AgentVersion(version_number=1, is_published=False)]
    agents = {"ghost": Agent(id="agent_ghost"), "support": Agent(id="agent_support")}
    checks = await diagnose(config(emulator, agents=agents))
    assert find(checks, "agent 'ghost'").outcome == FAILED and "does not exist" in find(checks, "agent 'ghost'").detail
    support = find(checks, "agent 'support'")
    assert support.outcome == FAILED and "no published version" in support.detail and "publish" in support.fix
    assert failed(checks)


async def test_an_agent_whose_only_version_is_a_draft_is_told_to_publish_it(emulator: EmulatorServer) -> None:
    """It once suggested Agent(version=None), which the agent already was."""
    emulator.state.agents["agent_support"].versions[0].is_published = False
    support = find(await diagnose(config(emulator)), "agent 'support'")
    assert support.outcome == FAILED
    assert support.detail == "agent_support has no published version (its only version, 1, is a draft)"
    assert support.fix == (
        'publish one in DialNexa\'s dashboard (or PATCH /v1/agents/agent_support with {"version_number": 1, '
        '"is_published": true})'
    )
    assert "version=None" not in support.fix


async def test_an_agent_pinned_to_a_draft_or_a_missing_version(emulator: EmulatorServer) -> None:
    emulator.state.agents["agent_support"].versions.append(AgentVersion(version_number=2, is_published=False))
    agents = {"draft": Agent(id="agent_support", version=2), "missing": Agent(id="agent_support", version=7)}
    checks = await diagnose(config(emulator, agents=agents))
    draft, missing = find(checks, "agent 'draft'"), find(checks, "agent 'missing'")
    assert draft.detail == "agent_support version 2 is a draft"
    assert draft.fix.endswith("or drop @2 (Agent(version=None)) to use the latest published, version 1")
    assert missing.detail == "agent_support has no version 7 (its versions are 1, 2)"
    assert missing.fix == "drop @7 (Agent(version=None)) to use the latest published, version 1"


async def test_a_placeholder_nobody_fills_is_a_warning(emulator: EmulatorServer) -> None:
    await register(emulator)
    emulator.state.agents["agent_sales"].versions[0].default_dynamic_variables = {}
    checks = await diagnose(config(emulator))
    sales = find(checks, "agent 'sales'")
    assert sales.outcome == WARNING and "{{company}}" in sales.detail and "{{name}}" not in sales.detail
    assert "Agent(defaults=" in sales.fix and not failed(checks)


async def test_no_webhook_registered(emulator: EmulatorServer) -> None:
    checks = await diagnose(config(emulator))
    webhook = find(checks, "webhook")
    assert webhook.outcome == FAILED and "no DialNexa webhook points at" in webhook.detail
    assert "register-webhook" in webhook.fix


async def test_an_inactive_webhook_with_undocumented_names(emulator: EmulatorServer) -> None:
    hook_id = await register(emulator)
    emulator.state.webhooks[hook_id].is_active = False
    emulator.state.webhooks[hook_id].events = ["call_ended"]  # as an older plugin registered it
    checks = await diagnose(config(emulator))
    webhook, events = find(checks, "webhook"), find(checks, "webhook events")
    assert webhook.outcome == FAILED and webhook.detail.endswith(": it is inactive")
    assert events.outcome == FAILED and "names DialNexa does not document (call_ended)" in events.detail


async def test_events_dialnexa_refused_fail_the_doctor(emulator: EmulatorServer) -> None:
    """WEBCALL_WEBHOOK_EVENTS naming a name DialNexa refuses: registered without it, and the doctor says so (it once
    passed with exit 0)."""
    names = ("call.completed", "call.failed", "call.answered")
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        subscription = ManagedSubscription(client, (HOOK_SECRET,), names)
        await subscription.ensure(PUBLIC_URL + "/webcall/webhooks")
    assert subscription.refused == ("call.answered",)
    checks = await diagnose(config(emulator, webhook_events=names))
    events = find(checks, "webhook events")
    assert events.outcome == FAILED and failed(checks)
    assert events.detail == (
        "call.answered (WEBCALL_WEBHOOK_EVENTS) is not in the subscription: DialNexa refuses names it does not "
        "document; it has call.completed, call.failed"
    )
    assert (
        events.fix
        == "remove call.answered from WEBCALL_WEBHOOK_EVENTS; DialNexa documents call.completed and call.failed"
    )
    assert find(checks, "webhook").outcome == OK


async def test_a_documented_name_missing_from_the_subscription(emulator: EmulatorServer) -> None:
    await register(emulator)
    events = find(
        await diagnose(config(emulator, webhook_events=("call.completed", "call.no_answer"))), "webhook events"
    )
    assert events.outcome == FAILED and events.detail.startswith("call.no_answer (WEBCALL_WEBHOOK_EVENTS) is not in")
    assert events.fix.startswith("run python -m webcall register-webhook")


@pytest.mark.parametrize("fault", ["elsewhere", "turned_off", "unbound"])
async def test_an_agent_whose_events_go_elsewhere(emulator: EmulatorServer, fault: str) -> None:
    hook_id = await register(emulator)
    sales = emulator.state.agents["agent_sales"]
    if fault == "elsewhere":
        sales.webhook_id = "webhook_other"
    elif fault == "turned_off":
        sales.webhook_enabled = False
    else:
        sales.webhook_id = None
    binding = find(await diagnose(config(emulator)), "agent 'sales' webhook")
    assert binding.outcome == (WARNING if fault == "unbound" else FAILED), binding
    assert hook_id in binding.fix and "Enable Webhook" in binding.fix


async def test_a_wrong_web_call_path(emulator: EmulatorServer) -> None:
    await register(emulator)
    calls = find(await diagnose(config(emulator, web_call_path="/webcalls")), "web calls")
    assert calls.outcome == FAILED and "POST /webcalls does not exist" in calls.detail
    assert "WEBCALL_WEB_CALL_PATH" in calls.fix


async def test_public_url_over_plain_http(emulator: EmulatorServer) -> None:
    checks = await diagnose(config(emulator, public_url="http://shop.example"))
    assert find(checks, "public URL").outcome == WARNING
    checks = await diagnose(config(emulator, public_url="http://127.0.0.1:8080"))
    assert find(checks, "public URL").outcome == OK
    checks = await diagnose(config(emulator, public_url=None))
    assert find(checks, "public URL").outcome == FAILED and "WEBCALL_PUBLIC_URL" in find(checks, "public URL").fix


async def test_redis_that_does_not_answer(emulator: EmulatorServer) -> None:
    await register(emulator)
    store = find(await diagnose(config(emulator, store="redis://127.0.0.1:9/0")), "store")
    assert store.outcome == FAILED and "Redis does not answer" in store.detail


async def test_a_test_call_only_when_asked(emulator: EmulatorServer) -> None:
    await register(emulator)
    calls = find(await diagnose(config(emulator), place_test_call=True), "web calls")
    assert calls.outcome == OK and "created and ended" in calls.detail
    (call,) = emulator.state.calls.values()
    assert call.type == "web" and call.ended


async def test_the_test_call_goes_to_an_agent_that_passed(emulator: EmulatorServer) -> None:
    """It once tried the first configured agent even when that agent had just failed its own check."""
    await register(emulator)
    agents = {"ghost": Agent(id="agent_ghost"), "support": Agent(id="agent_support")}
    checks = await diagnose(config(emulator, agents=agents), place_test_call=True)
    assert find(checks, "agent 'ghost'").outcome == FAILED
    calls = find(checks, "web calls")
    assert calls.outcome == OK and "to 'support' created and ended" in calls.detail
    (call,) = emulator.state.calls.values()
    assert call.agent_id == "agent_support"


async def test_no_test_call_when_no_agent_passed(emulator: EmulatorServer) -> None:
    await register(emulator)
    checks = await diagnose(config(emulator, agents={"ghost": Agent(id="agent_ghost")}), place_test_call=True)
    calls = find(checks, "web calls")
    assert calls.outcome == FAILED and "no agent passed its check" in calls.detail
    assert not emulator.state.calls


async def run_doctor(*arguments: str, env: dict[str, str]) -> tuple[int, str]:
    """``python -m webcall doctor`` in a subprocess (the emulator keeps answering meanwhile); exit status, stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "webcall", "doctor", *arguments, env=env, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def test_command_line_report_and_exit_status(emulator: EmulatorServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))}
    env.update(
        DIALNEXA_API_KEY=emulator.api_key,
        DIALNEXA_BASE_URL=emulator.base_url,
        WEBCALL_AGENTS="sales=agent_sales+name",
        WEBCALL_PUBLIC_URL=PUBLIC_URL,
        WEBCALL_WEBHOOK_SECRETS=HOOK_SECRET,
    )
    status, output = await run_doctor("--json", env=env)
    assert status == 1, output  # no webhook registered yet
    report = json.loads(output)
    assert report["ok"] is False
    assert {(c["name"], c["outcome"]) for c in report["checks"]} >= {("API key", OK), ("webhook", FAILED)}
    await register(emulator)
    status, output = await run_doctor(env=env)
    assert status == 0, output
    assert output.splitlines()[0].startswith("✔ base URL") and "✖" not in output
    env["DIALNEXA_BASE_URL"] = emulator.base_url.removesuffix("/v1")
    status, output = await run_doctor(env=env)
    assert status == 1 and output.startswith("✖ configuration:") and "/v1" in output


# -- the documented reports -------------------------------------------------------------------------------------------
def stable(text: str, emulator: EmulatorServer) -> str:
    """Ids and the emulator's port replaced by fixed stand-ins, so the documented report does not change per run."""
    text = text.replace(emulator.base_url, "https://api.dialnexa.com/v1")
    names: dict[str, str] = {}
    for kind in ("webhook", "call"):

        def rename(match: re.Match[str], kind: str = kind) -> str:
            return names.setdefault(match[0], f"{kind}_{len([n for n in names if n.startswith(kind)]) + 1:02d}")

        text = re.sub(rf"\b{kind}_[0-9a-f]{{14}}\b", rename, text)
    return text


async def documented_reports(emulator: EmulatorServer, control: EmulatorControl) -> str:
    sections: list[tuple[str, list[Check]]] = []
    unreachable = config(emulator, base_url="http://127.0.0.1:9/v1", upstream_deadline=1.0)
    sections.append(("DialNexa cannot be reached", await diagnose(unreachable)))
    sections.append(("A refused key", await diagnose(config(emulator, api_key="emu_test:wrong"))))
    await control.add_fault(
        route="GET /v1/user-webhooks",
        kind="status",
        status=403,
        message="You do not have permission to access this resource",
    )
    sections.append(("A key without access", await diagnose(config(emulator))))
    sections.append(
        (
            "No webhook registered yet, public URL over plain http",
            await diagnose(config(emulator, public_url="http://shop.example")),
        )
    )
    hook_id = await register(emulator)
    sections.append(("Healthy", await diagnose(config(emulator))))
    emulator.state.agents["agent_sales"].webhook_id = "webhook_0000000000000f"
    emulator.state.agents["agent_support"].webhook_enabled = False
    sections.append(("Agents sending their events elsewhere", await diagnose(config(emulator))))
    emulator.state.agents["agent_sales"].webhook_id = hook_id
    emulator.state.agents["agent_support"].webhook_enabled = True
    emulator.state.agents["agent_support"].versions[0].is_published = False
    agents = {**AGENTS, "ghost": Agent(id="agent_ghost")}
    sections.append(("A missing agent and an unpublished one", await diagnose(config(emulator, agents=agents))))
    emulator.state.agents["agent_support"].versions[0].is_published = True
    agents = {"ghost": Agent(id="agent_ghost"), **AGENTS}
    sections.append(
        (
            "A test call (--place-test-call) when the first agent fails",
            await diagnose(config(emulator, agents=agents), place_test_call=True),
        )
    )
    names = ("call.completed", "call.failed", "call.answered")
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        await ManagedSubscription(client, (HOOK_SECRET,), names).ensure(PUBLIC_URL + "/webcall/webhooks")
    sections.append(
        (
            "A name DialNexa refuses in WEBCALL_WEBHOOK_EVENTS (registered without it)",
            await diagnose(config(emulator, webhook_events=names)),
        )
    )
    sections.append(
        (
            "A wrong web-call path and Redis down",
            await diagnose(config(emulator, web_call_path="/webcalls", store="redis://127.0.0.1:9/0")),
        )
    )
    from .test_doctor_turn import TURN_NOTE, turn_reports  # it imports this module's helpers

    sections += await turn_reports(emulator)
    parts = [
        "# `python -m webcall doctor`: example reports\n",
        "Produced by `tests/test_doctor.py` against the emulator (ids and the address made stable), the TURN lines",
        "against a real coturn (ports, relayed addresses and times made stable). Exit status 0 only when no line is",
        "✖; `!` lines are warnings.\n",
    ]
    for title, checks in sections:
        status = 1 if failed(checks) else 0
        parts.append(f"## {title} (exit {status})\n\n```text\n" + "\n".join(c.line() for c in checks) + "\n```\n")
    parts.append(TURN_NOTE)
    return stable("\n".join(parts), emulator)


async def test_the_documented_reports_are_current(emulator: EmulatorServer, control: EmulatorControl) -> None:
    report = await documented_reports(emulator, control)
    if os.environ.get("WEBCALL_WRITE_DOCS") == "1" or not REPORTS.exists():
        REPORTS.write_text(report, encoding="utf-8")
    assert REPORTS.read_text(encoding="utf-8") == report, (
        "docs/doctor.md is out of date: run WEBCALL_WRITE_DOCS=1 python -m pytest tests/test_doctor.py"
    )


async def run_command(*arguments: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``python -m webcall ...`` in a subprocess: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webcall",
        *arguments,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_doctor_and_register_webhook_follow_webcall_prefix(emulator: EmulatorServer) -> None:
    """``serve`` with WEBCALL_PREFIX=/voice registers …/voice/webhooks: the doctor once looked for …/webcall/webhooks
    and its fix, register-webhook, made a second subscription at a URL that answers 404."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))}
    env.update(
        DIALNEXA_API_KEY=emulator.api_key,
        DIALNEXA_BASE_URL=emulator.base_url,
        WEBCALL_AGENTS="sales=agent_sales+name",
        WEBCALL_PUBLIC_URL=PUBLIC_URL,
        WEBCALL_WEBHOOK_SECRETS=HOOK_SECRET,
        WEBCALL_PREFIX="/voice",
    )
    status, stdout, stderr = await run_command("register-webhook", env=env)
    assert status == 0, stderr
    (hook,) = emulator.state.webhooks.values()
    assert hook.url == PUBLIC_URL + "/voice/webhooks"
    assert stdout.strip() == f"webcall: DialNexa webhook {hook.id} is registered"
    emulator.state.agents["agent_sales"].webhook_id = hook.id
    status, stdout, _ = await run_command("doctor", env=env)
    assert status == 0, stdout
    assert f"✔ webhook: {hook.id} -> {PUBLIC_URL}/voice/webhooks, active" in stdout.splitlines()
    status, _, _ = await run_command("register-webhook", env=env)
    assert status == 0 and len(emulator.state.webhooks) == 1, "no second subscription"
    status, stdout, _ = await run_command("doctor", "--prefix", "/webcall", env=env)
    assert status == 1 and f"no DialNexa webhook points at {PUBLIC_URL}/webcall/webhooks" in stdout
