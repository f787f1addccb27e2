"""The daily lift chart (PNG): CTR and CVR lift of each arm over the control, per UTC day, with 95 %
intervals, like the daily improvement chart of the DeepFM paper's online A/B test.

matplotlib is a training extra, so it is imported here, lazily; ``chart_available`` says whether the
PNG can be offered at all.
"""

from __future__ import annotations

import importlib.util
import io
from typing import TYPE_CHECKING

import numpy as np

from service.report.models import ExperimentReport, Metric

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def chart_available() -> bool:
    """True when matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def render_daily_chart(report: ExperimentReport) -> bytes:
    """The PNG bytes of the per-day lift chart (two panels: CTR lift and CVR lift, in percent).

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 6), tight_layout=True)
    axes = figure.subplots(2, 1, sharex=True)
    metrics: tuple[Metric, Metric] = ("ctr", "cvr")
    for ax, metric in zip(axes, metrics, strict=True):
        _plot_metric(ax, report, metric)
    axes[-1].set_xlabel("day (UTC)")
    _pad_days(axes[-1], report)
    figure.suptitle(f"{report.experiment}: daily lift over {report.control} (95 % CI)")
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _pad_days(ax: Axes, report: ExperimentReport) -> None:
    """Half a day of margin on each side, so a single day is not stretched over years."""
    if not report.daily:
        return
    days = np.array([day.day for day in report.daily], dtype="datetime64[D]")
    half_day = np.timedelta64(12, "h")
    ax.set_xlim(days.min() - half_day, days.max() + half_day)


def _plot_metric(ax: Axes, report: ExperimentReport, metric: Metric) -> None:
    """One panel: the lift of each non-control arm in percent, with error bars."""
    arms = sorted({lift.arm for day in report.daily for lift in day.lifts})
    for arm in arms:
        days, values, lower, upper = [], [], [], []
        for day in report.daily:
            for lift in day.lifts:
                if lift.arm != arm or lift.metric != metric or lift.lift is None:
                    continue
                days.append(day.day)
                values.append(100 * lift.lift)
                low, high = lift.ci.low, lift.ci.high
                lower.append(0.0 if low is None else 100 * (lift.lift - low))
                upper.append(0.0 if high is None else 100 * (high - lift.lift))
        ax.errorbar(
            np.array(days, dtype="datetime64[D]"),
            values,
            yerr=[lower, upper],
            marker="o",
            capsize=3,
            label=arm,
        )
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_ylabel(f"{metric.upper()} lift (%)")
    if arms:
        ax.legend()
