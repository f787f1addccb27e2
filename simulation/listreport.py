"""Printing and charting the recommendation-list metrics (``simulation.listmetrics``) per arm."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from simulation.listmetrics import ALL_USERS, ListMetricsRow

METRICS = (
    ("personalization", "personalization@L"),
    ("coverage", "coverage@L"),
    ("popularity", "popularity@L (% of downloads)"),
)


COLUMNS = ("user type", "arm", "users", "lists", "personalization %", "coverage %", "popularity %")


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def list_metrics_tables(rows: Sequence[ListMetricsRow]) -> list[Table]:
    """One table per list size L: user type x arm, with the three metrics."""
    tables: list[Table] = []
    for k in sorted({row.k for row in rows}):
        table = Table(title=f"recommendation lists, top {k} (from the lists the simulation was served)")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in ("user type", "arm") else "right")
        for row in (r for r in rows if r.k == k):
            table.add_row(
                row.user_type,
                row.arm,
                f"{row.users:,}",
                f"{row.lists:,}",
                _percent(row.personalization),
                _percent(row.coverage),
                _percent(row.popularity, 3),
            )
        tables.append(table)
    return tables


def _groups(rows: Sequence[ListMetricsRow]) -> list[str]:
    ordered = dict.fromkeys(row.user_type for row in rows)
    return [ALL_USERS, *(g for g in ordered if g != ALL_USERS)] if ALL_USERS in ordered else list(ordered)


def _height(row: ListMetricsRow | None, attribute: str) -> float:
    value = None if row is None else getattr(row, attribute)
    return float("nan") if value is None else 100.0 * float(value)


def write_list_metrics_chart(rows: Sequence[ListMetricsRow], path: Path) -> None:
    """A PNG: one row of panels per metric, one column per L, bars per user type and arm."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    sizes = sorted({row.k for row in rows})
    arms = list(dict.fromkeys(row.arm for row in rows))
    groups = _groups(rows)
    figure = Figure(figsize=(4.2 * len(sizes), 9), tight_layout=True)
    axes = figure.subplots(len(METRICS), len(sizes), squeeze=False)
    width = 0.8 / max(1, len(arms))
    by_key = {(row.arm, row.user_type, row.k): row for row in rows}
    for r, (attribute, label) in enumerate(METRICS):
        for c, k in enumerate(sizes):
            ax = axes[r][c]
            for a, arm in enumerate(arms):
                heights = [_height(by_key.get((arm, g, k)), attribute) for g in groups]
                ax.bar(np.arange(len(groups)) + (a - (len(arms) - 1) / 2) * width, heights, width, label=arm)
            ax.set_xticks(np.arange(len(groups)), groups, rotation=20, fontsize=8)
            ax.set_title(label.replace("@L", f"@{k}"), fontsize=10)
            ax.set_ylabel("%")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, title="arm", loc="upper right")
    figure.suptitle("recommendation lists per arm and user type (users split by downloads)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
