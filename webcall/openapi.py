"""The plugin's own HTTP surface as OpenAPI 3.1 (served at ``GET {prefix}/openapi.json``)."""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ref("Error"), "An error in the plugin's one shape.") for code in codes}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["statusCode", "error", "message", "code"],
        "additionalProperties": False,
        "properties": {
            "statusCode": {"type": "integer", "minimum": 400, "maximum": 599},
            "error": _STR,
            "message": _STR,
            "code": {"type": "string", "pattern": "^[a-z_]+$"},
        },
    },
    "Variables": {
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {"type": "string", "maxLength": 1000},
    },
    "SessionRequest": {
        "type": "object",
        "required": ["agent", "offer"],
        "properties": {
            "agent": {"type": "string", "minLength": 1, "maxLength": 64, "description": "An agent alias."},
            "offer": {
                "type": "string",
                "pattern": "^v=0",
                "description": "The SDP offer of the browser's peer connection (one audio section, at most the "
                "events data channel; ICE credentials, a SHA-256 DTLS fingerprint and a=setup; at most 16 KiB), "
                "checked before anything is created (400 invalid_offer); the plugin hands it to DialNexa's WHIP "
                "endpoint with at most 16 usable ICE candidates.",
            },
            "variables": _ref("Variables"),
            "bot_token": {"type": "string", "maxLength": 4096},
            "ticket": {
                "type": "string",
                "maxLength": 4096,
                "description": "A call ticket signed by the site's backend (HS256 JWT; see the README).",
            },
            "quality_report": {
                "type": "boolean",
                "description": "The browser will send a quality summary: `call.ended` waits up to 2 s for it.",
            },
        },
    },
    "QualitySummary": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "candidate": {
                "enum": ["host", "srflx", "prflx", "relay"],
                "description": "The selected pair's local side.",
            },
            "protocol": {
                "enum": ["udp", "tcp", "tls"],
                "description": "To the TURN server for relay, else the pair's.",
            },
            "connect_ms": {"type": "integer", "minimum": 0, "maximum": 120000},
            "duration_s": {"type": "integer", "minimum": 0, "maximum": 86400},
            "samples": {"type": "integer", "minimum": 0, "maximum": 50000},
            "rtt_ms": {"type": "integer", "minimum": 0, "maximum": 60000, "description": "Mean round trip."},
            "rtt_max_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
            "jitter_ms": {"type": "integer", "minimum": 0, "maximum": 60000, "description": "Mean, agent's audio."},
            "loss_in": {"type": "number", "minimum": 0, "maximum": 1, "description": "Agent → visitor packets lost."},
            "loss_out": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "Visitor → agent."},
            "weak_s": {"type": "integer", "minimum": 0, "maximum": 86400, "description": "Seconds marked weak."},
        },
    },
    "Session": {
        "type": "object",
        "required": [
            "call_id",
            "agent",
            "answer",
            "token",
            "token_expires_at",
            "max_call_seconds",
            "media_url",
            "end_url",
            "events_url",
            "callbacks_url",
        ],
        "additionalProperties": False,
        "properties": {
            "call_id": _STR,
            "agent": _STR,
            "answer": {"type": "string", "description": "DialNexa's SDP answer to the offer."},
            "token": {"type": "string", "description": "The plugin's token for this call's routes."},
            "token_expires_at": _TIME,
            "max_call_seconds": {"type": "integer", "minimum": 1},
            "media_url": {"type": "string", "description": "The call's media resource (also in Location)."},
            "end_url": _STR,
            "events_url": _STR,
            "callbacks_url": _STR,
            "quality_url": {"type": "string", "description": "Where the browser sends its quality summary."},
            "media_etag": {
                "type": ["string", "null"],
                "description": "The media resource's ETag (also in ETag): If-Match of trickle-ICE PATCHes.",
            },
            "ice_servers": {
                "type": "array",
                "items": {"type": "object"},
                "description": "DialNexa's own ICE servers for this call (also as Link rel=ice-server headers).",
            },
        },
    },
    "CallbackRequest": {
        "type": "object",
        "required": ["agent", "phone_number", "consent"],
        "properties": {
            "agent": {"type": "string", "minLength": 1, "maxLength": 64},
            "phone_number": {
                "type": "string",
                "description": "International form, e.g. +14155550123 (spaces, dots, dashes and brackets allowed).",
            },
            "consent": {"const": True},
            "variables": _ref("Variables"),
            "bot_token": {"type": "string", "maxLength": 4096},
            "ticket": {
                "type": "string",
                "maxLength": 4096,
                "description": "A call ticket signed by the site's backend (HS256 JWT; see the README).",
            },
        },
    },
    "IceServers": {
        "type": "object",
        "required": ["ice_servers", "ttl"],
        "additionalProperties": False,
        "properties": {
            "ice_servers": {
                "type": "array",
                "maxItems": 8,
                "items": {
                    "type": "object",
                    "required": ["urls"],
                    "additionalProperties": False,
                    "properties": {
                        "urls": {"type": "array", "items": {"type": "string", "pattern": "^(stun|stuns|turn|turns):"}},
                        "username": {"type": "string"},
                        "credential": {"type": "string"},
                    },
                },
                "description": "RTCIceServer objects for `new RTCPeerConnection({iceServers})`.",
            },
            "ttl": {
                "type": ["integer", "null"],
                "description": "Seconds the TURN credentials last (null: nothing expires).",
            },
        },
    },
    "CallbackCountries": {
        "type": "object",
        "required": ["countries"],
        "additionalProperties": False,
        "properties": {
            "countries": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Z]{2}$"},
                "description": "ISO 3166 alpha-2 codes of the countries call-backs may ring (empty: they are off).",
            }
        },
    },
    "CallbackAccepted": {
        "type": "object",
        "required": ["callback_id", "status"],
        "properties": {"callback_id": _STR, "status": {"const": "requested"}},
    },
    "Ended": {
        "type": "object",
        "required": ["call_id", "status"],
        "properties": {"call_id": _STR, "status": {"type": ["string", "null"]}},
    },
    "WebhookAck": {
        "type": "object",
        "required": ["received", "duplicate"],
        "properties": {"received": {"const": True}, "duplicate": {"type": "boolean"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ok", "unavailable"]},
            "store": _STR,
            "upstream": _STR,
            "agents": {"type": "array", "items": _STR},
            "active_calls": {"type": "integer"},
            "reason": {**_STR, "description": "Why the store cannot be used (only when unavailable)."},
        },
    },
    "DeliveryEnvelope": {
        "type": "object",
        "required": ["event_type", "payload"],
        "properties": {"event_type": _STR, "payload": {"type": "object"}},
    },
}

_ORIGIN_HEADER = {
    "name": "Origin",
    "in": "header",
    "required": True,
    "schema": _STR,
    "description": "Must be an allowed origin.",
}
_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
_BEARER: list[dict[str, list[str]]] = [{"callToken": []}]


def spec(prefix: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webcall",
            "version": "1",
            "description": "Browser voice calls to DialNexa agents: session minting, events, hang-up, call-backs.",
        },
        "servers": [{"url": prefix}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "callToken": {"type": "http", "scheme": "bearer", "description": "The `token` of a session."},
                "webhookSignature": {"type": "apiKey", "in": "header", "name": "x-nexa-signature"},
            },
        },
        "paths": {
            "/sessions": {
                "post": {
                    "operationId": "createSession",
                    "summary": "Start one web call for this visitor: its SDP offer in, DialNexa's SDP answer out",
                    "parameters": [_ORIGIN_HEADER],
                    "requestBody": {"required": True, **_json(_ref("SessionRequest"), "Which agent to call.")},
                    "responses": {
                        "201": _json(_ref("Session"), "The SDP answer and the call's routes."),
                        **_errors(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
                    },
                }
            },
            "/sessions/{call_id}/media": {
                "patch": {
                    "operationId": "updateMedia",
                    "summary": "ICE restart or trickled candidates (RFC 9725), relayed to DialNexa's WHIP resource",
                    "parameters": [
                        _CALL_ID,
                        {"name": "If-Match", "in": "header", "required": True, "schema": _STR},
                    ],
                    "security": _BEARER,
                    "requestBody": {
                        "required": True,
                        "content": {"application/trickle-ice-sdpfrag": {"schema": _STR}},
                    },
                    "responses": {
                        "200": {
                            "description": "The media server's ICE answer fragment.",
                            "content": {"application/trickle-ice-sdpfrag": {"schema": _STR}},
                        },
                        "204": {"description": "The candidates were taken."},
                        **_errors(401, 404, 405, 412, 413, 415, 428, 501, 502, 503, 504),
                    },
                },
                "delete": {
                    "operationId": "deleteMedia",
                    "summary": "End the call's media (the visitor hung up)",
                    "parameters": [_CALL_ID],
                    "security": _BEARER,
                    "responses": {
                        "200": {"description": "The media session ended."},
                        **_errors(401, 404, 502, 503, 504),
                    },
                },
            },
            "/sessions/{call_id}/end": {
                "post": {
                    "operationId": "endSession",
                    "summary": "Hang the call up",
                    "parameters": [_CALL_ID],
                    "security": _BEARER,
                    "responses": {"200": _json(_ref("Ended"), "The call ended."), **_errors(401, 502, 503, 504)},
                }
            },
            "/sessions/{call_id}/quality": {
                "post": {
                    "operationId": "reportQuality",
                    "summary": "How the call sounded, measured by the browser; attached to `call.ended` as `quality`",
                    "parameters": [_CALL_ID],
                    "security": _BEARER,
                    "requestBody": {"required": True, **_json(_ref("QualitySummary"), "One summary per call.")},
                    "responses": {
                        "204": {"description": "Kept (a second summary of the same call is ignored)."},
                        **_errors(400, 401, 404, 413, 415, 503),
                    },
                }
            },
            "/sessions/{call_id}/events": {
                "get": {
                    "operationId": "sessionEvents",
                    "summary": "Server-sent events of this call (token in the query; Last-Event-ID replays)",
                    "parameters": [
                        _CALL_ID,
                        {"name": "token", "in": "query", "required": True, "schema": _STR},
                        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _STR},
                    ],
                    "responses": {
                        "200": {"description": "An event stream.", "content": {"text/event-stream": {"schema": _STR}}},
                        **_errors(401, 503),
                    },
                }
            },
            "/callbacks": {
                "post": {
                    "operationId": "requestCallback",
                    "summary": "Ask the agent to call a phone number",
                    "description": (
                        "Refused with `403 callback_not_allowed` (before anything is counted or asked of DialNexa) "
                        "while no country is configured, and for numbers the site never rings: satellite and other "
                        "non-geographic ranges, premium-rate, shared-cost and other costly kinds, NANP 900/976, and "
                        "countries not configured. `400 invalid_phone_number` when it is not a phone number; "
                        "`429 rate_limited` with `Retry-After` when the number's, its country's or the site's "
                        "hourly call-back budget is spent."
                    ),
                    "parameters": [_ORIGIN_HEADER],
                    "requestBody": {"required": True, **_json(_ref("CallbackRequest"), "Number and consent.")},
                    "responses": {
                        "202": _json(_ref("CallbackAccepted"), "The call is being placed."),
                        **_errors(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
                    },
                },
                "get": {
                    "operationId": "callbackCountries",
                    "summary": "The countries call-backs may ring (none: call-backs are off)",
                    "responses": {"200": _json(_ref("CallbackCountries"), "The configured countries.")},
                },
            },
            "/ice-servers": {
                "post": {
                    "operationId": "iceServers",
                    "summary": "STUN/TURN servers for the browser's peer connection, asked for before the click",
                    "description": (
                        "The configured servers, TURN credentials minted now from `WEBCALL_TURN_SECRET` (the TURN "
                        "REST convention: username `<expiry>:<id>`, credential base64(HMAC-SHA1(secret, username))), "
                        "and what the host's `ice_servers_hook` returns. Origin-checked; `429 rate_limited` after 30 "
                        "requests per address per rate-limit window; `Cache-Control: no-store`."
                    ),
                    "parameters": [_ORIGIN_HEADER],
                    "responses": {
                        "200": _json(_ref("IceServers"), "ICE servers, and how long TURN credentials last."),
                        **_errors(403, 429, 500, 503),
                    },
                }
            },
            "/webhooks": {
                "post": {
                    "operationId": "receiveWebhook",
                    "summary": "DialNexa's signed webhook deliveries",
                    "security": [{"webhookSignature": []}],
                    "requestBody": {"required": True, **_json(_ref("DeliveryEnvelope"), "A call event.")},
                    "responses": {
                        "200": _json(_ref("WebhookAck"), "Stored before this answer."),
                        **_errors(400, 401, 413, 503),
                    },
                }
            },
            "/widget.js": {
                "get": {
                    "operationId": "widget",
                    "summary": "The widget script",
                    "responses": {
                        "200": {"description": "JavaScript.", "content": {"text/javascript": {"schema": _STR}}},
                        "304": {"description": "Not modified."},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "responses": {"200": _json(_ref("Health"), "Ready."), "503": _json(_ref("Health"), "Not ready.")},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (when enabled)",
                    "responses": {
                        "200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": _STR}}},
                        **_errors(404),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "responses": {"200": _json({"type": "object"}, "This document.")},
                }
            },
        },
    }
