"""``POST /rank``: the body is read raw and handed to ``RankService`` (no thread-pool hop)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.requests import ClientDisconnect

from service.api_models import ERRORS, RankResponse
from service.state import ServiceState, get_state


def rank_router(request_schema: dict[str, object]) -> APIRouter:
    """The /rank route, documenting ``request_schema`` as its body."""
    router = APIRouter()
    body = {"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}}

    @router.post("/rank", response_model=RankResponse, responses=ERRORS, openapi_extra=body)
    async def rank(request: Request, state: ServiceState = Depends(get_state)) -> Response:  # noqa: B008
        """Rank the candidates for a user: best first, by CTR or CTR x bid."""
        try:
            body = await request.body()
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            return Response(status_code=499)
        return Response(state.ranking.handle(body), media_type="application/json")

    return router
