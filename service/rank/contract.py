"""The ``/rank`` contract, once: msgspec structs that the fast path decodes into and the response is
encoded from, and from which the OpenAPI document of ``POST /rank`` is generated (msgspec JSON Schema).

The slow path (``payload._slow_path``) states the same rules as checks that name what is wrong; the
hypothesis tests of ``tests/service/test_payload_paths.py`` prove that the two never disagree.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from service.errors import ERRORS, ErrorResponse
from service.experiments.models import Objective
from service.rank.media import JSON, MSGPACK

MAX_ID_LENGTH = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
Scalar = str | Int64 | float | bool | None
Features = dict[str, Scalar | list[Scalar]]
SCHEMAS = "#/components/schemas/{name}"


class Candidate(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """One candidate app: its id, an optional bid (for ``ctr_bid``) and its item features."""

    app_id: Identifier
    bid: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    features: Features = {}


class RankRequestBody(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A ranking request: who asks, in which context, and the candidates to order."""

    user_id: Identifier
    candidates: Annotated[list[Candidate], msgspec.Meta(min_length=1)]
    user: Features = {}
    context: Features = {}
    objective: Objective | None = None
    top_k: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)] | None = None
    experiment: Identifier | None = None


class RankedItem(msgspec.Struct, gc=False):
    """One ranked app; ``position`` counts from 1."""

    app_id: str
    ctr: float
    score: float
    position: int


class RankResponse(msgspec.Struct, gc=False):
    """The ranked list, best first, and what produced it."""

    request_id: str
    experiment: str
    arm: str
    model: str
    version: str
    objective: Objective
    items: list[RankedItem]


def rank_operation(max_candidates: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI operation of ``POST /rank`` and the component schemas it refers to."""
    (body_ref, response_ref), components = msgspec.json.schema_components(
        (RankRequestBody, RankResponse), ref_template=SCHEMAS
    )
    for schema in components.values():
        # forbid_unknown_fields only sends such bodies to the slow path, which ignores unknown keys.
        schema.pop("additionalProperties", None)
    body = components.pop(body_ref["$ref"].rsplit("/", 1)[1])
    body["properties"]["candidates"]["maxItems"] = max_candidates
    errors = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(errors.pop("$defs", {}))
    components[ErrorResponse.__name__] = errors
    responses: dict[str, Any] = {"200": _content("The ranked list", response_ref, MSGPACK)}
    error_ref = {"$ref": SCHEMAS.format(name="ErrorResponse")}
    for status, entry in ERRORS.items():
        responses[str(status)] = _content(entry["description"], error_ref)
    responses["406"] = _content("Accept allows neither JSON nor MessagePack", error_ref)
    content = {media: {"schema": body} for media in (JSON, MSGPACK)}
    operation = {
        "summary": "Rank",
        "description": "Rank the candidates for a user: best first, by CTR or CTR x bid. The body may be "
        "MessagePack (Content-Type: application/msgpack), and so may the answer (Accept); errors are JSON.",
        "operationId": "rank_rank_post",
        "requestBody": {"required": True, "content": content},
        "responses": responses,
    }
    return operation, components


def _content(description: str, schema: dict[str, Any], *also: str) -> dict[str, Any]:
    """An OpenAPI response: ``schema`` as JSON, and as each media type of ``also``."""
    return {"description": description, "content": {media: {"schema": schema} for media in (JSON, *also)}}
