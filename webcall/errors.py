"""Every exception webcall raises, and the one JSON error body its routes answer with.

::

    WebCallError
    ├── ConfigError                  the configuration cannot work (raised at construction or startup)
    ├── TokenError                   a plugin token is missing, malformed, expired, or for another audience or call
    │   └── TokenReused                  a call's token was already used to hang up
    ├── Refusal                      a request refused for a reason its sender can act on (``code``, sentence)
    │   ├── TicketRefused                a call ticket cannot be used (``ticket_invalid``, ``ticket_expired``)
    │   └── CallRefused                  the call desk refuses what was asked of a call
    ├── UpstreamFailed               DialNexa failed while the call desk was doing something (``doing``, ``cause``)
    ├── WebhookSignatureError        a webhook's signature header is missing or wrong
    ├── StoreUnavailable             the state store cannot be reached
    ├── DialNexaError                anything that went wrong talking to DialNexa
    │   ├── DialNexaTransportError   no usable HTTP answer
    │   │   ├── DialNexaConnectError     the request provably never left (connect failed)
    │   │   └── DialNexaTimeout          no answer in time (the request may have been processed)
    │   └── DialNexaAPIError         DialNexa answered with an error status; carries its statusCode, message, error
    │       ├── DialNexaBadRequest       400
    │       ├── DialNexaAuthError        401, 403
    │       ├── DialNexaPaymentRequired  402
    │       ├── DialNexaNotFound         404
    │       ├── DialNexaConflict         409
    │       ├── DialNexaRateLimited      429 (``retry_after`` in seconds when given)
    │       └── DialNexaServerError      5xx
    └── HTTPProblem                  an answer to a client of the plugin: status, machine code, sentence

Routes answer every error with one body, shaped like DialNexa's own error object plus a machine code::

    {"statusCode": 429, "error": "Too Many Requests", "message": "human sentence", "code": "rate_limited"}

The call desk and the ticket verifier know nothing of HTTP: they raise :class:`TokenError`, :class:`Refusal` and
:class:`UpstreamFailed`, and the routes' error handling (``webcall.views``) answers each with its status in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web


class WebCallError(Exception):
    """Base of every exception raised by webcall."""


class ConfigError(WebCallError):
    """The configuration cannot work; the message says what to set."""


class TokenError(WebCallError):
    """A plugin token is missing, malformed, expired, meant for another audience or already used."""


class TokenReused(TokenError):
    """A call's token was already used to hang up (it hangs up once)."""


class Refusal(WebCallError):
    """A request refused for a reason its sender can act on: ``code`` names the reason, the message says it in a
    sentence for the visitor, ``retry_after`` (seconds) says when trying again may work."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class TicketRefused(Refusal):
    """A call ticket cannot be used: ``ticket_invalid`` (the message says what is wrong with it) or
    ``ticket_expired``."""


class CallRefused(Refusal):
    """The call desk refuses what was asked of a call: ``call_expired`` (its audio took too long to connect; start
    again), ``invalid_offer`` (DialNexa refused the browser's SDP offer), ``not_found`` (the call has no media session)
    or ``precondition_failed`` (``If-Match`` names an ETag the media session no longer has)."""


class UpstreamFailed(WebCallError):
    """DialNexa failed (``cause``) while the call desk was ``doing`` something for a request, e.g. "starting the
    call"."""

    def __init__(self, cause: DialNexaError, *, doing: str) -> None:
        super().__init__(f"{cause} (while {doing})")
        self.cause = cause
        self.doing = doing


class WebhookSignatureError(WebCallError):
    """A webhook delivery's signature is missing, malformed or does not match any configured secret."""


class StoreUnavailable(WebCallError):
    """The state store (e.g. Redis) cannot be reached."""


class DialNexaError(WebCallError):
    """Something went wrong talking to the DialNexa API."""

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = path


class DialNexaTransportError(DialNexaError):
    """No usable HTTP answer came back."""


class DialNexaConnectError(DialNexaTransportError):
    """The connection could not be made: the request provably never reached DialNexa."""


class DialNexaTimeout(DialNexaTransportError):
    """No answer in time; the request may or may not have been processed."""


class DialNexaAPIError(DialNexaError):
    """DialNexa answered with an error status and (usually) its error object."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error: str = "",
        body: Any = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, method=method, path=path)
        self.status_code = status_code
        self.error = error
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method else ""
        return f"DialNexa answered {self.status_code}{where}: {self.message}"


class DialNexaBadRequest(DialNexaAPIError):
    """400: DialNexa rejected the request's content."""


class DialNexaAuthError(DialNexaAPIError):
    """401 or 403: the API key is missing, invalid, or lacks access."""


class DialNexaPaymentRequired(DialNexaAPIError):
    """402: the DialNexa wallet balance is too low."""


class DialNexaNotFound(DialNexaAPIError):
    """404: the agent, call or webhook does not exist."""


class DialNexaConflict(DialNexaAPIError):
    """409: the resource is not in a state that allows this."""


class DialNexaRateLimited(DialNexaAPIError):
    """429: too many requests; ``retry_after`` says how long DialNexa asked to wait."""


class DialNexaServerError(DialNexaAPIError):
    """5xx: DialNexa failed."""


_API_ERRORS: dict[int, type[DialNexaAPIError]] = {
    400: DialNexaBadRequest,
    401: DialNexaAuthError,
    402: DialNexaPaymentRequired,
    403: DialNexaAuthError,
    404: DialNexaNotFound,
    409: DialNexaConflict,
    429: DialNexaRateLimited,
}


def api_error_class(status: int) -> type[DialNexaAPIError]:
    if status >= 500:
        return DialNexaServerError
    return _API_ERRORS.get(status, DialNexaAPIError)


class HTTPProblem(WebCallError):
    """An error answer to a client of the plugin, rendered by :func:`problem_response`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.headers = dict(headers or {})


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The plugin's one error shape."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return {"statusCode": status, "error": reason, "message": message, "code": code}


def problem_response(problem: HTTPProblem) -> web.Response:
    headers = {"Cache-Control": "no-store", **problem.headers}
    if problem.retry_after is not None and math.isfinite(problem.retry_after):
        headers["Retry-After"] = str(max(1, min(86400, round(problem.retry_after + 0.499))))
    return web.Response(
        status=problem.status,
        text=json.dumps(error_body(problem.status, problem.code, problem.message)),
        content_type="application/json",
        headers=headers,
    )


def upstream_problem(err: DialNexaError, *, doing: str) -> HTTPProblem:
    """Map a DialNexa failure to the plugin's answer: 502/503/504 with a sentence, never the upstream body."""
    if isinstance(err, DialNexaTimeout):
        return HTTPProblem(
            504, "upstream_timeout", f"The voice service did not answer in time while {doing}.", retry_after=5
        )
    if isinstance(err, DialNexaConnectError | DialNexaTransportError):
        return HTTPProblem(
            503, "upstream_unavailable", f"The voice service cannot be reached while {doing}.", retry_after=5
        )
    if isinstance(err, DialNexaRateLimited) or (isinstance(err, DialNexaServerError) and err.status_code == 503):
        # 429, or 503 Service Unavailable: DialNexa is full or briefly down, and says so (usually with Retry-After)
        return HTTPProblem(
            503,
            "upstream_busy",
            f"The voice service is busy; try again shortly ({doing}).",
            retry_after=err.retry_after or 5,
        )
    if isinstance(err, DialNexaServerError):
        return HTTPProblem(502, "upstream_error", f"The voice service failed while {doing}.", retry_after=5)
    return HTTPProblem(502, "upstream_rejected", f"The voice service refused the request while {doing}.")
