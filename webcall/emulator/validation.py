"""Request validation in the style of DialNexa's API (class-validator): every problem is one sentence in a list.

A :class:`BodyValidator` reads one JSON object, field by field; each reader returns the value (or None when absent or
invalid) and collects sentences such as ``"agent_id must be a string"`` or ``"property foo should not exist"``;
:meth:`BodyValidator.finish` raises one 400 :class:`ApiError` carrying all of them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from webcall.emulator.errors import ApiError

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_MISSING = object()


async def read_json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object body; an empty body is ``{}`` when ``optional``."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "Request body must be a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"Request body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


class BodyValidator:
    def __init__(self, body: dict[str, Any], allowed: Iterable[str]) -> None:
        self.body = body
        self.errors: list[str] = [f"property {key} should not exist" for key in body if key not in set(allowed)]

    def _get(self, name: str, required: bool) -> Any:
        value = self.body.get(name)
        if value is None:
            if required:
                self.errors.append(f"{name} should not be empty")
            return _MISSING
        return value

    def present(self, name: str) -> bool:
        return self.body.get(name) is not None

    def string(self, name: str, *, required: bool = False, max_length: int | None = None) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            if required:
                self.errors.append(f"{name} must be a string")
            return None
        if not isinstance(value, str):
            self.errors.append(f"{name} must be a string")
            return None
        if not value.strip():
            self.errors.append(f"{name} should not be empty")
            return None
        if max_length is not None and len(value) > max_length:
            self.errors.append(f"{name} must be shorter than or equal to {max_length} characters")
            return None
        return value

    def integer(self, name: str, *, required: bool = False, minimum: int | None = None) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            if required:
                self.errors.append(f"{name} must be an integer number")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.append(f"{name} must be an integer number")
            return None
        if minimum is not None and value < minimum:
            self.errors.append(f"{name} must not be less than {minimum}")
            return None
        return value

    def number(self, name: str, *, required: bool = False, minimum: float | None = None) -> float | None:
        value = self._get(name, required)
        if value is _MISSING:
            if required:
                self.errors.append(f"{name} must be a number")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.errors.append(f"{name} must be a finite number")
            return None
        if minimum is not None and value < minimum:
            self.errors.append(f"{name} must not be less than {minimum:g}")
            return None
        return float(value)

    def boolean(self, name: str, *, required: bool = False) -> bool | None:
        value = self._get(name, required)
        if value is _MISSING:
            if required:
                self.errors.append(f"{name} must be a boolean value")
            return None
        if not isinstance(value, bool):
            self.errors.append(f"{name} must be a boolean value")
            return None
        return value

    def obj(self, name: str, *, required: bool = False, max_keys: int | None = None) -> dict[str, Any] | None:
        value = self._get(name, required)
        if value is _MISSING:
            if required:
                self.errors.append(f"{name} must be an object")
            return None
        if not isinstance(value, dict):
            self.errors.append(f"{name} must be an object")
            return None
        if max_keys is not None and len(value) > max_keys:
            self.errors.append(f"{name} must not have more than {max_keys} top-level keys")
            return None
        return value

    def string_list(self, name: str, *, required: bool = False) -> list[str] | None:
        value = self._get(name, required)
        if value is _MISSING:
            if required:
                self.errors.append(f"{name} must be an array")
            return None
        if not isinstance(value, list):
            self.errors.append(f"{name} must be an array")
            return None
        if not value:
            self.errors.append(f"{name} should not be empty")
            return None
        if not all(isinstance(item, str) and item.strip() for item in value):
            self.errors.append(f"each value in {name} must be a non-empty string")
            return None
        return list(value)

    def url(self, name: str, *, required: bool = False, max_length: int = 2048) -> str | None:
        value = self.string(name, required=required, max_length=max_length)
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid or any(c.isspace() for c in value):
            self.errors.append(f"{name} must be a valid URL")
            return None
        return value

    def phone_number(self, name: str, *, required: bool = False) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            if required:
                self.errors.append(f"{name} must be a valid E.164 phone number")
            return None
        if not isinstance(value, str) or not E164.fullmatch(value):
            self.errors.append(f"{name} must be a valid E.164 phone number")
            return None
        return value

    def one_of(self, name: str, choices: Iterable[str], *, required: bool = False) -> str | None:
        options = list(choices)
        value = self.string(name, required=required)
        if value is not None and value not in options:
            self.errors.append(f"{name} must be one of the following values: {', '.join(options)}")
            return None
        return value

    def finish(self) -> None:
        if self.errors:
            raise ApiError(400, self.errors)
