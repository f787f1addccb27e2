"""The daily loop inside the simulated A/B test: after day N, retrain a model on the logged days.

``apprank simulate --retrain-after N --models DIR`` runs ``apprank retrain`` (a child process, as the
CronJob would) once day N's events are posted: the window is every simulated day so far, the last one
held out. The retrain publishes a new version and the running service swaps it in (``POST
/models/reload`` with ``--token``, else the store's change counter every worker polls) while day N+1
is simulated, so the swap happens under traffic; a /rank that fails stops the simulation. The
per-day table then shows which version served each arm every day, and ``swap_check`` compares the
retrained model's online CTR before and after the swap on the world's TRUE probabilities of the apps
it showed (no download noise), beside the control arm's over the same days.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from simulation.ab_test import SimulationConfig, SimulationResult


@dataclass
class RetrainAfter:
    """Retrain ``model`` from the experiment's log after simulated day ``day`` (1-based).

    Attributes:
        sets: ``--set`` training overrides passed to the retrain.
        db: the service's database URL (None: the retrain reads ``APPRANK_DATABASE_URL``).
        summary: the retrain's JSON summary, once it ran.
    """

    day: int
    models: Path
    model: str = "deepfm"
    url: str | None = None
    token: str | None = None
    db: str | None = None
    config: Path | None = None
    sets: tuple[str, ...] = ()
    log_file: Path | None = None
    summary: dict[str, Any] | None = field(default=None, init=False)

    def command(self, config: SimulationConfig, summary: Path) -> list[str]:
        """``apprank retrain`` over simulated days 1..``day`` (the last held out)."""
        last = config.start_date() + timedelta(days=self.day - 1)
        command = [
            sys.executable, "-m", "apprank", "retrain", "--experiment", config.experiment,
            "--model", self.model, "--models", str(self.models), "--days", str(self.day),
            "--holdout-days", "1", "--end", last.isoformat(), "--summary", str(summary),
        ]  # fmt: skip
        for flag, value in (("--db", self.db), ("--url", self.url), ("--config", self.config)):
            if value is not None:
                command += [flag, str(value)]
        if self.url is not None and self.token is not None:
            command += ["--token", self.token]
        for item in self.sets:
            command += ["--set", item]
        return command

    async def run(self, config: SimulationConfig) -> None:
        """Run the retrain and keep its summary (a failed retrain stops the simulation)."""
        summary = self.models / f".{self.model}-demo-retrain.json"
        summary.unlink(missing_ok=True)
        out = self.log_file.open("w") if self.log_file is not None else None
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(config, summary),
                stdout=out if out is not None else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.STDOUT,
                env=os.environ | {"COLUMNS": "120"},
            )
            code = await process.wait()
        finally:
            if out is not None:
                out.close()
        if code != 0 or not summary.is_file():
            where = f" (see {self.log_file})" if self.log_file is not None else ""
            raise RuntimeError(f"apprank retrain exited with {code}{where}")
        self.summary = json.loads(summary.read_text())

    def hook(self, config: SimulationConfig) -> Any:
        """The ``after_day`` callback of ``Simulation.run``: the retrain after day ``day``."""

        def after_day(day: int) -> Any:
            return self.run(config) if day + 1 == self.day else None

        return after_day


def versions_by_day(result: SimulationResult) -> dict[int, dict[str, list[str]]]:
    """Per simulated day (0-based), per arm, the versions that answered its /rank calls."""
    log = result.log
    out: dict[int, dict[str, list[str]]] = {}
    for day, arm, version in zip(log.days, log.arms, log.versions, strict=True):
        versions = out.setdefault(day, {}).setdefault(arm, [])
        if version not in versions:
            versions.append(version)
    return out


def true_ctr(result: SimulationResult, arm: str, days: range) -> float:
    """Mean TRUE download probability of the apps ``arm`` showed on ``days`` (0-based)."""
    log = result.log
    mask = (np.asarray(log.arms, dtype=str) == arm) & np.isin(np.asarray(log.days), list(days))
    views = int(mask.sum())
    if not views:
        return float("nan")
    return float(np.asarray(log.true_ctr_sum)[mask].sum() / (views * result.config.list_size))


def swap_check(result: SimulationResult, arm: str, control: str, after: int) -> dict[str, Any]:
    """The retrained arm's true CTR on days 1..``after`` (the old version) against the days after the
    swap completed (day ``after`` + 2 on: day ``after`` + 1 may be served by both versions), and the
    control arm's over the same days. Both arms drift from day to day (contexts, and the apps each user
    downloaded leave the candidates), so ``no_drop`` compares the ratio to the control arm."""
    before, later = range(after), range(after + 1, result.config.days)
    ctr_before, ctr_after = true_ctr(result, arm, before), true_ctr(result, arm, later)
    control_before, control_after = true_ctr(result, control, before), true_ctr(result, control, later)
    ratio_before, ratio_after = ctr_before / control_before, ctr_after / control_after
    figures: dict[str, Any] = {
        "arm": arm,
        "control": control,
        "before_days": [d + 1 for d in before],
        "after_days": [d + 1 for d in later],
        "true_ctr_before": ctr_before,
        "true_ctr_after": ctr_after,
        "control_true_ctr_before": control_before,
        "control_true_ctr_after": control_after,
        "ratio_to_control_before": ratio_before,
        "ratio_to_control_after": ratio_after,
        "no_drop": bool(ratio_after >= ratio_before),
    }
    return figures
