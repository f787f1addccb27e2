"""Table IV of the DeepFM paper: test AUC and logloss of every registered model, mean +- std over seeds.

Each (dataset, model, seed) trains in its own ``apprank train`` process and writes a real bundle under
``<out-dir>/table4[-<tag>]/bundles``; finished runs are skipped when the bench is started again, so
an interrupted run resumes where it stopped. Writes ``table4.md``, ``table4.json`` and ``table4.png``
(AUC and logloss bars with standard-deviation error bars) and checks the paper's claims.

    .venv/bin/python bench/table4.py                       # frappe_ctr + Criteo slice, 13 models x 3 seeds
    .venv/bin/python bench/table4.py --datasets frappe --jobs 2
    .venv/bin/python bench/table4.py --quick               # smoke run: 5,000 rows, 1 epoch, 1 seed
    nice .venv/bin/python bench/table4.py --tuned --jobs 2  # every model tuned first (table4_tuned.py)
    nice .venv/bin/python bench/table4.py --no-search --jobs 2  # configs/tuned/*.yaml on 3 seeds, no search
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from experiments_common import (
    CRITEO,
    FRAPPE,
    MODELS,
    Run,
    add_parallel_options,
    add_run_options,
    has_deep_part,
    is_done,
    machine,
    markdown_table,
    mean_std,
    pyplot,
    run_many,
    threads_per_job,
    write_json,
)
from rich.console import Console
from rich.table import Table
from table4_tuned import add_tuned_options, run_tuned, write_searches

console = Console()
DATASETS: dict[str, Path] = {"frappe": FRAPPE, "criteo": CRITEO}
# Criteo slice (criteo_10k.csv, 9,999 rows): split 7:2:1 by the seed (so each seed also draws its own
# split), and batches of 256 so that an epoch over ~7,000 rows is ~27 steps instead of 2.
DATASET_SETS: dict[str, tuple[str, ...]] = {
    "frappe": (),
    "criteo": ("valid_fraction=0.2", "test_fraction=0.1", "batch_size=256"),
}
QUICK_SETS = ("max_rows=5000", "epochs=1")
QUICK_DEEP_SETS = ("hidden_units=[32,32]",)
SEEDS = (1, 2, 3)


def plan(args: argparse.Namespace, root: Path) -> list[tuple[str, int, Run]]:
    """Every (dataset, seed, run), seeds outermost so a first complete seed comes early."""
    threads = threads_per_job(args.jobs, args.threads)
    runs = []
    for dataset in args.datasets:
        for seed in args.seeds:
            for model in args.models:
                sets = [*DATASET_SETS[dataset], *args.set]
                if args.quick:
                    sets += [*QUICK_SETS, *(QUICK_DEEP_SETS if has_deep_part(model) else ())]
                sets += [f"seed={seed}"] + ([f"threads={threads}"] if threads else [])
                out = root / "bundles" / dataset / model / f"seed{seed}"
                runs.append((dataset, seed, Run(model, DATASETS[dataset], out, tuple(sets))))
    return runs


def run_all(runs: list[tuple[str, int, Run]], jobs: int, resume: bool, failed: list[str]) -> dict[str, Any]:
    """Execute the runs; returns ``{dataset: {model: {seed: metrics}}}`` and names failures in ``failed``."""
    results: dict[str, Any] = {}
    outcomes = run_many([run for _, _, run in runs], jobs=jobs, resume=resume, console=console)
    for (dataset, seed, run), metrics in zip(runs, outcomes, strict=True):
        if metrics is None:
            failed.append(f"{dataset}/{run.model}/seed{seed}")
        else:
            results.setdefault(dataset, {}).setdefault(run.model, {})[seed] = metrics
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per dataset and model: mean and std of test AUC / logloss, plus the per-seed figures."""
    summary: dict[str, Any] = {}
    for dataset, models in results.items():
        summary[dataset] = {}
        for model in MODELS:
            if model not in models:
                continue
            seeds = dict(sorted(models[model].items()))
            auc = mean_std([m["test"]["auc"] for m in seeds.values()])
            logloss = mean_std([m["test"]["logloss"] for m in seeds.values()])
            summary[dataset][model] = {
                "auc_mean": auc[0], "auc_std": auc[1],
                "logloss_mean": logloss[0], "logloss_std": logloss[1],
                "seeds": {
                    str(seed): {
                        "auc": m["test"]["auc"], "logloss": m["test"]["logloss"],
                        "epochs": int(m["training"]["epochs"]),
                        "train_seconds": m["training"]["train_seconds"],
                        "wall_seconds": m["wall_seconds"],
                    }
                    for seed, m in seeds.items()
                },
            }  # fmt: skip
    return summary


def to_markdown(summary: dict[str, Any]) -> str:
    """One markdown table: a row per model, AUC and logloss columns per dataset."""
    datasets = list(summary)
    headers = ["model"] + [f"{d} {metric}" for d in datasets for metric in ("AUC", "logloss")]
    rows = []
    for model in MODELS:
        if not any(model in summary[d] for d in datasets):
            continue
        cells = [model]
        for d in datasets:
            s = summary[d].get(model)
            if s is None:
                cells += ["", ""]
                continue
            cells.append(f"{s['auc_mean']:.4f} ± {s['auc_std']:.4f}")
            cells.append(f"{s['logloss_mean']:.4f} ± {s['logloss_std']:.4f}")
        rows.append(cells)
    return markdown_table(headers, rows)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Bars of mean AUC and logloss per model with std error bars: a column per dataset."""
    plt = pyplot()
    datasets = list(summary)
    fig, axes = plt.subplots(2, len(datasets), figsize=(6.5 * len(datasets), 8), squeeze=False)
    for col, dataset in enumerate(datasets):
        models = [m for m in MODELS if m in summary[dataset]]
        for row, metric in enumerate(("auc", "logloss")):
            ax = axes[row][col]
            means = [summary[dataset][m][f"{metric}_mean"] for m in models]
            stds = [summary[dataset][m][f"{metric}_std"] for m in models]
            ax.bar(models, means, yerr=stds, capsize=3, color="tab:blue" if row == 0 else "tab:orange")
            low, high = min(means) - 2 * max(stds), max(means) + 2 * max(stds)
            pad = 0.1 * (high - low or 0.01)
            ax.set_ylim(low - pad, high + pad)
            ax.set_title(f"{dataset}: test {'AUC' if metric == 'auc' else 'logloss'}")
            ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def show(summary: dict[str, Any]) -> None:
    """Print the summary as a rich table."""
    for dataset, models in summary.items():
        table = Table(title=f"Table IV: {dataset} (test split, mean ± std over seeds)")
        for column in ("model", "AUC", "logloss", "seeds", "epochs"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for model, s in models.items():
            epochs = "/".join(str(v["epochs"]) for v in s["seeds"].values())
            table.add_row(
                model, f"{s['auc_mean']:.4f} ± {s['auc_std']:.4f}",
                f"{s['logloss_mean']:.4f} ± {s['logloss_std']:.4f}", str(len(s["seeds"])), epochs,
            )  # fmt: skip
        console.print(table)


def compare(models: dict[str, Any], better: str, worse: str, metric: str) -> dict[str, Any]:
    """Does ``better`` beat ``worse`` on ``metric`` (higher AUC, lower logloss), and by how many
    standard errors of the mean per-seed difference (paired: a seed is the same split and data order
    for both models; None with fewer than 2 common seeds)."""
    a, b = models[better], models[worse]
    sign = 1.0 if metric == "auc" else -1.0
    diff = sign * (a[f"{metric}_mean"] - b[f"{metric}_mean"])
    common = sorted(set(a["seeds"]) & set(b["seeds"]))
    paired = [sign * (a["seeds"][s][metric] - b["seeds"][s][metric]) for s in common]
    mean, std = mean_std(paired)
    margin = mean / (std / math.sqrt(len(paired))) if len(paired) >= 2 and std > 0 else None
    return {
        "better": better, "worse": worse, "metric": metric, "margin": diff, "margin_se": margin,
        "holds": diff > 0, "clear": None if margin is None else margin >= 2.0,
    }  # fmt: skip


CLAIMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("DeepFM-D beats its FM part alone", "deepfm", ("fm",)),
    ("DeepFM-D beats its deep part alone (DNN)", "deepfm", ("dnn",)),
    ("sharing the embedding (DeepFM-D) beats separate embeddings (FM & DNN)", "deepfm", ("fm_dnn",)),
)


def check_claims(models: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims on one dataset's summary; a claim holds when each comparison holds on both
    AUC and logloss. Claims whose models were not run are left out."""
    claims = [
        ("every interaction model beats LR", "lr", tuple(m for m in MODELS if m != "lr"), True),
        *((text, better, worse, False) for text, better, worse in CLAIMS),
    ]
    out = []
    for text, anchor, others, anchor_is_worse in claims:
        if anchor not in models or not any(m in models for m in others):
            continue
        pairs = [(m, anchor) if anchor_is_worse else (anchor, m) for m in others if m in models]
        comparisons = [compare(models, b, w, metric) for b, w in pairs for metric in ("auc", "logloss")]
        auc_only = all(c["holds"] for c in comparisons if c["metric"] == "auc")
        holds = all(c["holds"] for c in comparisons)
        out.append({"claim": text, "holds": holds, "holds_auc": auc_only, "comparisons": comparisons})
    return out


def render_claims(claims: dict[str, list[dict[str, Any]]]) -> None:
    """Print each claim's verdict, and the comparisons that fail."""
    for dataset, items in claims.items():
        for claim in items:
            verdict = "[green]holds (AUC and logloss)[/green]"
            if not claim["holds"]:
                verdict = "[yellow]holds on AUC only[/yellow]" if claim["holds_auc"] else "[red]fails[/red]"
            console.print(f"{dataset}: {claim['claim']}: {verdict}")
            misses = [c for c in claim["comparisons"] if not c["holds"]]
            if misses:
                console.print("    not met: " + "; ".join(_miss(c) for c in misses))


def _miss(comparison: dict[str, Any]) -> str:
    c = comparison
    se = "" if c["margin_se"] is None else f" ({c['margin_se']:+.1f} se)"
    return f"{c['better']} vs {c['worse']} {c['metric']} {c['margin']:+.4f}{se}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--tag", default="", help="suffix of the output folder (ablations)")
    parser.add_argument("--report-only", action="store_true", help="tabulate the finished runs, train none")
    add_run_options(parser, quick="5,000 rows, 1 epoch, [32,32], first seed")
    add_parallel_options(parser)
    add_tuned_options(parser)
    args = parser.parse_args()
    args.tuned = args.tuned or args.no_search
    if args.tuned:
        args.datasets = ["frappe"]  # the searches run on frappe_ctr's validation split
        args.tag = "-".join(filter(None, ["tuned", args.tag]))
    if args.quick:
        args.seeds = args.seeds[:1]
        args.tag = "-".join(filter(None, [args.tag, "quick"])) if args.tuned else args.tag or "quick"
        args.tune_trials = min(args.tune_trials, 2)
    return args


def main() -> None:
    args = parse_args()
    root = args.out_dir / ("table4" + (f"-{args.tag}" if args.tag else ""))
    started = time.perf_counter()
    host = machine()
    failed: list[str] = []
    searches: dict[str, Any] = {}
    if args.tuned:
        results, searches = run_tuned(args, root, console)
        failed += [f"frappe/{m}" for m in args.models if m not in results["frappe"]]
    else:
        runs = plan(args, root)
        if args.report_only:
            runs = [item for item in runs if is_done(item[2])]
        results = run_all(runs, args.jobs, not args.no_resume, failed)
    summary = summarise(results)
    if not any(summary.values()):
        raise SystemExit("no finished runs to report")
    claims = {dataset: check_claims(models) for dataset, models in summary.items()}
    show(summary)
    render_claims(claims)
    elapsed = time.perf_counter() - started
    payload = {"machine": host, "elapsed_seconds": elapsed, "settings": vars(args) | {"out_dir": str(root)}}
    payload |= {"dataset_sets": DATASET_SETS, "results": summary, "claims": claims, "failed": failed}
    if args.tuned:
        payload["searches"] = searches
        write_searches(root, searches, summary["frappe"])
    write_json(root / "table4.json", payload)
    (root / "table4.md").write_text(to_markdown(summary))
    plot(summary, root / "table4.png")
    console.print(f"{elapsed / 60:.1f} min; wrote {root}/table4.md, table4.json, table4.png")
    if failed:
        console.print(f"[red]{len(failed)} runs failed:[/red] {', '.join(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
