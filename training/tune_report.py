"""What ``apprank tune`` writes into the study folder: the best configuration, the trials, the plots.

* ``best.yaml``: the best trial's configuration, which ``apprank train --config`` takes as it is;
* ``trials.csv`` and ``trials.md``: one row per trial (number, state, validation AUC, epochs, values);
* ``history.png`` (each trial's value and the best so far) and ``importances.png`` (how much of the
  value's variation each parameter explains), both drawn by Optuna's matplotlib visualisations.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from training.config import TrainConfig

# Settings of where and how a run executes rather than what it learns: not part of a tuned config.
RUN_ONLY = frozenset(
    {"threads", "device", "name", "version", "async_loading", "chunk_rows", "eval_batch_size"}
)


def config_yaml(config: TrainConfig, header: str) -> str:
    """``config`` as YAML for ``apprank train --config``: every value written out, run settings left out.

    Written in full so that nothing falls back to a per-model default that the search did not see.
    """
    data = config.model_dump(mode="json", exclude=set(RUN_ONLY))
    data["params"] = config.model_params().model_dump(mode="json")
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + yaml.safe_dump(data, sort_keys=False)


def best_header(study: optuna.Study, data: str) -> str:
    """The provenance lines written above the best configuration."""
    best = study.best_trial
    epoch = best.user_attrs.get("best_epoch", "?")
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    return (
        f"apprank tune: best of {done} trials of study {study.study_name!r} on {data}\n"
        f"trial {best.number}: validation AUC {best.value:.5f} (best epoch {epoch})"
    )


def read_best_header(text: str) -> tuple[int | None, float | None]:
    """What :func:`best_header` recorded above a written configuration: (trials, best validation AUC),
    ``None`` for what the text's comment lines do not hold."""
    comments = " ".join(line for line in text.splitlines() if line.startswith("#"))
    trials = re.search(r"best of (\d+) trials", comments)
    best = re.search(r"validation AUC ([0-9.]+)", comments)
    return (int(trials.group(1)) if trials else None), (float(best.group(1)) if best else None)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat row per trial: number, state, value, epochs, seconds, then the parameters."""
    rows = []
    for trial in study.trials:
        row: dict[str, Any] = {
            "trial": trial.number,
            "state": trial.state.name.lower(),
            "valid_auc": trial.value if trial.value is not None else _last_reported(trial),
            "epochs": trial.user_attrs.get("epochs"),
            "seconds": round(trial.user_attrs.get("seconds", 0.0), 1),
        }
        rows.append(row | dict(trial.params))
    return rows


def _last_reported(trial: FrozenTrial) -> float | None:
    """A pruned trial's last per-epoch AUC (Optuna stores no value for it)."""
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.5f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def trials_markdown(rows: list[dict[str, Any]]) -> str:
    """The trials as a GitHub-flavoured markdown table."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def trials_csv(rows: list[dict[str, Any]]) -> str:
    """The trials as CSV (the union of every trial's columns)."""
    import csv
    import io

    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def plot_search(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's optimisation history and (with 3+ completed trials) parameter importances as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    complete = [t for t in study.trials if t.state is TrialState.COMPLETE]
    plots: list[tuple[str, Callable[..., Any]]] = [("history.png", optuna_plots.plot_optimization_history)]
    if len(complete) >= 3:
        plots.append(("importances.png", optuna_plots.plot_param_importances))
    for name, draw in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = draw(study, target_name="validation AUC")
        figure = axes.get_figure(root=True)
        assert figure is not None
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
        written.append(folder / name)
    return written


def write_outputs(study: optuna.Study, best: TrainConfig, folder: Path, data: str) -> list[Path]:
    """Write best.yaml, trials.csv, trials.md and the plots into ``folder``; the paths written."""
    rows = trial_rows(study)
    files = {
        "best.yaml": config_yaml(best, best_header(study, data)),
        "trials.csv": trials_csv(rows),
        "trials.md": trials_markdown(rows),
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / name for name in files] + plot_search(study, folder)
