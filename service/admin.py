"""The admin dependency: the name of the bearer token, or 401 / 403."""

from __future__ import annotations

from fastapi import Depends, Request

from service.state import ServiceState, get_state


def require_admin(request: Request, state: ServiceState = Depends(get_state)) -> str:  # noqa: B008
    """The admin token's name (raises ``AuthError``: 401 without a token, 403 with a wrong one)."""
    return state.tokens.identify(request.headers.get("authorization"))
