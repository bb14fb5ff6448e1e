"""``python -m webcall serve``, ``doctor`` and ``register-webhook`` refuse what cannot work: one sentence, exit 1."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import EMULATOR_API_KEY
from .net import free_port
from .service import Service, clean_environment, running_service

pytestmark = pytest.mark.timeout(180)

KEY_WITH_A_LINE_BREAK = "emu_key:emu_\nsecret"


def webcall(*arguments: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webcall", *arguments], env=env, capture_output=True, text=True, timeout=timeout
    )


def account(emulator: Service, **settings: str) -> dict[str, str]:
    """The environment of a site on the emulator process's account."""
    defaults = {"DIALNEXA_API_KEY": EMULATOR_API_KEY, "DIALNEXA_BASE_URL": f"{emulator.url}/v1"}
    return clean_environment(**{**defaults, "WEBCALL_AGENTS": "sales=agent_sales", **settings})


def one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit status 1 and one sentence, the last line on stderr, without a traceback."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("webcall: ") and done.stderr.count(line) == 1, done.stderr
    return line


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["register-webhook"]])
def test_a_key_pasted_with_a_line_break_is_refused_in_one_sentence(command: list[str]) -> None:
    """It once crashed each command with ``ValueError: Forbidden control character detected in headers``."""
    env = clean_environment(DIALNEXA_API_KEY=KEY_WITH_A_LINE_BREAK, WEBCALL_AGENTS="sales=agent_sales")
    line = one_sentence(webcall(*command, env=env))
    assert line == (
        "webcall: api_key (DIALNEXA_API_KEY) contains a line break (character 13): set it again as one line with "
        "nothing around it."
    )


def test_the_doctor_reports_a_key_with_a_line_break_on_one_line() -> None:
    env = clean_environment(DIALNEXA_API_KEY=KEY_WITH_A_LINE_BREAK, WEBCALL_AGENTS="sales=agent_sales")
    done = webcall("doctor", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith("✖ configuration: api_key (DIALNEXA_API_KEY) contains a line break (character 13)")


def test_serve_refuses_a_key_dialnexa_refuses(emulator_process: Service) -> None:
    """It once warned about an agent check and then said "serving … with DialNexa"."""
    env = account(emulator_process, DIALNEXA_API_KEY="emu_key:not-the-secret")
    line = one_sentence(webcall("serve", "--port", str(free_port()), env=env, timeout=30))
    assert line == (
        "webcall: DialNexa refused the key (401: API key is missing or invalid): set DIALNEXA_API_KEY to a key of "
        "this workspace, as keyID:secret from DialNexa's dashboard."
    )


def test_register_webhook_refuses_a_key_dialnexa_refuses(emulator_process: Service) -> None:
    env = account(
        emulator_process,
        DIALNEXA_API_KEY="emu_key:not-the-secret",
        WEBCALL_PUBLIC_URL="https://shop.example",
        WEBCALL_WEBHOOK_SECRETS="cli-test-webhook-secret",
    )
    assert one_sentence(webcall("register-webhook", env=env)).startswith("webcall: DialNexa refused the key (401")


def test_serve_refuses_an_unreachable_dialnexa_after_about_ten_seconds() -> None:
    port = free_port()  # nothing listens there
    env = clean_environment(
        DIALNEXA_API_KEY=EMULATOR_API_KEY, DIALNEXA_BASE_URL=f"http://127.0.0.1:{port}/v1", WEBCALL_AGENTS="s=agent_s"
    )
    started = time.monotonic()
    done = webcall("serve", "--port", str(free_port()), env=env, timeout=60)
    took = time.monotonic() - started
    line = one_sentence(done)
    assert line.startswith(
        f"webcall: DialNexa at http://127.0.0.1:{port}/v1 could not be reached in 3 tries over about 9 s (cannot "
        "connect to DialNexa (Connection refused))"
    ), line
    assert 8 <= took < 30, took
    assert done.stderr.count("trying again in") == 2, done.stderr


def test_serve_refuses_a_webhook_dialnexa_will_not_register(emulator_process: Service) -> None:
    env = account(
        emulator_process,
        WEBCALL_PUBLIC_URL="https://shop.example",
        WEBCALL_WEBHOOK_SECRETS="cli-test-webhook-secret",
        WEBCALL_WEBHOOK_EVENTS="call.answered",
    )
    line = one_sentence(webcall("serve", "--port", str(free_port()), env=env, timeout=30))
    assert line.startswith(
        "webcall: DialNexa did not register the webhook https://shop.example/webcall/webhooks (DialNexa answered 400"
    ), line


def test_serve_without_webhook_secrets_says_once_what_does_not_work(emulator_process: Service, tmp_path: Path) -> None:
    """The README's production line had no WEBCALL_WEBHOOK_SECRETS, and nothing said so until deliveries failed."""
    env = account(emulator_process, WEBCALL_PUBLIC_URL="https://calls.example.com")
    command = [sys.executable, "-m", "webcall", "serve", "--port", "{port}"]
    with running_service(command, tmp_path, env=env) as service:
        printed = service.wait_for_output("webcall: serving on")
        assert "with DialNexa" in printed
        assert printed.count("no DialNexa webhook is registered (WEBCALL_WEBHOOK_SECRETS is not set)") == 1, printed
        assert "Set WEBCALL_WEBHOOK_SECRETS to a long random secret" in printed
        assert service.stop() == 0
