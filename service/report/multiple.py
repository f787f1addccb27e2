"""Holm's step-down correction of the p-values of every (arm, metric) comparison of a report.

Holm rather than Benjamini-Hochberg: a report's comparisons share the control arm and CTR and CVR
share the downloads, so the p-values are dependent; Holm controls the family-wise error rate under
any dependence, and, being closed testing with Bonferroni local tests, it stays valid when fed
always-valid p-values at any stopping time (each local test is then time-uniform), which BH's false
discovery rate guarantee does not under arbitrary dependence. With a handful of hypotheses (arms x 2
metrics) it costs little power against BH, and "conclusive" means "ship it", a per-decision claim
that wants no false positive at all rather than a bounded share of them.
"""

from __future__ import annotations

from collections.abc import Sequence


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; None stays None and is not counted."""
    known = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    count = len(known)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(known):
        running = max(running, min(1.0, (count - rank) * p))
        adjusted[index] = running
    return adjusted
