"""DialNexa-shaped errors: ``{"statusCode": int, "message": str | [str], "error": "<HTTP reason>"}``.

:class:`ApiError` is raised by handlers; :func:`error_middleware` turns it, aiohttp's own HTTP exceptions (404, 405,
413 …) and any unexpected exception into that body, so no response ever carries a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("webcall.emulator")

# Headers of an aiohttp HTTPException that describe its plain-text body and must not be copied to the JSON one.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ApiError(Exception):
    """An error answer in DialNexa's shape; ``message`` is a list for validation errors."""

    def __init__(self, status: int, message: str | list[str], *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message if isinstance(message, str) else "; ".join(message))
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_body(status: int, message: str | list[str]) -> dict[str, object]:
    return {"statusCode": status, "message": message, "error": reason_phrase(status)}


def error_response(status: int, message: str | list[str], *, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    default_text = f"{exc.status}: {exc.reason}"
    custom = exc.text if exc.text and exc.text != default_text else None
    if custom is not None:
        message = custom
    elif exc.status == 404:
        message = f"Cannot {request.method} {request.path}"
    elif exc.status == 405:
        message = f"Method {request.method} is not allowed for {request.path}"
    else:
        message = exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
    return error_response(exc.status, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err.status, err.message, headers=err.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc)
    except ConnectionError:
        raise  # the client went away: there is nobody to answer
    except Exception:
        log.exception("emulator: unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Internal server error")
