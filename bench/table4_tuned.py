"""``bench/table4.py --tuned``: every model tuned with one budget, then its best configuration on 3 seeds.

Per model, one ``apprank tune`` process searches ``--tune-trials`` trials on frappe_ctr's train and
validation splits (its study under ``<root>/studies/MODEL``, so an interrupted bench resumes the
search) and writes the best configuration to ``<configs-dir>/MODEL.yaml``; then ``apprank train
--config`` trains that configuration once per seed and evaluates it on the test split. ``--jobs``
models are processed at a time, each with its share of the cores. ``--no-search`` skips the search
and trains the configurations already in ``--configs-dir`` (the committed ``configs/tuned``); the
searches table then carries what each configuration's header records (trials, best validation AUC).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from experiments_common import FRAPPE, REPO, Run, RunFailed, execute, markdown_table, threads_per_job
from rich.console import Console

from training.tune_report import read_best_header

TUNED_CONFIGS = REPO / "configs" / "tuned"
QUICK_TUNE_SETS = ("max_rows=5000", "epochs=2")


def add_tuned_options(parser: argparse.ArgumentParser) -> None:
    """The options of the tuned table."""
    parser.add_argument("--tuned", action="store_true", help="tune every model first (one budget each)")
    parser.add_argument("--tune-trials", type=int, default=8, help="finished trials per model")
    parser.add_argument("--configs-dir", type=Path, default=None, help="best configs (default configs/tuned)")
    parser.add_argument(
        "--no-search", action="store_true",
        help="train the configs already in --configs-dir (default configs/tuned) on every seed; no search",
    )  # fmt: skip


def tune_command(model: str, args: argparse.Namespace, root: Path, threads: int | None) -> list[str]:
    """The ``apprank tune`` command line of one model."""
    study = root / "studies" / model
    cmd = [sys.executable, "-m", "apprank", "tune", "--model", model, "--data", str(FRAPPE.absolute())]
    cmd += ["--trials", str(args.tune_trials), "--study", str(study.absolute())]
    cmd += ["--out", str(config_path(model, args, root).absolute())]
    sets = [*args.set, *(QUICK_TUNE_SETS if args.quick else ()), *([f"threads={threads}"] if threads else [])]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def configs_dir(args: argparse.Namespace, root: Path) -> Path:
    """Where best configurations go: configs/tuned, or beside the results for a quick run."""
    if args.configs_dir is not None:
        return Path(args.configs_dir)
    return root / "configs" if args.quick else TUNED_CONFIGS


def config_path(model: str, args: argparse.Namespace, root: Path) -> Path:
    """The best configuration of one model: what its search writes and its seed runs train."""
    return configs_dir(args, root) / f"{model}.yaml"


def study_figures(study: Path) -> dict[str, Any]:
    """Trials, pruned trials, search seconds (sum over trials) and the best validation AUC of a study."""
    with (study / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    finished = [r for r in rows if r["state"] in ("complete", "pruned")]
    complete = [float(r["valid_auc"]) for r in rows if r["state"] == "complete"]
    return {
        "trials": len(finished),
        "pruned": sum(r["state"] == "pruned" for r in rows),
        "search_seconds": sum(float(r["seconds"] or 0) for r in finished),
        "trial_epochs": sum(int(r["epochs"] or 0) for r in finished),
        "best_valid_auc": max(complete) if complete else None,
    }


def header_figures(config: Path) -> dict[str, Any]:
    """The search figures a committed configuration records in its header (``--no-search``); pruned
    trials, search minutes and trial epochs are not recorded there (``None``)."""
    trials, best = read_best_header(config.read_text())
    return {
        "trials": trials, "pruned": None, "search_seconds": None, "trial_epochs": None,
        "best_valid_auc": best, "from_config": str(config),
    }  # fmt: skip


def tune_one(model: str, args: argparse.Namespace, root: Path, threads: int | None, console: Console) -> None:
    """Run (or resume) one model's search; its output goes to ``studies/MODEL.log``.

    Raises:
        RunFailed: the search exited with an error.
    """
    log = root / "studies" / f"{model}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = tune_command(model, args, root, threads)
    started = time.perf_counter()
    with log.open("a") as out:
        done = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RunFailed(f"{' '.join(cmd)} exited {done.returncode}:\n{tail}")
    console.log(f"tuned {model} in {time.perf_counter() - started:.0f} s")


def seed_runs(model: str, args: argparse.Namespace, root: Path, threads: int | None) -> list[Run]:
    """The final trainings of the best configuration: one per seed, evaluated on test."""
    config = config_path(model, args, root)
    runs = []
    for seed in args.seeds:
        sets = [*args.set, f"seed={seed}", *([f"threads={threads}"] if threads else [])]
        out = root / "bundles" / "frappe" / model / f"seed{seed}"
        runs.append(Run(model, FRAPPE, out, tuple(sets), config=config))
    return runs


def tune_and_train(
    model: str, args: argparse.Namespace, root: Path, console: Console
) -> tuple[dict[int, Any], dict[str, Any] | None]:
    """One model end to end: search, then every seed; (metrics by seed, search figures)."""
    threads = threads_per_job(args.jobs, args.threads)
    if args.no_search:
        config = config_path(model, args, root)
        if not config.is_file():
            console.log(f"[red]no configuration[/red]: {config} (run the search, or drop --no-search)")
            return {}, None
        figures = header_figures(config)
    else:
        try:
            tune_one(model, args, root, threads, console)
        except RunFailed as error:
            console.log(f"[red]search failed[/red]: {model}\n{error}")
            return {}, None
        figures = study_figures(root / "studies" / model)
    by_seed: dict[int, Any] = {}
    for seed, run in zip(args.seeds, seed_runs(model, args, root, threads), strict=True):
        try:
            by_seed[seed] = execute(run, resume=not args.no_resume)
        except RunFailed as error:
            console.log(f"[red]failed[/red]: {run.out}\n{error}")
            continue
        test = by_seed[seed]["test"]
        console.log(f"{model}/seed{seed}: test AUC {test['auc']:.4f}, logloss {test['logloss']:.4f}")
    return by_seed, figures


def run_tuned(
    args: argparse.Namespace, root: Path, console: Console
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every model of ``args.models``: ``({"frappe": {model: {seed: metrics}}}, {model: search figures})``."""
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda m: tune_and_train(m, args, root, console), args.models))
    results: dict[str, Any] = {"frappe": {}}
    searches: dict[str, Any] = {}
    for model, (by_seed, figures) in zip(args.models, outcomes, strict=True):
        if by_seed:
            results["frappe"][model] = by_seed
        if figures is not None:
            searches[model] = figures
    return results, searches


def per_epoch_seconds(by_seed: dict[str, Any]) -> float:
    """Mean training seconds per epoch over a model's seeds (the training loop's own clock)."""
    values = [s["train_seconds"] / s["epochs"] for s in by_seed.values() if s["epochs"]]
    return sum(values) / len(values) if values else float("nan")


def searches_markdown(searches: dict[str, Any], summary: dict[str, Any]) -> str:
    """Per model: the search's trials, pruned ones, minutes, best validation AUC, the seeds' s/epoch."""
    headers = ["model", "trials", "pruned", "search min", "trial epochs", "best valid AUC", "s / epoch"]
    rows = []
    for model, s in searches.items():
        seeds = summary.get(model, {}).get("seeds", {})
        best = "" if s["best_valid_auc"] is None else f"{s['best_valid_auc']:.5f}"
        minutes = None if s["search_seconds"] is None else s["search_seconds"] / 60
        rows.append([
            model, _or_na(s["trials"]), _or_na(s["pruned"]), _or_na(minutes, "{:.1f}"),
            _or_na(s["trial_epochs"]), best, f"{per_epoch_seconds(seeds):.2f}",
        ])  # fmt: skip
    return markdown_table(headers, rows)


def _or_na(value: Any, spec: str = "{}") -> str:
    return "n/a" if value is None else spec.format(value)


def write_searches(root: Path, searches: dict[str, Any], summary: dict[str, Any]) -> None:
    """``searches.md`` and ``searches.json`` beside the tuned table."""
    (root / "searches.md").write_text(searches_markdown(searches, summary))
    (root / "searches.json").write_text(json.dumps(searches, indent=2) + "\n")
