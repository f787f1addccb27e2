"""Every arm against the control on CTR and CVR: fixed-horizon, always-valid and CUPED, then Holm.

``compare_arms`` is called once for the whole window and once per day (cumulative moments as of that
day); each call is one family of comparisons for the multiple-comparison correction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.report.cuped import NO_ADJUSTMENT, PooledTheta, adjusted_estimate, pooled_theta
from service.report.models import CupedLift, Interval, Lift, Metric
from service.report.multiple import holm
from service.report.sequential import SequentialDesign
from service.report.stats import Estimate, LiftEstimate, relative_lift
from service.report.sums import Moments

METRICS: tuple[Metric, Metric] = ("ctr", "cvr")
FIXED_SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class _Pair:
    """One comparison before the correction: the plain and the CUPED lift and their always-valid p."""

    arm: str
    metric: Metric
    control: Estimate
    treated: Estimate
    plain: LiftEstimate
    sequential_p: float | None
    users: int
    cuped: CupedLift | None


def thetas(moments: Mapping[str, Moments], cuped: bool) -> dict[Metric, PooledTheta]:
    """The pooled theta of each metric (no adjustment when ``cuped`` is off)."""
    return {m: pooled_theta(m, moments.values()) if cuped else NO_ADJUSTMENT for m in METRICS}


def compare_arms(
    moments: Mapping[str, Moments],
    arms: Sequence[str],
    control: str,
    design: SequentialDesign,
    pooled: Mapping[Metric, PooledTheta],
) -> list[Lift]:
    """The lifts of every non-control arm over ``control``, decided on Holm-adjusted always-valid p."""
    empty = Moments.zero()
    pairs = [
        _pair(arm, metric, moments.get(arm, empty), moments.get(control, empty), design, pooled[metric])
        for arm in arms
        if arm != control
        for metric in METRICS
    ]
    decision = holm([_decision_p(pair) for pair in pairs])
    fixed = holm([pair.plain.p_value for pair in pairs])
    return [
        _lift(pair, design, decided, fixed_adjusted)
        for pair, decided, fixed_adjusted in zip(pairs, decision, fixed, strict=True)
    ]


def _pair(
    arm: str, metric: Metric, treated_moments: Moments, control_moments: Moments,
    design: SequentialDesign, pooled: PooledTheta,
) -> _Pair:  # fmt: skip
    treated = adjusted_estimate(metric, treated_moments, NO_ADJUSTMENT)
    control = adjusted_estimate(metric, control_moments, NO_ADJUSTMENT)
    users = treated_moments.n + control_moments.n
    plain = relative_lift(treated, control)
    cuped = None
    if pooled.applied:
        adjusted = relative_lift(
            adjusted_estimate(metric, treated_moments, pooled),
            adjusted_estimate(metric, control_moments, pooled),
            treated.value,
            control.value,
        )
        cuped = _cuped_lift(adjusted, plain, users, design)
    return _Pair(arm, metric, control, treated, plain, _sequential_p(plain, users, design), users, cuped)


def _cuped_lift(
    adjusted: LiftEstimate, plain: LiftEstimate, users: int, design: SequentialDesign
) -> CupedLift:
    reduction = None
    if adjusted.se is not None and plain.se:
        reduction = 1.0 - (adjusted.se / plain.se) ** 2
    return CupedLift(
        lift=adjusted.lift,
        se=adjusted.se,
        ci=_interval(adjusted.interval()),
        p_value=adjusted.p_value,
        sequential_ci=_interval(design.interval(Estimate(adjusted.lift, adjusted.se), users)),
        sequential_p_value=_sequential_p(adjusted, users, design),
        variance_reduction=reduction,
    )


def _sequential_p(lift: LiftEstimate, users: int, design: SequentialDesign) -> float | None:
    if lift.lift is None or lift.se is None or users < 2:
        return None
    return design.p_value(lift.lift, lift.se, users)


def _decision_p(pair: _Pair) -> float | None:
    """CUPED's always-valid p-value where CUPED applies, else the plain one."""
    if pair.cuped is not None and pair.cuped.sequential_p_value is not None:
        return pair.cuped.sequential_p_value
    return pair.sequential_p


def _interval(bounds: tuple[float | None, float | None]) -> Interval:
    return Interval(low=bounds[0], high=bounds[1])


def _lift(pair: _Pair, design: SequentialDesign, decided: float | None, fixed_adjusted: float | None) -> Lift:
    plain = pair.plain
    return Lift(
        arm=pair.arm,
        metric=pair.metric,
        control_value=pair.control.value,
        arm_value=pair.treated.value,
        lift=plain.lift,
        se=plain.se,
        ci=_interval(plain.interval()),
        p_value=plain.p_value,
        significant=plain.p_value is not None and plain.p_value < FIXED_SIGNIFICANCE,
        sequential_ci=_interval(design.interval(Estimate(plain.lift, plain.se), pair.users)),
        sequential_p_value=pair.sequential_p,
        cuped=pair.cuped,
        p_value_adjusted=fixed_adjusted,
        decision_p_value=decided,
        conclusive=decided is not None and decided < design.alpha,
    )
