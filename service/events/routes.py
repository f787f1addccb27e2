"""``POST /events``: a route factory the service mounts, given the dependency that yields the ``EventLog``.

Response (``IngestResponse``)::

    200 {"accepted": 97, "duplicates": 2, "rejected": [{"index": 5, "event_id": "e5",
         "field": "events[5].app_id", "code": "unknown_item", "reason": "app_id 'x' is not among ..."}]}

200 when at least one event of the batch was accepted or was a duplicate (the accepted ones are
durable), 422 with the same body when every event was refused, plus ``detail``: one issue per event in
the service's error shape. Errors of the body as a whole: 400 (not JSON), 413 (too many events), 422
(not ``{"events": [...]}`` or empty), 503 with ``Retry-After`` when the store fails (nothing
acknowledged) or when events name a served list that may not be written yet (type ``retry_later``, one
issue per such event; send the whole batch again: what it stored comes back as duplicates), all as
``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response

from service.db import RETRY_AFTER_S
from service.errors import ERRORS, FieldIssue, RequestError, body_loc, issue_dict
from service.events.log import EventLog, ServedListPendingError
from service.events.models import IngestResponse, RefusedBatch, Rejection
from service.events.validation import BatchError

RETRY_LATER = {"Retry-After": str(RETRY_AFTER_S)}
_ID = {"type": "string", "minLength": 1, "maxLength": 256}
_EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["events"],
                "properties": {
                    "events": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["event_id", "type", "request_id", "app_id", "user_id"],
                            "properties": {
                                "event_id": _ID,
                                "type": {"type": "string", "enum": ["impression", "download"]},
                                "request_id": _ID,
                                "app_id": _ID,
                                "user_id": _ID,
                                "ts": {"type": "number", "exclusiveMinimum": 0},
                            },
                        },
                    }
                },
            }
        }
    },
}


def _pending_issue(rejection: Rejection) -> FieldIssue:
    msg = f"{rejection.reason} yet: it may still be being written; send the batch again later"
    return FieldIssue(body_loc(rejection.field), msg, "retry_later")


def events_router(event_log: Callable[..., EventLog]) -> APIRouter:
    """The router of ``POST /events``; ``event_log`` is the FastAPI dependency that yields the log."""
    router = APIRouter(tags=["events"])

    @router.post(
        "/events",
        response_model=IngestResponse,
        openapi_extra={"requestBody": _EVENTS_BODY},
        responses={
            **ERRORS,
            422: {"model": RefusedBatch, "description": "a bad body, or every event refused"},
        },
    )
    async def post_events(request: Request, log: EventLog = Depends(event_log)) -> Response:  # noqa: B008
        """Store impressions and downloads; each event is accepted, a duplicate, or refused with a reason."""
        body = await request.body()
        try:
            status, result = await log.ingest(body)
        except BatchError as error:
            raise RequestError.at(body_loc(error.field), error.reason, error.code, error.status) from None
        except ServedListPendingError as error:
            raise RequestError(503, [_pending_issue(r) for r in error.rejections], RETRY_LATER) from None
        except Exception as error:  # noqa: BLE001 - a store failure is a 503, never a 500
            msg = f"event store unavailable: {type(error).__name__}"
            raise RequestError(503, [FieldIssue((), msg, "unavailable")], RETRY_LATER) from None
        answer: dict[str, Any] = result.model_dump(mode="json")
        if status >= 400:
            answer["detail"] = [
                issue_dict(FieldIssue(body_loc(r.field), r.reason, r.code)) for r in result.rejected
            ]
        return Response(orjson.dumps(answer), status_code=status, media_type="application/json")

    return router
