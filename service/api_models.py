"""Pydantic models that document the HTTP API (OpenAPI) and shape the admin endpoints' answers.

``POST /rank`` is validated by ``service.rank.payload`` (columnar, much faster than a model per candidate);
``RankRequestDoc`` describes the same rules for the OpenAPI document and for fuzzing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.experiments.models import Objective
from service.rank.payload import MAX_ID_LENGTH

Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
FeatureValue = str | int | float | bool | None
Features = dict[str, FeatureValue]


class CandidateDoc(BaseModel):
    """One candidate app: its id, optional bid (for ``ctr_bid``) and its item features."""

    app_id: Identifier
    bid: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    features: Features | None = None


def rank_request_doc(max_candidates: int) -> dict[str, Any]:
    """The JSON schema of a /rank body with the configured candidate limit."""

    class RankRequestDoc(BaseModel):
        """A ranking request: who asks, in which context, and the candidates to order."""

        user_id: Identifier
        user: Features | None = None
        context: Features | None = None
        candidates: Annotated[list[CandidateDoc], Field(min_length=1, max_length=max_candidates)]
        objective: Objective | None = None
        top_k: Annotated[int, Field(ge=1)] | None = None
        experiment: Identifier | None = None

    return RankRequestDoc.model_json_schema(ref_template="#/components/schemas/{model}")


class RankedItem(BaseModel):
    app_id: str
    ctr: float
    score: float
    position: int


class RankResponse(BaseModel):
    """The ranked list, best first, and what produced it."""

    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    experiment: str
    arm: str
    model: str
    version: str
    objective: Objective
    items: list[RankedItem]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """4xx/5xx answers: a list of located issues, or one message."""

    detail: list[ErrorItem] | str


class ModelInfo(BaseModel):
    """A loaded bundle."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    model: str
    version: str
    schema_hash: str
    loaded_at: datetime
    path: str
    metrics: dict[str, dict[str, float]]


class ReloadResponse(BaseModel):
    """What ``POST /models/reload`` did, and what serves now."""

    loaded: list[str]
    unchanged: list[str]
    refused: dict[str, str]
    removed: list[str]
    models: list[ModelInfo]
    detail: list[ErrorItem] = []


class Status(BaseModel):
    status: str
    reasons: list[str] = []
    models: list[str] = []


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed JSON"),
        (413, "Body too large"),
        (422, "Invalid field (loc names it)"),
        (503, "Not ready"),
    )
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No bearer token"},
    403: {"model": ErrorResponse, "description": "Not an admin token"},
}
