"""Prometheus metrics (optional extra ``metrics``): what an operator needs to see the plugin working.

Without ``prometheus-client`` installed every recording call is a no-op and ``GET {prefix}/metrics`` answers 404.
Each app has its own registry, so several mounted plugins (or tests) never collide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import prometheus_client as prom
except ImportError:  # the extra is not installed
    prom = None  # type: ignore[assignment]


class Metrics:
    def __init__(self, streams: Callable[[], int]) -> None:
        self.enabled = prom is not None
        if prom is None:
            return
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = prom.Counter("webcall_sessions_minted", "Web-call sessions handed out", ["agent"], registry=r)
        self.callbacks = prom.Counter("webcall_callbacks_requested", "Phone call-backs placed", ["agent"], registry=r)
        self.refused = prom.Counter(
            "webcall_requests_refused",
            "Requests answered with an error, by route and machine code",
            ["route", "code"],
            registry=r,
        )
        self.upstream = prom.Histogram(
            "webcall_upstream_seconds",
            "DialNexa request latency (each attempt), by route and outcome",
            ["route", "outcome"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.webhooks = prom.Counter(
            "webcall_webhooks",
            "Webhook deliveries by result (accepted, duplicate, rejected, invalid)",
            ["result"],
            registry=r,
        )
        self.outbox = prom.Gauge("webcall_outbox_depth", "Events waiting for host callbacks", registry=r)
        self.dead = prom.Gauge("webcall_dead_letters", "Callback deliveries that gave up", registry=r)
        self.callback_failures = prom.Counter(
            "webcall_callback_failures", "Host callback attempts that failed or timed out", registry=r
        )
        self.quality_calls = prom.Counter(
            "webcall_call_quality_reports",
            "Quality summaries from browsers, by the candidate type and protocol the call used",
            ["candidate", "protocol"],
            registry=r,
        )
        self.round_trip = prom.Histogram(
            "webcall_call_rtt_seconds",
            "Mean round-trip time of each call, as the browser measured it",
            registry=r,
            buckets=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2),
        )
        self.jitter = prom.Histogram(
            "webcall_call_jitter_seconds",
            "Mean jitter of the agent's audio at the browser, per call",
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2),
        )
        self.loss = prom.Histogram(
            "webcall_call_packet_loss_ratio",
            "Share of audio packets lost per call, by direction (in: agent to visitor; out: visitor to agent)",
            ["direction"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
        )
        self.connect = prom.Histogram(
            "webcall_call_connect_seconds",
            "From the start of the peer connection to connected, per call",
            ["candidate"],
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
        )
        open_streams = prom.Gauge("webcall_sse_streams_open", "Browser event streams open now", registry=r)
        open_streams.set_function(lambda: float(streams()))

    def minted(self, agent: str) -> None:
        if self.enabled:
            self.sessions.labels(agent).inc()

    def callback(self, agent: str) -> None:
        if self.enabled:
            self.callbacks.labels(agent).inc()

    def refusal(self, route: str, code: str) -> None:
        if self.enabled:
            self.refused.labels(route, code).inc()

    def upstream_call(self, route: str, outcome: str, seconds: float) -> None:
        if self.enabled:
            self.upstream.labels(route, outcome).observe(seconds)

    def webhook(self, result: str) -> None:
        if self.enabled:
            self.webhooks.labels(result).inc()

    def callback_failed(self) -> None:
        if self.enabled:
            self.callback_failures.inc()

    def depths(self, outbox: int, dead: int) -> None:
        if self.enabled:
            self.outbox.set(outbox)
            self.dead.set(dead)

    def call_quality(self, summary: dict[str, Any]) -> None:
        """One browser's quality summary (:mod:`webcall.quality`)."""
        if not self.enabled:
            return
        candidate = summary.get("candidate", "unknown")
        self.quality_calls.labels(candidate, summary.get("protocol", "unknown")).inc()
        if "rtt_ms" in summary:
            self.round_trip.observe(summary["rtt_ms"] / 1000)
        if "jitter_ms" in summary:
            self.jitter.observe(summary["jitter_ms"] / 1000)
        for direction in ("in", "out"):
            if f"loss_{direction}" in summary:
                self.loss.labels(direction).observe(summary[f"loss_{direction}"])
        if "connect_ms" in summary:
            self.connect.labels(candidate).observe(summary["connect_ms"] / 1000)

    def exposition(self) -> tuple[bytes, str]:
        assert prom is not None
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST


def route_label(request: Any) -> str:
    resource = getattr(request.match_info.route, "resource", None)
    canonical = resource.canonical if resource is not None else "unmatched"
    return f"{request.method} {canonical}"
