"""Scoring and ordering one request's candidates with one loaded model (one ONNX Runtime call)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.errors import RequestError
from service.experiments.models import Objective
from service.rank.payload import RankRequest
from service.rank.registry import LoadedModel

_PARTITION_RATIO = 4  # partition first when the top k is at most a quarter of the candidates


@dataclass(frozen=True, slots=True)
class Ranking:
    """The outcome: ``order`` indexes the request's candidates, best first (``top_k`` of them).

    ``ctr`` and ``score`` are per candidate (request order); ``inference_s`` is the ONNX run's time.
    """

    order: npt.NDArray[np.int64]
    ctr: npt.NDArray[np.float32]
    score: npt.NDArray[np.floating]
    inference_s: float


def top_order(score: npt.NDArray[np.floating], app_ids: list[str], k: int) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` best scores, descending; equal scores are ordered by app_id (ascending).

    The tie-break makes the order a function of the candidate set, not of the order it arrived in.
    Only the runs of equal scores that reach into the top ``k`` are re-sorted (ties are rare). For a
    short top ``k`` only the candidates scoring at least the k-th best score are sorted (a partition
    finds them): the same order as sorting all of them, for a fraction of the work.
    """
    n = score.size
    if k * _PARTITION_RATIO <= n:
        kth = np.partition(score, n - k)[n - k]
        chosen = np.flatnonzero(score >= kth)  # the top k, and every tie of the k-th best (request order)
        order = chosen[np.argsort(-score[chosen], kind="stable")]
    else:
        order = np.argsort(-score, kind="stable")
    ranked = score[order]
    equal = np.flatnonzero(ranked[1:] == ranked[:-1])
    if equal.size:
        for start, stop in _runs(equal):
            if start < k:
                order[start:stop] = sorted(order[start:stop].tolist(), key=app_ids.__getitem__)
    return order[:k].astype(np.int64, copy=False)


def _runs(equal: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """[start, stop) of each run of equal neighbours, from the positions i where x[i] == x[i + 1]."""
    breaks = np.flatnonzero(np.diff(equal) > 1)
    starts = np.concatenate([equal[:1], equal[breaks + 1]])
    stops = np.concatenate([equal[breaks], equal[-1:]]) + 2
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


class Ranker:
    """Encodes a request with the model's encoder, scores it and orders it by the objective."""

    def rank(self, model: LoadedModel, request: RankRequest, objective: Objective) -> Ranking:
        """Rank ``request`` with ``model``.

        Raises:
            RequestError: a feature value is invalid, or ``ctr_bid`` is asked for without every bid.
        """
        bids = request.bids
        if objective is Objective.CTR_BID:
            bids = _require_bids(bids, len(request.app_ids))
        inputs = model.encoder.encode(request)
        started = time.perf_counter()
        ctr = model.run(inputs)
        inference_s = time.perf_counter() - started
        score: npt.NDArray[np.floating] = ctr if bids is None or objective is Objective.CTR else ctr * bids
        n = len(request.app_ids)
        k = n if request.top_k is None else min(request.top_k, n)
        return Ranking(top_order(score, request.app_ids, k), ctr, score, inference_s)


def _require_bids(bids: npt.NDArray[np.float64] | None, n: int) -> npt.NDArray[np.float64]:
    absent = np.arange(n) if bids is None else np.flatnonzero(np.isnan(bids))
    if absent.size:
        loc = ("body", "candidates", int(absent[0]), "bid")
        raise RequestError.at(loc, "required when the objective is 'ctr_bid'", "missing")
    assert bids is not None
    return bids
