"""The bucketing recipe: pinned hashes, stickiness, split accuracy, the ramp rule and coverage."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pytest

from service.experiments.models import BUCKETS, Experiment, Objective
from service.experiments.router import (
    NO_EXPERIMENT,
    Router,
    UnknownExperimentError,
    allocate,
    bucket_of,
    targets_of,
)


def experiment(weights: dict[str, float], allocation: dict[str, list[tuple[int, int]]] | None = None,
               **extra: object) -> Experiment:  # fmt: skip
    now = datetime.now(UTC)
    arms = [{"name": name, "model": f"m_{name}", "weight": w} for name, w in weights.items()]
    fields: dict[str, object] = {
        "name": "exp",
        "salt": "salt-1",
        "arms": arms,
        "control": next(iter(weights)),
        "default_arm": next(iter(weights)),
        "allocation": allocation or allocate(targets_of(weights.items())),
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(extra)
    return Experiment.model_validate(fields)


def router_for(e: Experiment) -> Router:
    router = Router("exp")
    router.replace([e])
    return router


def arms_of(router: Router, users: list[str]) -> list[str]:
    return [router.assign("exp", u, "fallback").arm for u in users]


def test_bucket_is_sha256_of_salt_and_user_modulo_10000() -> None:
    digest = hashlib.sha256(b"salt-1:user-42").digest()
    assert bucket_of("salt-1", "user-42") == int.from_bytes(digest[:8], "big") % 10_000
    assert bucket_of("salt-1", "user-42") == 6180  # pinned: changing the recipe reshuffles every user


def test_same_arm_across_1000_calls_and_across_routers() -> None:
    e = experiment({"a": 50, "b": 50})
    first, second = router_for(e), router_for(e)
    for user in ("u1", "u2", "u3"):
        arms = {first.assign("exp", user, "x").arm for _ in range(1000)}
        assert arms == {second.assign("exp", user, "x").arm}


def test_split_of_10000_users_within_2_points_of_the_weights() -> None:
    router = router_for(experiment({"a": 20, "b": 30, "c": 50}))
    arms = arms_of(router, [f"user-{i}" for i in range(10_000)])
    for arm, weight in (("a", 20), ("b", 30), ("c", 50)):
        assert abs(100 * arms.count(arm) / len(arms) - weight) < 2.0


def test_ramp_50_50_to_60_40_moves_only_users_from_b_to_a() -> None:
    before = experiment({"a": 50, "b": 50})
    after_allocation = allocate(targets_of({"a": 60, "b": 40}.items()), before.allocation)
    after = experiment({"a": 60, "b": 40}, after_allocation)
    users = [f"user-{i}" for i in range(10_000)]
    old, new = arms_of(router_for(before), users), arms_of(router_for(after), users)
    moved = [(o, n) for o, n in zip(old, new, strict=True) if o != n]
    assert set(moved) == {("b", "a")}
    assert abs(len(moved) / len(users) - 0.10) < 0.02
    assert all(n == "a" for o, n in zip(old, new, strict=True) if o == "a")


def test_ramp_with_three_arms_moves_exactly_the_buckets_it_must() -> None:
    first = allocate({"a": 3400, "b": 3300, "c": 3300})
    second = allocate({"a": 2000, "b": 3300, "c": 4700}, first)
    owner = {}
    for allocation, key in ((first, 0), (second, 1)):
        table = np.full(BUCKETS, "", dtype=object)
        for arm, ranges in allocation.items():
            for start, end in ranges:
                table[start:end] = arm
        owner[key] = table
    moved = owner[0] != owner[1]
    assert int(moved.sum()) == 1400  # |a's decrease| = c's increase
    assert set(owner[0][moved]) == {"a"} and set(owner[1][moved]) == {"c"}
    assert all(owner[1] != "")


def test_removed_arm_gives_its_buckets_to_growing_arms() -> None:
    first = allocate({"a": 5000, "b": 2500, "c": 2500})
    second = allocate({"a": 5000, "b": 5000}, first)
    assert second["a"] == first["a"]
    assert sum(end - start for start, end in second["b"]) == 5000


def test_coverage_sends_the_rest_to_the_default_arm_and_widening_keeps_arms() -> None:
    users = [f"user-{i}" for i in range(10_000)]
    narrow = router_for(experiment({"a": 50, "b": 50}, coverage=20.0, default_arm="a"))
    wide = router_for(experiment({"a": 50, "b": 50}, coverage=60.0, default_arm="a"))
    narrow_assign = [narrow.assign("exp", u, "x") for u in users]
    wide_assign = [wide.assign("exp", u, "x") for u in users]
    inside = [a.bucket >= 0 for a in narrow_assign]
    assert abs(sum(inside) / len(users) - 0.20) < 0.02
    assert all(a.arm == "a" for a in narrow_assign if a.bucket < 0)
    for n, w in zip(narrow_assign, wide_assign, strict=True):
        if n.bucket >= 0:
            assert (w.bucket, w.arm) == (n.bucket, n.arm)  # covered users stay covered, same arm


def test_stopped_experiment_serves_the_default_arm() -> None:
    router = router_for(experiment({"a": 50, "b": 50}, running=False, default_arm="b"))
    assert {router.assign("exp", f"u{i}", "x").arm for i in range(200)} == {"b"}


def test_without_experiments_the_default_model_serves() -> None:
    assignment = Router("default").assign(None, "u1", "lr")
    assert (assignment.experiment, assignment.model, assignment.objective) == (
        NO_EXPERIMENT,
        "lr",
        Objective.CTR,
    )
    with pytest.raises(UnknownExperimentError):
        Router("default").assign("nope", "u1", "lr")
