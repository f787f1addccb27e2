"""Request errors that become 4xx answers naming the field (``loc``) and the reason (``msg``).

The body follows FastAPI's validation error shape: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """What is wrong and where: ``loc`` is the path into the JSON body, starting with ``"body"``."""

    loc: Loc
    msg: str
    type: str = "value_error"


class RequestError(Exception):
    """A client error: the status code and the issues to report."""

    def __init__(self, status: int, issues: Sequence[FieldIssue]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in issues))
        self.status = status
        self.issues = tuple(issues)

    @classmethod
    def at(cls, loc: Loc, msg: str, kind: str = "value_error", status: int = 422) -> RequestError:
        """One issue at ``loc``."""
        return cls(status, [FieldIssue(loc, msg, kind)])

    def body(self) -> bytes:
        """The JSON answer."""
        detail = [{"loc": list(i.loc), "msg": i.msg, "type": i.type} for i in self.issues]
        return orjson.dumps({"detail": detail})


class UnavailableError(Exception):
    """The service cannot answer now (no model loaded, store down): a 503 with the reason."""
