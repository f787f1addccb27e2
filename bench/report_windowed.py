"""The report's previous read path, kept for ``report_bench.py --compare``: one SQL query with a window.

A running sum per user (``SUM(...) OVER (PARTITION BY arm, user_id ORDER BY day)``) and each user's
pre-period joined once, aggregated per (arm, day) in SQL. It predates the download rule (it counts every
download), so it gives the same rows as ``service.report.sums.read_arm_days`` only on a store where
every download has its impression, as the bench's store has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.report.sums import PAIRS, ArmDay, DaySums, Moments, ReportStore

WINDOWED_SUMS = """
WITH exposed AS MATERIALIZED (
    SELECT user_id, MIN(first_day) AS first_day FROM (
        SELECT arm, user_id, MIN(day) AS first_day FROM {p}event_user_days WHERE experiment = ?
        GROUP BY arm, user_id
    ) AS per_arm
    GROUP BY user_id
),
pre AS MATERIALIZED (
    SELECT u.user_id, SUM(u.impressions) AS ip, SUM(u.downloads) AS dp
    FROM {p}event_user_days AS u CROSS JOIN exposed AS x
    WHERE x.user_id = u.user_id AND u.day >= x.first_day - ? AND u.day < x.first_day
    GROUP BY u.user_id
),
running AS (
    SELECT e.arm, e.day, e.impressions AS i, e.downloads AS d,
           SUM(e.impressions) OVER w AS ci, SUM(e.downloads) OVER w AS cd,
           CASE WHEN p.user_id IS NULL THEN 0 ELSE 1 END AS has_pre,
           COALESCE(p.ip, 0) AS ip, COALESCE(p.dp, 0) AS dp
    FROM {p}event_user_days AS e LEFT JOIN pre AS p ON p.user_id = e.user_id
    WHERE e.experiment = ? AND e.day >= ? AND e.day <= ?
    WINDOW w AS (PARTITION BY e.arm, e.user_id ORDER BY e.day ROWS UNBOUNDED PRECEDING)
),
flagged AS (
    SELECT running.*, CASE WHEN ci = i AND cd = d THEN 1 ELSE 0 END AS is_first FROM running
)
SELECT arm, day,
       COUNT(*), SUM(i), SUM(d), SUM(i * i), SUM(d * d), SUM(i * d),
       SUM(is_first), SUM(is_first * has_pre),
       SUM(d), SUM(i), SUM(is_first * dp), SUM(is_first * ip),
       SUM(cd * cd - (cd - d) * (cd - d)), SUM(cd * ci - (cd - d) * (ci - i)),
       SUM(d * dp), SUM(d * ip),
       SUM(ci * ci - (ci - i) * (ci - i)), SUM(i * dp), SUM(i * ip),
       SUM(is_first * dp * dp), SUM(is_first * dp * ip), SUM(is_first * ip * ip)
FROM flagged
GROUP BY arm, day
ORDER BY arm, day
"""


def read_arm_days_windowed(
    store: ReportStore, experiment: str, first_day: int, last_day: int, lookback_days: int
) -> list[ArmDay]:
    """The (arm, day) rows of ``experiment`` for days in [first_day, last_day], by the windowed query."""
    query = WINDOWED_SUMS.format(p=store.prefix)
    params = (experiment, lookback_days, experiment, first_day, last_day)
    with store.db.read() as cursor:
        cursor.execute(store.db.sql(query), params)
        rows = cursor.fetchall()
    return [_arm_day(row) for row in rows]


def _arm_day(row: Sequence[Any]) -> ArmDay:
    arm, day, *numbers = row
    values = [float(0 if v is None else v) for v in numbers]
    own = DaySums(int(values[0]), *values[1:6])
    s = np.asarray(values[8:12])
    q = np.zeros((4, 4))
    for (a, b), value in zip(PAIRS, values[12:], strict=True):
        q[a, b] = q[b, a] = value
    return ArmDay(str(arm), int(day), own, Moments(int(values[6]), int(values[7]), s, q))
