"""The daily lift chart, rendered on the server by matplotlib (PNG for files and ``report.png``, SVG for
the web console): per metric, each arm's lift over the control as it stood at the end of every day
(cumulative, CUPED-adjusted where CUPED applies) with its always-valid interval as a band, and that
day's own lift with its 95 % interval.

matplotlib is part of the serving install (the ``serve`` extra) so the console's chart and
``report.png`` work in the serving image; it is imported lazily, at the first chart, so the service
starts without paying for it. ``chart_available`` still says whether it is installed, for partial
installs.
"""

from __future__ import annotations

import importlib.util
import io
import threading
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Literal

import numpy as np

from service.report.models import DayReport, ExperimentReport, Lift, Metric

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ChartFormat = Literal["png", "svg"]
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_LOCK = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe


def chart_available() -> bool:
    """True when matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def render_daily_chart(report: ExperimentReport, fmt: ChartFormat = "png") -> bytes:
    """The chart's bytes: two panels, CTR lift and CVR lift, in percent.

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib.figure import Figure

    with _LOCK:
        figure = Figure(figsize=(9, 6), tight_layout=True)
        axes = figure.subplots(2, 1, sharex=True)
        metrics: tuple[Metric, Metric] = ("ctr", "cvr")
        arms = sorted({lift.arm for day in report.daily for lift in day.cumulative or day.lifts})
        for ax, metric in zip(axes, metrics, strict=True):
            for arm, color in zip(arms, _COLORS * (1 + len(arms) // len(_COLORS)), strict=False):
                _plot_arm(ax, report.daily, arm, metric, color)
            ax.axhline(0.0, color="grey", linewidth=1)
            ax.set_ylabel(f"{metric.upper()} lift (%)")
            if arms:
                ax.legend(fontsize="small", loc="best")
        axes[-1].set_xlabel("day (UTC)")
        _pad_days(axes[-1], report)
        figure.suptitle(
            f"{report.experiment}: lift over {report.control}\n"
            "line and band: cumulative, always-valid interval; points: that day alone, 95 % CI",
            fontsize="medium",
        )
        figure.autofmt_xdate()
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=100, metadata=_metadata(fmt))
    return buffer.getvalue()


def _metadata(fmt: ChartFormat) -> dict[str, str | None]:
    """No creation date in the SVG, so the same report gives the same bytes."""
    return {"Date": None} if fmt == "svg" else {}


def _pad_days(ax: Axes, report: ExperimentReport) -> None:
    """Half a day of margin on each side, so a single day is not stretched over years."""
    if not report.daily:
        return
    days = np.array([day.day for day in report.daily], dtype="datetime64[D]")
    half_day = np.timedelta64(12, "h")
    ax.set_xlim(days.min() - half_day, days.max() + half_day)


def _series(days: Sequence[DayReport], arm: str, metric: Metric, cumulative: bool) -> list[tuple[date, Lift]]:
    """(day, lift) of one arm and metric, where the lift is defined."""
    found = []
    for day in days:
        for lift in day.cumulative if cumulative else day.lifts:
            if lift.arm == arm and lift.metric == metric and lift.lift is not None:
                found.append((day.day, lift))
    return found


def _plot_arm(ax: Axes, days: Sequence[DayReport], arm: str, metric: Metric, color: str) -> None:
    """One arm on one panel: the cumulative line and band, and the daily points with error bars."""
    cumulative = [(day, _decisive(lift)) for day, lift in _series(days, arm, metric, cumulative=True)]
    if cumulative:
        x = np.array([day for day, _ in cumulative], dtype="datetime64[D]")
        values, low, high = (np.array([point[k] for _, point in cumulative]) for k in range(3))
        label = f"{arm} (cumulative{', CUPED' if any(p[3] for _, p in cumulative) else ''})"
        ax.plot(x, values, color=color, marker="o", label=label)
        ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)
    own = _series(days, arm, metric, cumulative=False)
    if own:
        x = np.array([day for day, _ in own], dtype="datetime64[D]")
        values = np.array([100 * lift.lift for _, lift in own if lift.lift is not None])
        below = [values[k] - _percent(lift.ci.low, values[k]) for k, (_, lift) in enumerate(own)]
        above = [_percent(lift.ci.high, values[k]) - values[k] for k, (_, lift) in enumerate(own)]
        ax.errorbar(
            x, values, yerr=[below, above], fmt="x", color=color, alpha=0.5, capsize=3,
            label=f"{arm} (that day)",
        )  # fmt: skip


def _decisive(lift: Lift) -> tuple[float, float, float, bool]:
    """The lift and always-valid interval that decide (CUPED's where it applies), in percent."""
    if lift.cuped is not None and lift.cuped.lift is not None:
        interval = lift.cuped.sequential_ci
        return 100.0 * lift.cuped.lift, _percent(interval.low, np.nan), _percent(interval.high, np.nan), True
    value = 100.0 * (lift.lift or 0.0)
    return value, _percent(lift.sequential_ci.low, np.nan), _percent(lift.sequential_ci.high, np.nan), False


def _percent(value: float | None, missing: float) -> float:
    return missing if value is None else 100.0 * value
