"""The /rank hot path's shortcuts give what the plain way gives: the partitioned top k equals the full
sort with its tie-break, and the MessagePack byte scans never miss a NaN, an infinity or a NUL."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import orjson
import pytest

from service.rank.msgpack_body import may_hold_non_finite
from service.rank.payload import _fast_msgpack, parse_rank_request
from service.rank.ranker import top_order

if TYPE_CHECKING:
    from tests.exported import ExportedFamily


def reference(score: np.ndarray, app_ids: list[str], k: int) -> list[int]:
    return sorted(range(score.size), key=lambda i: (-float(score[i]), app_ids[i]))[:k]


@pytest.mark.parametrize("seed", range(20))
def test_partitioned_top_k_equals_the_full_sort_ties_included(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    score = rng.integers(0, 1 + n // 8, n).astype(np.float32) / 7  # many ties, some at the k-th place
    app_ids = [f"app{v}" for v in rng.permutation(n)]
    for k in (1, 2, 10, n // 4 or 1, n // 3 or 1, n):
        assert top_order(score, app_ids, k).tolist() == reference(score, app_ids, k), (n, k)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("pack", ["f64", "f32"])
def test_non_finite_floats_are_always_seen(value: float, pack: str) -> None:
    raw = struct.pack(">Bd", 0xCB, value) if pack == "f64" else struct.pack(">Bf", 0xCA, value)
    body = b"\x82\xa7user_id\xa1u\xaacandidates\x91\x82\xa6app_id\xa1a\xa3bid" + raw
    assert may_hold_non_finite(body)
    assert not may_hold_non_finite(body.replace(raw, struct.pack(">Bd", 0xCB, 1.5)))
    with pytest.raises(Exception) as caught:
        parse_rank_request(body, 10, msgpack=True)
    assert getattr(caught.value, "status", None) == 422


def test_float_bids_and_a_nul_free_body_take_the_fast_path() -> None:
    candidates = [{"app_id": f"a{i}", "bid": 0.0, "features": {"r": 0, "c": "x"}} for i in range(9)]
    request = _fast_msgpack(msgspec.msgpack.encode({"user_id": "u", "candidates": candidates}), 10)
    assert request is not None and request.bids is not None and request.bids.tolist() == [0.0] * 9


def test_an_app_named_twice_takes_one_cache_row() -> None:
    """The item cache gives an app one row however often one call names it (it took one per mention)."""
    from service.rank.item_cache import ItemCache

    cache = ItemCache(capacity=8)

    def encode_rows(rows: list[int]) -> tuple[dict[str, np.ndarray], set[int]]:
        return {"x": np.array([10 * r for r in rows], dtype=np.int64)}, set()

    out = cache.encode(["a", "b", "a"], [{"k": 1}, {"k": 2}, {"k": 1}], encode_rows)
    assert out["x"].tolist() == [0, 10, 20] and len(cache) == 2
    again = cache.encode(["a", "b"], [{"k": 1}, {"k": 2}], encode_rows)
    assert again["x"].tolist() == [20, 10] and cache.hits == 2
    cache.encode([f"n{i}" for i in range(7)] * 2, [{"k": i} for i in range(14)], encode_rows)
    assert len(cache) == 7  # past capacity it starts over: 7 distinct apps, 7 rows


def test_request_graph_encoders_count_features_as_plain_ones(exported_family: ExportedFamily) -> None:
    """With an item graph the cache keeps item parts and per-app counts, not the item inputs: the
    feature counts (values, missing, OOV) are those of the plain encoder all the same."""
    from service.rank.registry import LoadOptions, load_model
    from tests.service.conftest import rank_body

    bundle = exported_family.bundle("lr")  # the shared export: plain and request-shaped graphs, no int8
    shaped = load_model("lr", bundle, LoadOptions("cpu", 1, 1, 64, request_graph=True))
    plain = load_model("lr", bundle, LoadOptions("cpu", 1, 1, 0, request_graph=False))
    assert shaped.graph == "request" and shaped.encoder.item_tower is not None
    body = rank_body(12, context={"daytime": "never", "weekday": "monday"})
    for step in range(3):  # all new, then all cached, then two apps' features changed
        if step == 2:
            body["candidates"][0]["features"] = {"category": "no-such-category"}
            body["candidates"][1]["features"] = {}
        request = parse_rank_request(orjson.dumps(body), 100)
        shaped.encoder.encode(request)
        plain.encoder.encode(request)
    counts = shaped.encoder.stats.pending()
    assert counts == plain.encoder.stats.pending()
    assert counts["daytime"][2] == 3 and sum(c[1] + c[2] for c in counts.values()) > 3
