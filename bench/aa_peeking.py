"""Peeking: A/A and A/B experiments looked at every day, with fixed-horizon and always-valid decisions.

Users come from the synthetic app store (``simulation.synth.AppStoreWorld``): each user's share of page
views and their true download probability over what the store shows them (the world's ground truth,
averaged over sampled impressions). An experiment draws ``--users`` of them, splits them 50/50, and
simulates 14 days before it (the CUPED pre-period) and ``--days`` days of it: a user visits on a day
with a probability that grows with their activity, sees 10 apps per page view, 1 + Poisson(1) views
per visit, and downloads each with their probability (times 1 + ``--lift`` in the treatment of the A/B
scenario). A user enters the experiment on their first visit; their pre-period is the 14 days before.

Each day, the cumulative per-user sums of both arms go through the report's own code
(``service.report.compare.compare_arms``, the always-valid design at its shipped defaults). Counted per
experiment: ever significant at fixed-horizon p < 0.05 over the daily looks; significant at the last day
only (the one planned look); ever outside the always-valid interval (plain, and with CUPED); and the
report's decision (CUPED where it applies, Holm over CTR and CVR). In the A/A scenario these are false
positive rates, in the A/B scenario power. Per-user sums are simulated with numpy, not through HTTP.

    .venv/bin/python bench/aa_peeking.py --experiments 1000 --out bench/results/aa_peeking.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.report.compare import compare_arms, thetas  # noqa: E402
from service.report.models import Lift  # noqa: E402
from service.report.sequential import SequentialDesign  # noqa: E402
from service.report.sums import Moments  # noqa: E402
from simulation.synth import AppStoreWorld  # noqa: E402
from simulation.world import SynthConfig  # noqa: E402

FloatArray = npt.NDArray[np.float64]
PRE_DAYS = 14
RULES = ("fixed, daily looks", "fixed, one look at the end", "always-valid", "always-valid + CUPED")
METRICS = ("ctr", "cvr")


@dataclass(frozen=True)
class Population:
    """The world's users as the bench needs them: daily visit probability and download probability."""

    visit: FloatArray
    probability: FloatArray


def population(world_users: int, impressions: int, seed: int, visit_share: float) -> Population:
    """Per-user visit probability (mean ``visit_share``) and true download probability, from the world."""
    world = AppStoreWorld(SynthConfig(seed=seed, num_users=world_users))
    chunk = world.sample_impressions(impressions, np.random.default_rng(seed))
    users = np.searchsorted(world.user_ids, chunk.columns["user_id"])  # ids are zero-padded: sorted
    truth = world.true_probability(users, chunk.columns, chunk.columns["app_id"])
    seen = np.bincount(users, minlength=world_users).astype(float)
    keep = seen > 0
    probability = np.bincount(users, weights=truth, minlength=world_users)[keep] / seen[keep]
    rate = seen[keep] / seen[keep].mean() * -np.log1p(-visit_share)
    return Population(visit=1.0 - np.exp(-rate), probability=probability)


def simulate_batch(
    people: Population, experiments: int, users: int, days: int, lift: float, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Daily impressions and downloads [E, U, PRE_DAYS + days] and the treatment mask [E, U]."""
    chosen = np.stack([rng.choice(people.visit.size, users, replace=False) for _ in range(experiments)])
    treated = rng.random((experiments, users)) < 0.5
    span = PRE_DAYS + days
    visits = rng.random((experiments, users, span)) < people.visit[chosen][..., None]
    impressions = np.where(visits, 10.0 * (1 + rng.poisson(1.0, visits.shape)), 0.0)
    p = people.probability[chosen][..., None] * np.ones(span)
    p[..., PRE_DAYS:] *= np.where(treated, 1.0 + lift, 1.0)[..., None]
    downloads = rng.binomial(impressions.astype(np.int64), np.minimum(p, 1.0)).astype(float)
    return impressions, downloads, treated


def daily_moments(
    impressions: FloatArray, downloads: FloatArray, treated: npt.NDArray[np.bool_], days: int
) -> Iterator[list[dict[str, Moments]]]:
    """Per experiment of the batch, for each day: the two arms' cumulative moments."""
    post_i, post_d = impressions[..., PRE_DAYS:], downloads[..., PRE_DAYS:]
    active = post_i > 0
    first = np.where(active.any(axis=2), active.argmax(axis=2), days)  # day of the first visit
    pre_i, pre_d = _pre_period(impressions, first), _pre_period(downloads, first)
    cum_i, cum_d = post_i.cumsum(axis=2), post_d.cumsum(axis=2)
    for e in range(impressions.shape[0]):
        looks = []
        for day in range(days):
            entered = first[e] <= day
            x = np.stack([cum_d[e, :, day], cum_i[e, :, day], pre_d[e], pre_i[e]], axis=1)
            looks.append({arm: _moments(x[entered & mask]) for arm, mask in _arms(treated[e])})
        yield looks


def _arms(treated: npt.NDArray[np.bool_]) -> list[tuple[str, npt.NDArray[np.bool_]]]:
    return [("control", ~treated), ("treatment", treated)]


def _pre_period(daily: FloatArray, first: npt.NDArray[np.int64]) -> FloatArray:
    """Each user's sum over the PRE_DAYS days before their first day (a day index of the experiment)."""
    padded = np.concatenate([np.zeros(daily.shape[:2] + (1,)), daily.cumsum(axis=2)], axis=2)
    end = PRE_DAYS + first  # exclusive, in the padded cumulative's terms
    rows = np.take_along_axis(padded, end[..., None], axis=2) - np.take_along_axis(
        padded, (end - PRE_DAYS)[..., None], axis=2
    )
    result: FloatArray = rows[..., 0]
    return result


def _moments(x: FloatArray) -> Moments:
    return Moments(len(x), int((x[:, 2] + x[:, 3] > 0).sum()), x.sum(axis=0), x.T @ x)


def verdicts(looks: list[dict[str, Moments]], design: SequentialDesign) -> dict[str, dict[str, bool]]:
    """Per rule and metric (and "decision": the report's own, either metric), whether it ever fired."""
    fired = {rule: dict.fromkeys(METRICS, False) for rule in RULES}
    decision = False
    for day, moments in enumerate(looks):
        lifts = compare_arms(moments, ["control", "treatment"], "control", design, thetas(moments, True))
        for lift in lifts:
            _record(fired, lift, last=day == len(looks) - 1, design=design)
        decision |= any(lift.conclusive for lift in lifts)
    return {**fired, "report decision": {"any": decision}}


def _record(fired: dict[str, dict[str, bool]], lift: Lift, last: bool, design: SequentialDesign) -> None:
    metric, alpha = lift.metric, design.alpha
    fired["fixed, daily looks"][metric] |= lift.p_value is not None and lift.p_value < alpha
    if last:
        fired["fixed, one look at the end"][metric] = lift.p_value is not None and lift.p_value < alpha
    plain = lift.sequential_p_value
    fired["always-valid"][metric] |= plain is not None and plain < alpha
    cuped = lift.cuped.sequential_p_value if lift.cuped is not None else plain
    fired["always-valid + CUPED"][metric] |= cuped is not None and cuped < alpha


def run_scenario(
    people: Population, args: argparse.Namespace, lift: float, seed: int
) -> dict[str, dict[str, float]]:
    """The share of experiments each rule fired on, per metric."""
    rng = np.random.default_rng(seed)
    design = SequentialDesign()
    counts: dict[str, dict[str, int]] = {}
    done = 0
    while done < args.experiments:
        batch = min(args.batch, args.experiments - done)
        impressions, downloads, treated = simulate_batch(people, batch, args.users, args.days, lift, rng)
        for looks in daily_moments(impressions, downloads, treated, args.days):
            for rule, metrics in verdicts(looks, design).items():
                for metric, hit in metrics.items():
                    counts.setdefault(rule, {}).setdefault(metric, 0)
                    counts[rule][metric] += hit
        done += batch
    return {rule: {m: n / args.experiments for m, n in metrics.items()} for rule, metrics in counts.items()}


def show(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"{args.experiments} experiments x {args.days} daily looks, {args.users:,} users each"
    )
    for column in ("scenario", "rule", "CTR", "CVR", "either metric"):
        table.add_column(column, justify="left" if column in ("scenario", "rule") else "right")
    for scenario, rules in results.items():
        for rule, shares in rules.items():
            cells = [f"{100 * shares[m]:.1f} %" if m in shares else "" for m in (*METRICS, "any")]
            table.add_row(scenario, rule, *cells)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--users", type=int, default=4000, help="users drawn per experiment")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--lift", type=float, default=0.08, help="relative download lift of the A/B test")
    parser.add_argument("--visit-share", type=float, default=0.3, help="mean daily visit probability")
    parser.add_argument("--world-users", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50, help="experiments simulated at once")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "aa_peeking.json")
    args = parser.parse_args()
    started = time.perf_counter()
    people = population(args.world_users, 400_000, args.seed, args.visit_share)
    results = {
        "A/A (false positives)": run_scenario(people, args, 0.0, args.seed + 1),
        f"A/B +{100 * args.lift:g} % (power)": run_scenario(people, args, args.lift, args.seed + 2),
    }
    seconds = time.perf_counter() - started
    show(results, args)
    Console().print(f"{seconds:.0f} s on {platform.processor() or platform.machine()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    design = SequentialDesign()
    meta = {"alpha": design.alpha, "tuning_users": design.tuning_users, "pre_days": PRE_DAYS}
    args.out.write_text(
        json.dumps({"settings": settings, **meta, "seconds": seconds, "results": results}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
