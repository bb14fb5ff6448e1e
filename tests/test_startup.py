"""Startup: agent checks, strictness, the embedded emulator, and mounting without touching the host."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

import webcall
import webcall.startup
from webcall import Agent, ConfigError, WebCallConfig
from webcall.emulator.server import EmulatorServer
from webcall.emulator.state import AgentVersion
from webcall.emulator.testing import EmulatorControl

from .conftest import MakeHost, runtime, without_defaults
from .hosting import ORIGIN, SESSION_SECRET
from .offers import OFFER


async def test_agent_checks_log_placeholders(
    make_host: MakeHost, emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    without_defaults(emulator, "agent_sales")
    _, handle = await make_host()
    assert runtime(handle).catalog.required_variables("sales") == {"name", "company"}
    assert any(
        "agent 'sales' is agent_sales" in r.getMessage() and "{{company}}" in r.getMessage()
        for r in log_records.records
    )


async def test_placeholders_with_defaults_need_no_value(make_host: MakeHost, emulator: EmulatorServer) -> None:
    emulator.state.agents["agent_sales"].versions[0].default_dynamic_variables = {"company": "your team"}
    _, handle = await make_host()
    assert runtime(handle).catalog.required_variables("sales") == {"name"}


async def test_missing_agent_is_logged_when_not_strict(
    make_host: MakeHost, log_records: pytest.LogCaptureFixture
) -> None:
    await make_host(agents={"ghost": Agent(id="agent_missing")})
    errors = [r.getMessage() for r in log_records.records if r.levelno == logging.ERROR]
    assert any("'ghost'" in e and "does not exist" in e for e in errors)


async def test_unpublished_version_fails_startup_when_strict(emulator: EmulatorServer) -> None:
    emulator.state.agents["agent_support"].versions.append(AgentVersion(version_number=2, is_published=False))
    host = web.Application()
    webcall.setup(
        host,
        WebCallConfig(
            api_key=emulator.api_key,
            base_url=emulator.base_url,
            strict_agents=True,
            agents={"support": Agent(id="agent_support", version=2)},
            session_secrets=(SESSION_SECRET,),
        ),
    )
    runner = web.AppRunner(host)
    with pytest.raises(ConfigError, match="agent_support version 2 is a draft"):
        await runner.setup()
    await runner.cleanup()


async def test_embedded_emulator_when_no_api_key(aiohttp_client: Any) -> None:
    host = web.Application()
    handle = webcall.setup(host, WebCallConfig(allowed_origins=(ORIGIN,)))
    client = await aiohttp_client(host)
    upstream = runtime(handle).upstream
    assert upstream.name == "emulator" and upstream.api_key.startswith("emu_")
    assert set(runtime(handle).catalog.aliases()) == {"sales", "support", "collections"}
    healthz = await (await client.get("/webcall/healthz")).json()
    assert healthz["upstream"] == "emulator" and healthz["agents"] == ["collections", "sales", "support"]
    response = await client.post(
        "/webcall/sessions",
        json={"offer": OFFER, "agent": "support", "variables": {"name": "Ana"}},
        headers={"Origin": ORIGIN},
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["answer"].startswith("v=0") and handle.media_origin not in await response.text()
    async with EmulatorControl(handle.media_origin) as control:
        record = await control.call(body["call_id"])
    assert record["metadata"] == {"name": "Ana"}


async def test_setup_only_adds_a_subapp(aiohttp_client: Any, emulator: EmulatorServer) -> None:
    @web.middleware
    async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    host = web.Application(middlewares=[host_middleware])
    before = (list(host.middlewares), len(host.cleanup_ctx), len(host.on_response_prepare))
    handle = webcall.setup(
        host,
        WebCallConfig(api_key=emulator.api_key, base_url=emulator.base_url, agents={"sales": Agent(id="agent_sales")}),
        prefix="/voice",
    )
    after = (list(host.middlewares), len(host.cleanup_ctx), len(host.on_response_prepare))
    assert before == after  # only add_subapp's own wiring of the sub-app's signals
    client = await aiohttp_client(host)
    assert (await client.get("/voice/healthz")).status == 200
    assert handle.url("sessions") == "/voice/sessions"
    assert webcall.handle_of(host) is handle and webcall.handle_of(host, "/voice") is handle


async def test_handle_of_finds_each_mounted_plugin(emulator: EmulatorServer) -> None:
    host = web.Application()
    config = WebCallConfig(api_key=emulator.api_key, base_url=emulator.base_url, agents={"sales": Agent(id="a_1")})
    first, second = webcall.setup(host, config, prefix="/one"), webcall.setup(host, config, prefix="/two")
    assert webcall.handle_of(host, "/one") is first and webcall.handle_of(host, "/two") is second
    assert webcall.handle_of(first.app) is first
    with pytest.raises(ConfigError, match="mounted /one, /two in this application: name the prefix"):
        webcall.handle_of(host)
    with pytest.raises(ConfigError, match="already mounted at '/one'"):
        webcall.setup(host, config, prefix="/one")
    with pytest.raises(ConfigError, match="mounted nowhere"):
        webcall.handle_of(web.Application())


@pytest.mark.parametrize("prefix", ["webcall", "/webcall/", "/"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        webcall.setup(web.Application(), WebCallConfig(), prefix=prefix)


async def test_host_api_before_start_says_what_to_do() -> None:
    handle = webcall.handle_of(webcall.create_app(WebCallConfig()))
    with pytest.raises(webcall.WebCallError, match="not started"):
        await handle.dead_letters()


# -- each agent's webhook binding, checked once the plugin's subscription is registered --------------------------------
HOOK_SECRET = "binding-test-webhook-secret"


def binding_config(emulator: EmulatorServer, *, strict: bool) -> WebCallConfig:
    return WebCallConfig(
        api_key=emulator.api_key,
        base_url=emulator.base_url,
        agents={"sales": Agent(id="agent_sales"), "support": Agent(id="agent_support")},
        session_secrets=(SESSION_SECRET,),
        webhook_secrets=(HOOK_SECRET,),
        public_url="https://shop.example",
        strict_agents=strict,
    )


async def start(config: WebCallConfig) -> web.AppRunner:
    host = web.Application()
    webcall.setup(host, config)
    runner = web.AppRunner(host)
    await runner.setup()
    return runner


def plugin_webhook(emulator: EmulatorServer) -> str:
    (hook,) = [h for h in emulator.state.webhooks.values() if h.url == "https://shop.example/webcall/webhooks"]
    return hook.id


async def test_agents_bound_to_the_plugins_webhook_are_reported(
    emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    runner = await start(binding_config(emulator, strict=True))  # registers the subscription
    await runner.cleanup()
    hook_id = plugin_webhook(emulator)
    for agent in emulator.state.agents.values():
        agent.webhook_id = hook_id
    log_records.clear()
    runner = await start(binding_config(emulator, strict=True))
    await runner.cleanup()
    lines = [r.getMessage() for r in log_records.records]
    assert any(f"agent 'sales' webhook: bound to {hook_id}" in line for line in lines), lines
    assert not [r for r in log_records.records if r.levelno >= logging.WARNING and "agent" in r.getMessage()]


async def test_an_agent_bound_to_no_webhook_is_a_warning(
    emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    runner = await start(binding_config(emulator, strict=True))  # not fatal, even when strict
    await runner.cleanup()
    warnings = [r.getMessage() for r in log_records.records if r.levelno == logging.WARNING]
    assert any("agent 'sales' webhook: bound to no webhook" in w and "choose webhook_" in w for w in warnings)


@pytest.mark.parametrize("fault", ["elsewhere", "turned_off"])
async def test_an_agent_that_sends_its_events_elsewhere_fails_when_strict(
    emulator: EmulatorServer, log_records: pytest.LogCaptureFixture, fault: str
) -> None:
    sales = emulator.state.agents["agent_sales"]
    if fault == "elsewhere":
        sales.webhook_id = "webhook_someone_else"
        expected = "webhook: bound to webhook_someone_else, not the plugin's"
    else:
        sales.webhook_enabled = False
        expected = "webhook: turned off: its calls send no events; fix: in DialNexa's dashboard, turn on Enable Webhook"
    runner = await start(binding_config(emulator, strict=False))
    await runner.cleanup()
    errors = [r.getMessage() for r in log_records.records if r.levelno == logging.ERROR]
    assert any("agent 'sales'" in e and expected in e for e in errors), errors
    host = web.Application()
    webcall.setup(host, binding_config(emulator, strict=True))
    strict_runner = web.AppRunner(host)
    with pytest.raises(ConfigError, match="strict_agents is on"):
        await strict_runner.setup()
    await strict_runner.cleanup()


async def test_the_quickstart_agents_need_no_variables(
    aiohttp_client: Any, log_records: pytest.LogCaptureFixture
) -> None:
    """The embedded emulator's three agents give every placeholder a default: a visitor who says nothing is greeted
    without a placeholder, and the plugin has nothing to warn about."""
    host = web.Application()
    webcall.setup(host, WebCallConfig(allowed_origins=(ORIGIN,)))
    client = await aiohttp_client(host)
    for alias in ("sales", "support", "collections"):
        response = await client.post(
            "/webcall/sessions", json={"offer": OFFER, "agent": alias}, headers={"Origin": ORIGIN}
        )
        assert response.status == 201, await response.text()
    warnings = [r.getMessage() for r in log_records.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "placeholder" in w], warnings


async def test_placeholders_with_defaults_are_still_named_at_startup(
    make_host: MakeHost, log_records: pytest.LogCaptureFixture
) -> None:
    """Every placeholder of the emulator's support agent has a default at DialNexa: the start-up line once said its
    messages used "no variables" although they say {{name}}."""
    await make_host()
    lines = [r.getMessage() for r in log_records.records if "agent 'support' is agent_support" in r.getMessage()]
    assert lines == ["webcall: agent 'support' is agent_support; its messages use {{name}}, each with a default"]


async def test_a_placeholder_without_any_default_is_named_as_such(
    make_host: MakeHost, emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    emulator.state.agents["agent_sales"].versions[0].default_dynamic_variables = {"company": "your team"}
    await make_host(agents={"sales": Agent(id="agent_sales")})
    (line,) = [r.getMessage() for r in log_records.records if "agent 'sales' is agent_sales" in r.getMessage()]
    assert line.endswith(
        "its messages use {{company}}, {{name}}; without a default: {{name}} (from the variables hook or the visitor)"
    ), line


async def test_an_agent_whose_only_version_is_a_draft_is_named_in_plain_words(emulator: EmulatorServer) -> None:
    emulator.state.agents["agent_support"].versions[0].is_published = False
    host = web.Application()
    webcall.setup(
        host,
        WebCallConfig(
            api_key=emulator.api_key,
            base_url=emulator.base_url,
            strict_agents=True,
            agents={"support": Agent(id="agent_support")},
            session_secrets=(SESSION_SECRET,),
        ),
    )
    runner = web.AppRunner(host)
    with pytest.raises(ConfigError) as raised:
        await runner.setup()
    await runner.cleanup()
    assert "agent 'support': agent_support has no published version (its only version, 1, is a draft)" in str(
        raised.value
    ), raised.value


# -- what cannot work: refused in one sentence when strict, said once otherwise --------------------------------------
def account_config(emulator: EmulatorServer, **overrides: Any) -> WebCallConfig:
    settings: dict[str, Any] = {
        "api_key": emulator.api_key,
        "base_url": emulator.base_url,
        "agents": {"sales": Agent(id="agent_sales")},
        "session_secrets": (SESSION_SECRET,),
        "upstream_timeout": 2.0,
    }
    settings.update(overrides)
    return WebCallConfig(**settings)


async def start_strict(config: WebCallConfig) -> ConfigError:
    """The error a strict plugin's start-up fails with."""
    host = web.Application()
    webcall.setup(host, config)
    runner = web.AppRunner(host)
    try:
        with pytest.raises(ConfigError) as raised:
            await runner.setup()
    finally:
        await runner.cleanup()
    return raised.value


@pytest.fixture
def quick_startup_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webcall.startup, "STARTUP_RETRY_DELAYS", (0.05, 0.05))


async def test_a_key_dialnexa_refuses_fails_a_strict_start_in_dialnexas_words(emulator: EmulatorServer) -> None:
    error = await start_strict(account_config(emulator, api_key="emu_test:wrong", strict_agents=True))
    assert str(error) == (
        "DialNexa refused the key (401: API key is missing or invalid): set DIALNEXA_API_KEY to a key of this "
        "workspace, as keyID:secret from DialNexa's dashboard."
    )


async def test_a_key_without_access_is_not_called_refused(emulator: EmulatorServer, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/user-webhooks", kind="status", status=403, count=0)
    error = await start_strict(account_config(emulator, strict_agents=True))
    assert str(error).startswith(
        "DialNexa denied the key access (403: You do not have permission to access this resource): use a key of the "
        "workspace that owns the agents"
    ), error


async def test_a_refused_key_is_said_once_when_not_strict(
    make_host: MakeHost, log_records: pytest.LogCaptureFixture
) -> None:
    await make_host(api_key="emu_test:wrong", public_url="https://shop.example", webhook_secrets=("h" * 20,))
    problems = [r.getMessage() for r in log_records.records if r.levelno >= logging.WARNING]
    assert problems == [
        "webcall: DialNexa refused the key (401: API key is missing or invalid): set DIALNEXA_API_KEY to a key of "
        "this workspace, as keyID:secret from DialNexa's dashboard."
    ], problems


async def test_an_unreachable_dialnexa_fails_a_strict_start_after_three_tries(
    quick_startup_retries: None, log_records: pytest.LogCaptureFixture
) -> None:
    config = WebCallConfig(
        api_key="kid:secret",
        base_url="http://127.0.0.1:9/v1",
        agents={"sales": Agent(id="agent_sales")},
        strict_agents=True,
    )
    error = await start_strict(config)
    assert str(error).startswith(
        "DialNexa at http://127.0.0.1:9/v1 could not be reached in 3 tries over about 1 s (cannot connect to DialNexa"
    ), error
    assert str(error).endswith("check DIALNEXA_BASE_URL and the network, then start again.")
    retries = [r.getMessage() for r in log_records.records if "trying again in" in r.getMessage()]
    assert len(retries) == 2, retries


async def test_a_slow_network_at_startup_is_not_a_refusal(
    emulator: EmulatorServer, control: EmulatorControl, quick_startup_retries: None
) -> None:
    """DialNexa failing twice (timeouts, 503) and then answering: the strict start goes on."""
    await control.add_fault(route="GET /v1/user-webhooks", kind="status", status=503, count=6)
    runner = await start(account_config(emulator, strict_agents=True))
    await runner.cleanup()


async def test_a_webhook_dialnexa_will_not_register_fails_a_strict_start(
    emulator: EmulatorServer, control: EmulatorControl
) -> None:
    await control.add_fault(route="POST /v1/user-webhooks", kind="status", status=400, message="url is not allowed")
    config = account_config(
        emulator, strict_agents=True, public_url="https://shop.example", webhook_secrets=("h" * 20,)
    )
    error = await start_strict(config)
    assert str(error).startswith(
        "DialNexa did not register the webhook https://shop.example/webcall/webhooks (DialNexa answered 400 "
        "(POST /user-webhooks): url is not allowed): check WEBCALL_PUBLIC_URL"
    ), error


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({}, "WEBCALL_PUBLIC_URL and WEBCALL_WEBHOOK_SECRETS are not set"),
        ({"public_url": "https://shop.example"}, "WEBCALL_WEBHOOK_SECRETS is not set"),
        ({"webhook_secrets": ("h" * 20,)}, "WEBCALL_PUBLIC_URL is not set"),
    ],
)
async def test_running_without_webhooks_is_said_once_with_the_fix(
    make_host: MakeHost, log_records: pytest.LogCaptureFixture, settings: dict[str, Any], missing: str
) -> None:
    """The README's production line once had no WEBCALL_WEBHOOK_SECRETS: no webhook was registered, and nothing said
    so until DialNexa's deliveries were refused."""
    await make_host(strict_agents=True, **settings)
    warnings = [r.getMessage() for r in log_records.records if "no DialNexa webhook is registered" in r.getMessage()]
    assert len(warnings) == 1 and f"({missing})" in warnings[0], warnings
    assert "DialNexa sends this site no call events" in warnings[0]
    for name in missing.removesuffix(" are not set").removesuffix(" is not set").split(" and "):
        assert f"Set {name} to" in warnings[0] or f"and {name} to" in warnings[0], warnings[0]
    assert not emulator_webhooks(log_records)


def emulator_webhooks(log_records: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log_records.records if "DialNexa webhook webhook_" in r.getMessage()]


async def test_a_refused_subscription_name_is_left_out_at_startup(
    make_host: MakeHost, emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    await make_host(
        strict_agents=True,
        public_url="https://shop.example",
        webhook_secrets=("h" * 20,),
        webhook_events=("call.completed", "call.failed", "call.answered"),
    )
    (hook,) = emulator.state.webhooks.values()
    assert hook.events == ["call.completed", "call.failed"]
    assert any("DialNexa refused the subscription name(s) call.answered" in r.getMessage() for r in log_records.records)
