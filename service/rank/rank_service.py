"""``POST /rank`` end to end, as a plain class: parse, route, rank, render, log the served list."""

from __future__ import annotations

import os
import time
from operator import itemgetter
from typing import Any

import msgspec

from service.errors import RequestError, UnavailableError
from service.experiments.models import Objective
from service.experiments.router import Assignment, Router, UnknownExperimentError
from service.metrics import MODEL_INFERENCE, RANK_CANDIDATES, RANK_DURATION
from service.rank.contract import RankedItem, RankResponse
from service.rank.media import Wire
from service.rank.payload import RankRequest, parse_rank_request
from service.rank.ranker import Ranker, Ranking
from service.rank.registry import LoadedModel, ModelRegistry
from service.rank.served import ServedList, ServedListSink


class RankService:
    """Turns a /rank body into the response bytes; hands every served list to ``sink``."""

    def __init__(
        self,
        registry: ModelRegistry,
        router: Router,
        sink: ServedListSink,
        max_candidates: int,
        default_model: str | None = None,
    ) -> None:
        self.registry = registry
        self.router = router
        self.sink = sink
        self.max_candidates = max_candidates
        self.default_model = default_model
        self.ranker = Ranker()
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def handle(self, body: bytes, wire: Wire = Wire.JSON, answer: Wire = Wire.JSON) -> bytes:
        """The response for a /rank body encoded as ``wire``, encoded as ``answer``.

        Raises:
            RequestError: bad input (4xx naming the field).
            UnavailableError: no model can serve this request (503).
        """
        started = time.perf_counter()
        request = parse_rank_request(body, self.max_candidates, wire is Wire.MSGPACK)
        assignment = self._assign(request)
        model = self.registry.get(assignment.model)
        if model is None:
            raise UnavailableError(f"model {assignment.model!r} of arm {assignment.arm!r} is not loaded")
        objective = request.objective or assignment.objective
        ranking = self.ranker.rank(model, request, objective)
        request_id = new_request_id()
        content = render(request_id, assignment, model, objective, request.app_ids, ranking, answer)
        self.sink.submit(_served(request_id, assignment, model, objective.value, request, ranking))
        self._observe(model, assignment, len(request.app_ids), ranking.inference_s, started)
        return content

    def _observe(
        self, model: LoadedModel, assignment: Assignment, candidates: int, inference_s: float, started: float
    ) -> None:
        """Record the request's metrics; the labelled histograms are looked up once per label set
        (``labels()`` takes a lock and validates the labels: a visible share of a small request)."""
        key = (model.name, model.version, assignment.experiment, assignment.arm)
        children = self._children.get(key)
        if children is None:
            children = MODEL_INFERENCE.labels(*key[:2]), RANK_DURATION.labels(*key[2:])
            self._children[key] = children
        children[0].observe(inference_s)
        RANK_CANDIDATES.observe(candidates)
        children[1].observe(time.perf_counter() - started)

    def _assign(self, request: RankRequest) -> Assignment:
        default_model = self.default_model or self.registry.default_name()
        if default_model is None:
            raise UnavailableError("no model is loaded")
        try:
            return self.router.assign(request.experiment, request.user_id, default_model)
        except UnknownExperimentError:
            known = ", ".join(sorted(self.router.experiments)) or "none"
            msg = f"unknown experiment {request.experiment!r} (known: {known})"
            raise RequestError.at(("body", "experiment"), msg, "unknown_experiment") from None


def new_request_id() -> str:
    """32 hex digits: milliseconds since the epoch (12), then 80 random bits (20), like a UUIDv7.

    Time-ordered ids keep the event log's inserts at the end of its request_id indexes (served items,
    events) instead of at random pages, which made each batch of served lists dirty a page per item
    and slowed the writer (and, through the GIL, /rank) as the tables grew. 80 random bits keep ids
    of the same millisecond, across workers and replicas, distinct.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


_JSON_ENCODER = msgspec.json.Encoder()
_MSGPACK_ENCODER = msgspec.msgpack.Encoder()


def render(
    request_id: str,
    assignment: Assignment,
    model: LoadedModel,
    objective: Objective,
    app_ids: list[str],
    ranking: Ranking,
    answer: Wire = Wire.JSON,
) -> bytes:
    """The response (JSON or MessagePack): identity of what served, then the items best first
    (msgspec structs: one C call builds each item, cheaper than a dict)."""
    order = ranking.order.tolist()
    ids = [app_ids[order[0]]] if len(order) == 1 else list(itemgetter(*order)(app_ids))
    ctrs = ranking.ctr[ranking.order].tolist()
    scores = ctrs if ranking.score is ranking.ctr else ranking.score[ranking.order].tolist()
    items = list(map(RankedItem, ids, ctrs, scores, range(1, len(ids) + 1)))
    response = RankResponse(
        request_id, assignment.experiment, assignment.arm, model.name, model.version, objective, items
    )
    if answer is Wire.MSGPACK:
        return _MSGPACK_ENCODER.encode(response)
    return _JSON_ENCODER.encode(response)


def _served(
    request_id: str,
    assignment: Assignment,
    model: LoadedModel,
    objective: str,
    request: RankRequest,
    ranking: Ranking,
) -> ServedList:
    return ServedList(
        request_id=request_id,
        ts=time.time(),
        experiment=assignment.experiment,
        arm=assignment.arm,
        bucket=assignment.bucket,
        model=model.name,
        version=model.version,
        objective=objective,
        user_id=request.user_id,
        user=request.user,
        context=request.context,
        app_ids=request.app_ids,
        bids=request.bids,
        features=request.features,
        order=ranking.order,
        ctr=ranking.ctr,
        fields=model.encoder.logged,
    )
