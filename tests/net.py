"""Network helpers shared by the tests and the benches."""

from __future__ import annotations

import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RecordingServer:
    """An HTTP server on a loopback port that answers every POST with 200 and records its path (a stranger's server:
    where nothing of ours may ever be sent). A context manager: serves from entry to exit."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Record(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """End a server process the test started: SIGTERM, then SIGKILL if it has not gone within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
