"""Admin bearer tokens: ``APPRANK_ADMIN_TOKEN`` holds ``token`` or ``name:token[,name:token]``.

The name of the token that made a change is what the experiment audit records. Comparison is constant
time (``hmac.compare_digest``) and every configured token is compared, so timing says nothing.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from service.errors import FieldIssue, RequestError

DEFAULT_NAME = "admin"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class AuthError(RequestError):
    """No token (401, with ``WWW-Authenticate``) or a token that is not an admin token (403)."""

    def __init__(self, status: int, message: str) -> None:
        kind = "unauthorized" if status == 401 else "forbidden"
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        super().__init__(status, [FieldIssue(("header", "authorization"), message, kind)], headers)
        self.message = message


@dataclass(frozen=True)
class AdminTokens:
    """The configured admin tokens, by name."""

    tokens: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, raw: str | None) -> AdminTokens:
        """Parse ``token`` (named ``admin``) or ``name:token,name:token``.

        Raises:
            ValueError: an empty token, a bad or duplicate name.
        """
        if raw is None or not raw.strip():
            return cls(())
        entries: list[tuple[str, bytes]] = []
        for part in raw.split(","):
            name, sep, token = part.strip().partition(":")
            if not sep:
                name, token = DEFAULT_NAME, name
            if not token:
                raise ValueError("APPRANK_ADMIN_TOKEN: empty token")
            if not _NAME.match(name):
                raise ValueError(f"APPRANK_ADMIN_TOKEN: bad token name {name!r}")
            if any(existing == name for existing, _ in entries):
                raise ValueError(f"APPRANK_ADMIN_TOKEN: duplicate token name {name!r}")
            entries.append((name, token.encode()))
        return cls(tuple(entries))

    def identify(self, authorization: str | None) -> str:
        """The name of the token in an ``Authorization: Bearer ...`` header.

        Raises:
            AuthError: 401 when the header is absent or not a bearer token, 403 when the token is wrong
                or no admin token is configured.
        """
        if not authorization:
            raise AuthError(401, "admin bearer token required (Authorization: Bearer <token>)")
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthError(401, "admin bearer token required (Authorization: Bearer <token>)")
        if not self.tokens:
            raise AuthError(403, "admin API disabled: APPRANK_ADMIN_TOKEN is not set")
        candidate = presented.strip().encode()
        found: str | None = None
        for name, token in self.tokens:
            if hmac.compare_digest(candidate, token):
                found = name
        if found is None:
            raise AuthError(403, "the bearer token is not an admin token")
        return found
