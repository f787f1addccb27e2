"""The one error shape of every endpoint: ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``.

``loc`` is the path to what is wrong, starting with where it was sent (``body``, ``query``, ``path``,
``header``); it is empty when nothing the client sent is at fault (503). ``RequestError`` is raised by
the plain classes; ``add_error_handlers`` turns it, ``UnavailableError``, FastAPI's validation errors and
Starlette's HTTP errors (unknown path, wrong method) into that shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

Loc = tuple[str | int, ...]
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_HTTP_LOCS: dict[int, tuple[Loc, str]] = {
    404: (("path",), "not_found"),
    405: (("method",), "method_not_allowed"),
}


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """What is wrong and where: ``loc`` is the path into the request, e.g. ``("body", "candidates", 3)``."""

    loc: Loc
    msg: str
    type: str = "value_error"


class RequestError(Exception):
    """A client error: the status code, the issues to report and any headers the answer needs."""

    def __init__(
        self, status: int, issues: Sequence[FieldIssue], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in issues))
        self.status = status
        self.issues = tuple(issues)
        self.headers = dict(headers or {})

    @classmethod
    def at(cls, loc: Loc, msg: str, kind: str = "value_error", status: int = 422) -> RequestError:
        """One issue at ``loc``."""
        return cls(status, [FieldIssue(loc, msg, kind)])

    def body(self) -> bytes:
        """The JSON answer."""
        return error_body(self.issues)


class UnavailableError(Exception):
    """The service cannot answer now (no model loaded, store down): a 503 with the reason."""


class ErrorItem(BaseModel):
    """One issue: where (``loc``), what (``msg``) and a machine-readable kind (``type``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer."""

    detail: list[ErrorItem]


def error_body(issues: Sequence[FieldIssue]) -> bytes:
    """``{"detail": [...]}`` for ``issues``."""
    return orjson.dumps({"detail": [issue_dict(issue) for issue in issues]})


def issue_dict(issue: FieldIssue) -> dict[str, Any]:
    """One issue as the JSON object of the error shape; any text is made encodable first (a field
    path or message may quote what the client sent: a lone surrogate must not turn a 422 into a 500)."""
    loc = [part if isinstance(part, int) else printable(str(part)) for part in issue.loc]
    return {"loc": loc, "msg": printable(str(issue.msg)), "type": printable(str(issue.type))}


def printable(text: str) -> str:
    """``text``, with NUL characters and lone surrogates written as escapes (``\\x00``, ``\\ud800``)."""
    if "\x00" not in text:
        try:
            text.encode()
            return text
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def body_loc(path: str) -> Loc:
    """A dotted path with indexes (``events[5].app_id``) as a ``loc`` into the body."""
    parts = (int(index) if index else name for name, index in _PATH_PART.findall(path))
    return ("body", *parts)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape."""

    async def request_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, RequestError)
        return _answer(error.status, error.issues, error.headers)

    async def unavailable(_: Request, error: Exception) -> Response:
        return _answer(503, [FieldIssue((), str(error), "unavailable")])

    async def validation_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        issues = [FieldIssue(tuple(e["loc"]), e["msg"], e["type"]) for e in error.errors()]
        return _answer(422, issues)

    async def http_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        loc, kind = _HTTP_LOCS.get(error.status_code, ((), "http_error"))
        return _answer(error.status_code, [FieldIssue(loc, str(error.detail), kind)], error.headers)

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(UnavailableError, unavailable)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


def _answer(status: int, issues: Sequence[FieldIssue], headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(issues), status_code=status, media_type="application/json", headers=headers)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all in the one shape."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "No bearer token",
    403: "Not an admin token",
    404: "Not found",
    409: "Conflicts with the stored state",
    413: "Body too large",
    415: "Not JSON (Content-Type), or an encoding other than gzip",
    422: "Invalid field (loc names it)",
    501: "Not available in this installation",
    503: "Not ready",
}
ERRORS = documented(400, 413, 415, 422, 503)
ADMIN_ERRORS = documented(401, 403)
