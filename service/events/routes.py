"""``POST /events``: a route factory the service mounts, reading the ``EventLog`` from ``app.state``.

Response (``IngestResponse``)::

    200 {"accepted": 97, "duplicates": 2, "rejected": [{"index": 5, "event_id": "e5",
         "field": "events[5].app_id", "code": "unknown_item", "reason": "app_id 'x' is not among ..."}]}

200 when at least one event of the batch was accepted or was a duplicate (the accepted ones are
durable), 422 with the same body when every event was refused. Errors of the body as a whole:
400 (not JSON), 413 (too many events), 422 (not ``{"events": [...]}`` or empty), all as
``{"detail": {"field": ..., "reason": ...}}``; 503 when the store fails (nothing acknowledged).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response

from service.events.log import EventLog
from service.events.models import IngestResponse
from service.events.validation import BatchError

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


def get_event_log(request: Request) -> EventLog:
    """The service's ``EventLog`` (``app.state.event_log``); 503 when none is configured."""
    event_log: EventLog | None = getattr(request.app.state, "event_log", None)
    if event_log is None:
        raise HTTPException(503, detail={"field": "", "reason": "the event log is not configured"})
    return event_log


def events_router() -> APIRouter:
    """The router of ``POST /events``."""
    router = APIRouter(tags=["events"])

    @router.post(
        "/events",
        response_model=IngestResponse,
        openapi_extra={"requestBody": _EVENTS_BODY},
        responses={422: {"model": IngestResponse, "description": "every event was refused"}},
    )
    async def post_events(
        request: Request, event_log: Annotated[EventLog, Depends(get_event_log)]
    ) -> Response:
        """Store impressions and downloads; each event is accepted, a duplicate, or refused with a reason."""
        body = await request.body()
        try:
            status, result = await event_log.ingest(body)
        except BatchError as error:
            return _json(error.status, {"detail": {"field": error.field, "reason": error.reason}})
        except Exception as error:  # noqa: BLE001 - a store failure is a 503, never a 500
            return _json(
                503, {"detail": {"field": "", "reason": f"event store unavailable: {type(error).__name__}"}}
            )
        return Response(result.model_dump_json().encode(), status_code=status, media_type="application/json")

    return router


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
