"""``apprank tune`` on a slice of frappe_ctr: resuming a stored study, pruning, and reproducing the best.

Tiny real searches (2 to 3 trials of 1 to 3 epochs on 4,000 training rows, one thread) against a real
SQLite study: the CLI's output and files, a second run that goes on from the stored trials, a trial
left running by a killed search run again with its values, a poor trial pruned after its first epoch,
and ``apprank train --config best.yaml`` reproducing the best trial's validation AUC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from apprank.cli import build_app
from model.nets import model_spec
from model.nets.search import Choice, FloatRange, LayerStack, SearchSpace
from training import tune as tune_module
from training.config import load_config
from training.pipeline import train_bundle
from training.tune import TuneSettings, open_study, run_search, starting_point, values_of

BASE = ["max_rows=4000", "epochs=1", "threads=1", "precision=fp32", "batch_size=512"]
runner = CliRunner()
app = build_app()


def tune_args(data_dir: Path, study: Path, trials: int) -> list[str]:
    args = ["tune", "--model", "deepfm", "--data", str(data_dir / "frappe_ctr"), "--trials", str(trials)]
    args += ["--study", str(study), "--startup-trials", "1"]
    for item in [*BASE, "hidden_units=[32,32]"]:
        args += ["--set", item]
    return args


def stored(study: Path) -> list[tuple[int, str, float | None, dict[str, Any]]]:
    """(number, state, value, params) of every trial in the study folder's SQLite storage."""
    loaded = optuna.load_study(study_name="apprank-deepfm", storage=f"sqlite:///{study / 'study.db'}")
    return [(t.number, t.state.name, t.value, t.params) for t in loaded.trials]


def test_search_resumes_from_its_study_and_the_best_config_reproduces(data_dir: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    first = runner.invoke(app, tune_args(data_dir, study, 2))
    assert first.exit_code == 0, first.output
    assert (
        "trial 1/2: valid AUC" in first.output and "trial 2/2" in first.output and "best 0." in first.output
    )
    for name in ("study.db", "best.yaml", "trials.csv", "trials.md", "history.png"):
        assert (study / name).is_file(), name
    before = stored(study)
    assert [state for _, state, _, _ in before] == ["COMPLETE", "COMPLETE"]

    again = runner.invoke(app, tune_args(data_dir, study, 3))
    assert again.exit_code == 0, again.output
    after = stored(study)
    assert after[:2] == before and len(after) == 3  # the stored trials were kept, one more was run
    assert "trial 3/3" in again.output and "trial 1/3" not in again.output

    best = max(after, key=lambda row: row[2] or 0.0)
    best_value = best[2]
    assert best_value is not None
    config = load_config(study / "best.yaml")
    assert config.optimizer.lr == best[3]["optimizer.lr"] and config.batch_size == best[3]["batch_size"]
    assert f"trial {best[0]}: validation AUC {best_value:.5f}" in (study / "best.yaml").read_text()
    bundle_config = config.model_copy(update={"serving_graphs": False})  # export only: no serving graphs
    result = train_bundle(data_dir / "frappe_ctr", tmp_path / "bundle", bundle_config)
    assert result is not None
    # the same configuration and seed, trained by `apprank train`, lands on the best trial's AUC
    assert result.metrics["valid"]["auc"] == pytest.approx(best_value, abs=1e-5)
    others = [value for number, _, value, _ in after if number != best[0] and value is not None]
    assert all(abs(value - best_value) > 1e-4 for value in others)  # and the trials differ measurably


def test_a_poor_trial_is_pruned_after_its_first_epoch(data_dir: Path, tmp_path: Path) -> None:
    base = load_config(
        None, [*BASE, "epochs=3", "optimizer.lr=0.005", "hidden_units=[32,32]"], model="deepfm"
    )
    settings = TuneSettings(
        base=base,
        data=data_dir / "frappe_ctr",
        study_dir=tmp_path,
        trials=2,
        pruner_warmup=0,
        pruner_startup=1,
    )
    study = open_study(settings)  # queues the base configuration as trial 0
    space = model_spec("deepfm").params.search_space
    poor = starting_point(base, space) | {"optimizer.lr": 2e-4, "batch_size": 8192, "embedding_l2": 0.3}
    study.enqueue_trial(poor)
    run_search(settings)
    good, pruned = stored(tmp_path)
    assert good[1] == "COMPLETE" and pruned[1] == "PRUNED"
    trial = optuna.load_study(
        study_name="apprank-deepfm", storage=f"sqlite:///{tmp_path / 'study.db'}"
    ).trials[1]
    assert trial.user_attrs["epochs"] == 1 and list(trial.intermediate_values) == [1]  # 1 of 3 epochs


def test_an_interrupted_trial_runs_again_and_the_data_is_encoded_once(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = load_config(None, [*BASE, "hidden_units=[32]"], model="deepfm")
    settings = TuneSettings(base=base, data=data_dir / "frappe_ctr", study_dir=tmp_path, trials=3)
    study = open_study(settings)
    killed = study.ask()  # what a search killed mid-trial leaves behind: a trial stored as RUNNING
    values = tune_module.suggest(killed, model_spec("deepfm").params.search_space)
    prepared: list[TuneSettings] = []
    real_prepare = tune_module.prepare_once

    def counting_prepare(settings: TuneSettings) -> tune_module.Prepared:
        prepared.append(settings)
        return real_prepare(settings)

    monkeypatch.setattr(tune_module, "prepare_once", counting_prepare)
    run_search(settings)
    rows = stored(tmp_path)
    assert [state for _, state, _, _ in rows] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert values_of(rows[0][3], model_spec("deepfm").params.search_space) == values
    assert rows[1][3] == rows[0][3]  # the interrupted values were queued again and trained first
    assert len(prepared) == 1  # three trials, one read and encoding of the data


def test_defaults_are_moved_into_the_space() -> None:
    base = load_config(None, ["embedding_l2=0", "hidden_units=[300,300,300,300,300]"], model="dnn")
    space: SearchSpace = {
        "embedding_l2": FloatRange(1e-3, 0.3, log=True),
        "params.hidden_units": LayerStack(1, 4, (100, 200, 400)),
        "batch_size": Choice((1024, 4096)),
        "params.dropout": FloatRange(0.0, 0.5),
    }
    point = starting_point(base, space)
    assert point == {
        "embedding_l2": 1e-3,
        "params.hidden_units.layers": 4,
        "params.hidden_units.width": 400,  # 300 is nearer 400 than 200 on a log scale
        "batch_size": 4096,
        "params.dropout": 0.2,
    }
    assert values_of(point, space)["params.hidden_units"] == [400] * 4


def test_every_family_declares_a_space_the_config_accepts() -> None:
    from model.nets import REGISTRY
    from training.config import with_values

    for name, spec in REGISTRY.items():
        base = load_config(None, [], model=name)
        point = starting_point(base, spec.params.search_space)
        config = with_values(base, values_of(point, spec.params.search_space))
        assert config.model == name
        assert yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json")))["model"] == name


def test_trials_that_cannot_finish_are_not_counted(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    assert tune_module.finished(study) == []


def test_the_best_header_reads_back_what_it_wrote() -> None:
    """bench/table4.py --no-search reads a committed configuration's search figures from this header."""
    from training.tune_report import best_header, read_best_header

    study = optuna.create_study(direction="maximize", study_name="apprank-x")
    for value in (0.91, 0.93456789, 0.92):
        trial = study.ask()
        trial.set_user_attr("best_epoch", 7)
        study.tell(trial, value)
    pruned = study.ask()
    study.tell(pruned, state=TrialState.PRUNED)
    written = "".join(f"# {line}\n" for line in best_header(study, "data/x").splitlines()) + "model: x\n"
    assert read_best_header(written) == (4, 0.93457)
    assert read_best_header("model: x\n") == (None, None)
