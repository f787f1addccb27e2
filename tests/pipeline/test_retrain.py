"""The daily loop on the synthetic world: simulate days against a real server, retrain, reload, serve.

One module-wide server (uvicorn in a thread, the tiny store's bundles copied aside) and one simulated
four-day log; each test retrains over its own window (its own work directory).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from typer.testing import CliRunner

from apprank.bootstrap import EXPERIMENT, BootstrapResult
from apprank.cli import build_app
from model.versions import current_version, list_versions
from pipeline.gate import GateConfig
from pipeline.retrain import RetrainConfig, RetrainJob, Window
from pipeline.retrain_run import Services, run_retrain
from pipeline.retrain_state import RetrainState, Step
from service.app import create_app
from service.db import Database
from service.events.rows import LabeledRow, TrainingPage
from service.events.store import EventStore, open_event_store
from service.settings import DEFAULT_TABLE_PREFIX, ServiceSettings
from simulation.ab_test import Simulation, SimulationConfig
from simulation.eventpost import EventTime
from simulation.storefront import Storefront, load_world
from tests.conftest import REPO, require, wait_until
from tests.simulation.test_simulate import _free_port

pytestmark = pytest.mark.slow
TOKEN = "secret-r"
TODAY = datetime.now(UTC).date()
LAST_DAY = TODAY - timedelta(days=1)
# The tiny store's models are trained for one epoch on a few thousand rows: their logits are nearly
# flat and Platt scaling on a validation split of some dozens of rows lands anywhere. The loop tests
# check the mechanics with a gate that lets such candidates through; the damaged-candidate test uses
# the default margins.
SMALL_DAYS = {"min_holdout_rows": 100, "min_holdout_positives": 3}
LENIENT = {"max_auc_drop": 0.5, "max_logloss_increase": 1.0, "max_calibration_error": 10.0} | SMALL_DAYS
QUICK = ("epochs=1", "threads=1", "batch_size=256")


@dataclass(frozen=True)
class Loop:
    """The running service and its shared state."""

    url: str
    models: Path
    db_url: str
    store: Storefront
    config_file: Path


def simulate(url: str, store: Storefront, first_day: date, days: int) -> int:
    config = SimulationConfig(users=60, days=days, visit_share=1.0, views_per_visit=1.0, candidates=25)
    config = replace(config, list_size=5, event_time=EventTime.SIMULATED, first_day=first_day, concurrency=4)

    async def run() -> int:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return (await Simulation(store, config).run(client)).posted.accepted

    return asyncio.run(run())


@pytest.fixture(scope="module")
def loop(tiny_store: BootstrapResult, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("loop")
    models = root / "models"
    shutil.copytree(tiny_store.config.models_dir, models)
    db_url = f"sqlite:///{root / 'loop.db'}"
    settings = ServiceSettings(
        models_dir=models,
        database_url=db_url,
        experiments_file=tiny_store.config.experiments_file,
        event_clock_skew_s=60 * 86_400.0,
        admin_token=f"ops:{TOKEN}",
        sync_interval_s=0.1,
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 60, "the server")
    require(server.started, "an in-process apprank server")
    url = f"http://127.0.0.1:{port}"
    store = Storefront(load_world(tiny_store.world_file))
    config_file = root / "retrain.yaml"
    config_file.write_text(json.dumps({"gate": LENIENT}))
    try:
        assert simulate(url, store, TODAY - timedelta(days=4), 4) > 800
        yield Loop(url, models, db_url, store, config_file)
    finally:
        server.should_exit = True
        thread.join(30)


def retrain_args(loop: Loop, *extra: str, days: int = 3) -> list[str]:
    args = ["retrain", "--experiment", EXPERIMENT, "--model", "deepfm", "--models", str(loop.models)]
    args += ["--days", str(days), "--end", LAST_DAY.isoformat(), "--config", str(loop.config_file)]
    args += ["--db", loop.db_url, "--url", loop.url, "--token", TOKEN]
    for item in (*QUICK, *extra):
        args += ["--set", item]
    return args


def deepfm_versions(loop: Loop) -> list[str]:
    return [e.version for e in list_versions(loop.models / "deepfm")]


def served_by_deepfm(loop: Loop, users: int = 40) -> set[str]:
    """The versions that answer /rank for users the experiment routes to the deepfm arm."""
    rng = np.random.default_rng(3)
    versions = set()
    for user in range(users):
        apps = loop.store.candidates(10, rng, set())
        body = loop.store.body(user, {"hour": "9", "weekday": "1", "network": "wifi"}, apps)
        answer = httpx.post(f"{loop.url}/rank", json=body | {"experiment": EXPERIMENT}, timeout=30).json()
        if answer["arm"] == "deepfm":
            versions.add(answer["version"])
    return versions


def test_the_loop_publishes_a_version_that_serves_in_place_of_the_old_one(loop: Loop) -> None:
    before = current_version(loop.models / "deepfm")
    assert served_by_deepfm(loop) == {before}
    result = CliRunner().invoke(build_app(), retrain_args(loop))
    assert result.exit_code == 0, result.output
    window = Window.ending(LAST_DAY, 3, 1)
    work = loop.models / ".retrain" / f"deepfm-{window.first_day}-{window.holdout_day}-{window.last_day}"
    summary = json.loads((work / "summary.json").read_text())
    assert summary["outcome"] == "published", summary["reasons"]
    new = summary["candidate_version"]
    assert summary["serving_version"] == before and summary["reload"]["status"] == 200
    # every step's peak memory is in the summary (VmHWM, restarted per step): the training step,
    # which imports torch and holds the model, needs more than the gate after it
    peaks = summary["peak_rss_mib"]
    assert set(peaks) == set(summary["seconds"]) and all(peak > 0 for peak in peaks.values())
    assert peaks["train"] > peaks["gate"]
    assert deepfm_versions(loop) == [before, new] and current_version(loop.models / "deepfm") == new
    assert served_by_deepfm(loop) == {new}
    simulate(loop.url, loop.store, TODAY, 1)  # the next day runs on the new version without a failure
    assert served_by_deepfm(loop) == {new}
    metrics = httpx.get(f"{loop.url}/metrics").text
    assert 'apprank_retrain_outcome{model="deepfm",outcome="published"} 1.0' in metrics
    assert 'apprank_model_age_seconds{model="deepfm"}' in metrics
    audit = httpx.get(f"{loop.url}/models/deepfm/audit").json()
    assert [(a["action"], a["actor"], a["before"], a["after"]) for a in audit][-1] == (
        "publish",
        "retrain",
        before,
        new,
    )
    again = CliRunner().invoke(build_app(), retrain_args(loop))  # the same window once more: nothing new
    assert again.exit_code == 0, again.output
    assert deepfm_versions(loop) == [before, new]


class FlippedLabels:
    """The event store with every label of ``days`` inverted: a deliberately damaged candidate."""

    def __init__(self, store: EventStore, days: tuple[float, float] | None = None) -> None:
        self.store, self.days = store, days

    def labeled_rows(self, experiment: str, start_ts: float, end_ts: float) -> Iterator[LabeledRow]:
        flip = self.days is None or (start_ts, end_ts) == self.days
        for row in self.store.labeled_rows(experiment, start_ts, end_ts):
            yield replace(row, label=1 - row.label) if flip else row

    def training_pages(self, experiment: str, start_ts: float, end_ts: float) -> Iterator[TrainingPage]:
        flip = self.days is None or (start_ts, end_ts) == self.days
        for page in self.store.training_pages(experiment, start_ts, end_ts):
            yield replace(page, labels=[1 - label for label in page.labels]) if flip else page

    def served_models(self, experiment: str, start_ts: float, end_ts: float) -> list[tuple[str, str]]:
        return self.store.served_models(experiment, start_ts, end_ts)


@pytest.mark.parametrize("export", ["prepared", "parquet"])
def test_the_gate_refuses_a_damaged_candidate_and_the_old_version_keeps_serving(
    loop: Loop, export: str
) -> None:
    serving = current_version(loop.models / "deepfm")
    versions = deepfm_versions(loop)
    # each export on its own window (a window's work directory is its own; a finished one is not rerun)
    window = Window.ending(LAST_DAY - timedelta(days=0 if export == "prepared" else 1), 2, 1)
    gate = GateConfig(**SMALL_DAYS)
    config = RetrainConfig(days=2, train={"epochs": 1, "threads": 1}, gate=gate, export=export)
    job = RetrainJob(EXPERIMENT, "deepfm", loop.models, window, config)
    database = Database(loop.db_url)
    try:
        damaged = FlippedLabels(open_event_store(database), window.train)
        services = Services(damaged, database, DEFAULT_TABLE_PREFIX)  # type: ignore[arg-type]
        state = run_retrain(job, services)
    finally:
        database.close()
    assert state.outcome == "refused" and state.decision is not None
    assert any("logloss" in reason or "AUC" in reason for reason in state.reasons), state.reasons
    assert Step.PUBLISH not in state.done
    if export == "prepared":  # the held-out day is read straight from the store: not flipped
        assert state.exported["holdout"]["rows"] >= 100 and (job.work / "data" / "prepared").is_dir()
    assert deepfm_versions(loop) == versions and current_version(loop.models / "deepfm") == serving
    assert served_by_deepfm(loop) == {serving}
    wait_until(
        lambda: (
            'apprank_retrain_outcome{model="deepfm",outcome="refused"} 1.0'
            in httpx.get(f"{loop.url}/metrics").text
        ),
        10,
        "the refusal in the metrics",
    )


def test_a_retrain_killed_half_way_and_run_again_publishes_exactly_one_version(loop: Loop) -> None:
    serving = current_version(loop.models / "deepfm")
    versions = deepfm_versions(loop)
    slow = ("epochs=400", "early_stopping.patience=400", "lr_decay=null", "batch_size=8")
    command = [sys.executable, "-m", "apprank", *retrain_args(loop, *slow, days=4)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    window = Window.ending(LAST_DAY, 4, 1)
    work = loop.models / ".retrain" / f"deepfm-{window.first_day}-{window.holdout_day}-{window.last_day}"
    try:
        wait_until(lambda: (work / "warm").is_dir() or process.poll() is not None, 120, "the training step")
        assert process.poll() is None, "the retrain finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    state = RetrainState.load(work)
    assert state is not None and state.done == [Step.EXPORT] and not state.finished
    assert deepfm_versions(loop) == versions and current_version(loop.models / "deepfm") == serving
    result = CliRunner().invoke(build_app(), retrain_args(loop, days=4))
    assert result.exit_code == 0, result.output
    resumed = RetrainState.load(work)
    assert resumed is not None and resumed.candidate_version == state.candidate_version
    assert resumed.outcome == "published", resumed.reasons
    assert [v for v in deepfm_versions(loop) if v not in versions] == [state.candidate_version]
    assert current_version(loop.models / "deepfm") == state.candidate_version


def test_the_simulation_retrains_after_a_day_and_the_new_version_serves_the_days_after(loop: Loop) -> None:
    """What ``make demo`` runs: the retrain after day 2 beside day 3, day 4 on the new version only."""
    from simulation.retrain_demo import RetrainAfter, swap_check, versions_by_day

    before = current_version(loop.models / "deepfm")
    first_day = TODAY - timedelta(days=30)  # days of their own: no other test's window
    config = SimulationConfig(users=60, days=4, visit_share=1.0, views_per_visit=1.0, candidates=25)
    config = replace(config, list_size=5, event_time=EventTime.SIMULATED, first_day=first_day, concurrency=4)
    retrain = RetrainAfter(
        2, loop.models, "deepfm", loop.url, TOKEN, loop.db_url, loop.config_file, QUICK,
        loop.models.parent / "demo-retrain.log",
    )  # fmt: skip

    async def run() -> Any:
        async with httpx.AsyncClient(base_url=loop.url, timeout=30) as client:
            return await Simulation(loop.store, config).run(client, after_day=retrain.hook(config))

    result = asyncio.run(run())  # a failed /rank or retrain raises
    assert result.posted.accepted > 600 and not result.posted.rejected
    summary = retrain.summary
    assert summary is not None and summary["outcome"] == "published", summary
    new = summary["candidate_version"]
    assert summary["serving_version"] == before and summary["reload"]["status"] == 200
    # every step's peak memory is in the summary (VmHWM, restarted per step): the training step,
    # which imports torch and holds the model, needs more than the gate after it
    peaks = summary["peak_rss_mib"]
    assert set(peaks) == set(summary["seconds"]) and all(peak > 0 for peak in peaks.values())
    assert peaks["train"] > peaks["gate"]
    assert summary["exported"]["train"]["rows"] > 0 and summary["exported"]["holdout"]["rows"] > 0
    versions = versions_by_day(result)
    assert versions[0]["deepfm"] == [before] and versions[1]["deepfm"] == [before]
    assert versions[3]["deepfm"] == [new] and set(versions[2]["deepfm"]) <= {before, new}
    assert versions[3]["lr"] == versions[0]["lr"]  # the other arm is untouched
    check = swap_check(result, "deepfm", "lr", 2)
    assert check["after_days"] == [4] and check["true_ctr_after"] > 0
