"""``python -m webcall serve`` (or gunicorn) as a real process on a free port, for the service tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .net import free_port


@dataclass
class Service:
    """A running service: its base URL, the process, and everything it printed so far."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    exit_code: int | None = field(default=None)

    @property
    def origin(self) -> str:
        return self.url

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            printed = self.output()
            if text in printed:
                return printed
            time.sleep(0.1)
        raise AssertionError(f"the service never printed {text!r}:\n{self.output()}")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, as a process manager stops a service; the exit status once it has shut down."""
        if self.exit_code is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise AssertionError(f"the service did not stop within {timeout:g} s:\n{self.output()}") from None
        return self.exit_code


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any webcall or DialNexa setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_", "PYTHONPATH"))}
    env.update(settings)
    return env


@contextmanager
def running_service(
    command: list[str],
    workdir: Path,
    *,
    env: dict[str, str],
    port: int | None = None,
    ready_path: str = "/healthz",
    startup_timeout: float = 60,
) -> Iterator[Service]:
    """Start ``command`` (with ``{port}`` replaced) and yield once ``ready_path`` answers 200; SIGTERM it afterwards
    (SIGKILL if it lingers)."""
    port = port or free_port()
    log_path = workdir / f"service-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = Service(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the service exited with {process.returncode}:\n{service.output()}")
            try:
                if httpx.get(f"{service.url}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the service did not answer within {startup_timeout:g} s:\n{service.output()}")
            time.sleep(0.1)
        yield service
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
