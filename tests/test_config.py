"""Configuration: validated on construction, read from the environment, secrets kept out of repr."""

from __future__ import annotations

from dataclasses import fields

import pytest

from webcall import Agent, ConfigError, WebCallConfig
from webcall.config import parse_agents

SECRET = "s" * 40


def test_repr_hides_secrets() -> None:
    config = WebCallConfig(
        api_key="key_123:very-secret",
        session_secrets=(SECRET,),
        webhook_secrets=("w" * 20,),
        agents={"sales": Agent(id="agent_1")},
    )
    text = repr(config)
    assert "very-secret" not in text and SECRET not in text and "w" * 20 not in text
    assert "agent_1" in text


def test_from_env_reads_everything() -> None:
    env = {
        "DIALNEXA_API_KEY": "kid:secret",
        "DIALNEXA_BASE_URL": "https://api.dialnexa.com/v1",
        "WEBCALL_AGENTS": "sales=agent_a@2+name+company, support=agent_b",
        "WEBCALL_ALLOWED_ORIGINS": "https://Shop.example.com, http://localhost:8080",
        "WEBCALL_SESSION_SECRET": f"{SECRET},{'t' * 32}",
        "WEBCALL_WEBHOOK_SECRETS": "whsec_aaaaaaaaaaaaaaaa",
        "WEBCALL_RATE_LIMIT": "5/30",
        "WEBCALL_MAX_CONCURRENT_CALLS": "7",
        "WEBCALL_MAX_CALL_SECONDS": "300",
        "WEBCALL_TRUSTED_PROXIES": "1",
        "WEBCALL_STRICT_AGENTS": "true",
        "WEBCALL_PUBLIC_URL": "https://shop.example.com",
    }
    config = WebCallConfig.from_env(env)
    assert config.api_key == "kid:secret"
    assert config.agents["sales"] == Agent(id="agent_a", version=2, visitor_variables=frozenset({"name", "company"}))
    assert config.agents["support"].version is None
    assert config.allowed_origins == ("https://shop.example.com", "http://localhost:8080")
    assert config.session_secrets == (SECRET, "t" * 32)
    assert (config.rate_limit, config.rate_limit_window) == (5, 30.0)
    assert config.max_concurrent_calls == 7 and config.max_call_seconds == 300
    assert config.trusted_proxies == 1 and config.strict_agents is True
    assert not config.uses_emulator


def test_no_api_key_means_the_emulator() -> None:
    config = WebCallConfig.from_env({})
    assert config.uses_emulator
    assert config.generated_session_secret and len(config.session_secrets[0]) >= 32


def test_the_generated_secret_flag_is_declared_and_set_only_by_the_config() -> None:
    """The flag is a dataclass field that no caller sets: neither the constructor nor ``from_env`` takes it (the
    latter refuses it as it refuses any unknown option), and the generated secret stays out of ``repr``."""
    flag = next(f for f in fields(WebCallConfig) if f.name == "_generated_secret")
    assert not flag.init and not flag.repr and not flag.compare
    generated = WebCallConfig()
    assert generated.generated_session_secret and generated.session_secrets[0] not in repr(generated)
    assert not WebCallConfig(session_secrets=(SECRET,)).generated_session_secret
    with pytest.raises(TypeError):
        WebCallConfig(_generated_secret=True)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"Unknown configuration option.*_generated_secret"):
        WebCallConfig.from_env({}, _generated_secret=True)


def test_hooks_can_be_passed_to_from_env() -> None:
    def variables(request: object, alias: str, agent: Agent) -> dict[str, str]:
        return {}

    config = WebCallConfig.from_env({}, variables=variables)
    assert config.variables is variables


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DIALNEXA_BASE_URL": "https://api.dialnexa.com"}, "retired its unversioned API"),
        ({"DIALNEXA_BASE_URL": "api.dialnexa.com/v1"}, "absolute URL"),
        ({"WEBCALL_SESSION_SECRET": "short"}, "at least 32 bytes"),
        ({"WEBCALL_AGENTS": "sales"}, "must look like"),
        ({"WEBCALL_AGENTS": "sales=agent_a@x"}, "must be a number"),
        ({"WEBCALL_RATE_LIMIT": "ten"}, "'10/60'"),
        ({"WEBCALL_MAX_CONCURRENT_CALLS": "lots"}, "must be a number"),
        ({"WEBCALL_MAX_CONCURRENT_CALLS": "0"}, "greater than 0"),
        ({"WEBCALL_ALLOWED_ORIGINS": "shop.example.com"}, "scheme://host"),
        ({"WEBCALL_STRICT_AGENTS": "maybe"}, "true or false"),
        ({"WEBCALL_STORE": "postgres://x"}, "Redis URL"),
        ({"WEBCALL_STORE": "redis://127.0.0.1:6379/0"}, "set WEBCALL_SESSION_SECRET .* on every worker"),
        ({"DIALNEXA_API_KEY": "kid:secret"}, "No agents configured"),
    ],
)
def test_bad_settings_fail_with_a_sentence(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        WebCallConfig.from_env(env)


def test_redis_store_with_a_shared_session_secret() -> None:
    secret = "shared-by-every-worker-0123456789abcdef"
    config = WebCallConfig.from_env({"WEBCALL_STORE": "redis://127.0.0.1:6379/0", "WEBCALL_SESSION_SECRET": secret})
    assert config.session_secrets == (secret,) and not config.generated_session_secret


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="Unknown configuration"):
        WebCallConfig.from_env({}, colour="blue")


def test_bad_agent_alias_and_variable_names() -> None:
    with pytest.raises(ConfigError, match="alias"):
        WebCallConfig(agents={"sales desk": Agent(id="agent_1")})
    with pytest.raises(ConfigError, match="visitor variable"):
        Agent(id="agent_1", visitor_variables=frozenset({"first name"}))
    with pytest.raises(ConfigError, match="version"):
        Agent(id="agent_1", version=0)


def test_agent_defaults_in_code_and_from_the_environment() -> None:
    agents = parse_agents("sales=agent_x@2+name;name=there;company=your team,support=agent_y")
    assert dict(agents["sales"].defaults) == {"name": "there", "company": "your team"}
    assert agents["sales"].visitor_variables == {"name"} and agents["sales"].version == 2
    assert dict(agents["support"].defaults) == {}
    with pytest.raises(ConfigError, match="';name=value'"):
        parse_agents("sales=agent_x;there")
    with pytest.raises(ConfigError, match="not a valid variable name"):
        Agent(id="agent_x", defaults={"first name": "there"})
    with pytest.raises(ConfigError, match="must be a string"):
        Agent(id="agent_x", defaults={"age": 3})  # type: ignore[dict-item]
    given = {"name": "there"}
    agent = Agent(id="agent_x", defaults=given)
    given["name"] = "changed"
    assert agent.defaults["name"] == "there", "the agent keeps its own copy"
    hash(agent)  # still usable as a dict key


def test_from_env_reads_the_limits_a_standalone_service_needs() -> None:
    config = WebCallConfig.from_env(
        {
            "WEBCALL_UPSTREAM_DEADLINE": "7.5",
            "WEBCALL_MAX_BODY_BYTES": "4096",
            "WEBCALL_MAX_VISITOR_VALUE_LENGTH": "80",
            "WEBCALL_CALLBACK_RATE_LIMIT": "2/600",
        }
    )
    assert config.upstream_deadline == 7.5 and config.max_body_bytes == 4096
    assert config.max_visitor_value_length == 80
    assert (config.callback_rate_limit, config.callback_rate_window) == (2, 600.0)
    assert WebCallConfig.from_env({"WEBCALL_CALLBACK_RATE_LIMIT": "5"}).callback_rate_window == 3600.0
    with pytest.raises(ConfigError, match="WEBCALL_CALLBACK_RATE_LIMIT"):
        WebCallConfig.from_env({"WEBCALL_CALLBACK_RATE_LIMIT": "often"})


@pytest.mark.parametrize(
    ("env", "setting", "kind"),
    [
        ({"DIALNEXA_API_KEY": "kid:sec\nret"}, "DIALNEXA_API_KEY", "a line break"),
        ({"DIALNEXA_API_KEY": "kid:sec\r\nret"}, "DIALNEXA_API_KEY", "a line break"),
        ({"DIALNEXA_API_KEY": "Bearer kid:secret"}, "DIALNEXA_API_KEY", "a space"),
        ({"DIALNEXA_API_KEY": "kid:se\tcret"}, "DIALNEXA_API_KEY", "whitespace"),
        ({"DIALNEXA_API_KEY": "kid:se\u200bcret"}, "DIALNEXA_API_KEY", "an invisible or control character"),
        ({"DIALNEXA_API_KEY": "kid:se\x00cret"}, "DIALNEXA_API_KEY", "an invisible or control character"),
        ({"DIALNEXA_BASE_URL": "https://api.dialnexa.com\n/v1"}, "DIALNEXA_BASE_URL", "a line break"),
        ({"WEBCALL_PUBLIC_URL": "https://shop.exa\nmple.com"}, "WEBCALL_PUBLIC_URL", "a line break"),
        ({"WEBCALL_ALLOWED_ORIGINS": "https://shop.exa\tmple.com"}, "WEBCALL_ALLOWED_ORIGINS", "whitespace"),
        ({"WEBCALL_STORE": "redis://127.0.0.1:6379/0\r\n"}, None, None),  # the ends are trimmed: accepted
        ({"WEBCALL_STORE": "redis://127.0.0.1:63\n79/0"}, "WEBCALL_STORE", "a line break"),
        ({"WEBCALL_WEB_CALL_PATH": "/web calls"}, "WEBCALL_WEB_CALL_PATH", "a space"),
    ],
)
def test_a_key_or_url_with_a_line_break_or_whitespace_is_refused_in_one_sentence(
    env: dict[str, str], setting: str | None, kind: str | None
) -> None:
    """A key pasted with a line break once reached the Authorization header and crashed serve, doctor and
    register-webhook with ``ValueError: Forbidden control character detected in headers``."""
    env = {"WEBCALL_AGENTS": "sales=agent_a", "WEBCALL_SESSION_SECRET": SECRET, **env}
    if setting is None:
        WebCallConfig.from_env(env)
        return
    with pytest.raises(ConfigError) as raised:
        WebCallConfig.from_env(env)
    message = str(raised.value)
    assert setting in message and f"contains {kind} (character " in message, message
    assert message.count(". ") == 0 and message.endswith("."), "one sentence"
    assert all(value not in message for value in env.values()), "no value is echoed (a key is a secret)"


def test_a_key_with_a_line_break_given_in_code_is_refused_too() -> None:
    with pytest.raises(ConfigError, match=r"api_key \(DIALNEXA_API_KEY\) contains a line break"):
        WebCallConfig(api_key="kid:secret\n", agents={"sales": Agent(id="agent_a")})


@pytest.mark.parametrize(
    ("spec", "suggestion"),
    [
        ("sales=agent_a;support=agent_b", "sales=agent_a,support=agent_b"),
        ("sales=agent_a+name;name=there;support=agent_b@2+company", "sales=agent_a+name;name=there,support=agent_b@2"),
    ],
)
def test_a_semicolon_typed_for_a_comma_between_agents_is_refused(spec: str, suggestion: str) -> None:
    """``;`` starts a default value, so ``sales=agent_a;support=agent_b`` once made ``support`` a variable of sales
    whose default was ``agent_b``, and the support agent silently did not exist."""
    with pytest.raises(ConfigError, match="looks like another agent") as raised:
        parse_agents(spec)
    assert "separate agents with ','" in str(raised.value) and suggestion in str(raised.value)


def test_a_default_that_merely_mentions_an_agent_is_still_a_default() -> None:
    agents = parse_agents("sales=agent_a;greeting=the agent_b desk;team=agent")
    assert dict(agents["sales"].defaults) == {"greeting": "the agent_b desk", "team": "agent"}


def test_the_default_subscription_is_what_dialnexa_documents() -> None:
    """DialNexa's OpenAPI shows ``call.completed`` and ``call.failed``; ``call.no_answer`` only an older page does, so
    it is not subscribed by default (``WEBCALL_WEBHOOK_EVENTS`` can add it)."""
    assert WebCallConfig().webhook_events == ("call.completed", "call.failed")
    added = WebCallConfig.from_env({"WEBCALL_WEBHOOK_EVENTS": "call.completed,call.failed,call.no_answer"})
    assert added.webhook_events == ("call.completed", "call.failed", "call.no_answer")
