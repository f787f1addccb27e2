"""``apprank synth``: write a synthetic app-store dataset that ``resolve_dataset(DIR)`` reads directly.

The folder gets ``train``, ``valid`` and ``test`` files (CSV or Parquet, with a ``true_probability``
column the readers ignore), ``schema.yaml`` and ``synth.json`` (the ``SynthConfig``, from which
``AppStoreWorld`` rebuilds the same store and its oracle).
"""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console
from rich.table import Table

from model.files import TableWriter, save_schema_yaml
from simulation.synth import AppStoreWorld, SynthConfig

console = Console()
SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.2, "test": 0.1}
PART_ROWS = 500_000  # rows sampled and written at a time (bounds the memory of a large store)
AUC_ROWS = 1_000_000  # rows of each split the oracle AUC is taken over


class OutputFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


def rank_auc(labels: npt.NDArray[np.floating[Any]], scores: npt.NDArray[np.floating[Any]]) -> float:
    """ROC AUC by the rank-sum formula (ties get their average rank)."""
    positives = labels > 0.5
    count_pos, count_neg = int(positives.sum()), int((~positives).sum())
    if count_pos == 0 or count_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse][positives].sum())
    return (rank_sum - count_pos * (count_pos + 1) / 2.0) / (count_pos * count_neg)


def split_parts(stream: np.random.SeedSequence, rows: int) -> list[tuple[int, np.random.Generator]]:
    """The parts a split of ``rows`` rows is sampled in: (rows, generator) each, ``PART_ROWS`` at most.

    The first part draws from ``stream`` itself and the others from its children, so a split of up to
    ``PART_ROWS`` rows is the one a single draw gives.
    """
    sizes = [min(PART_ROWS, rows - start) for start in range(0, rows, PART_ROWS)]
    rngs = [np.random.default_rng(stream), *(np.random.default_rng(s) for s in stream.spawn(len(sizes) - 1))]
    return list(zip(sizes, rngs, strict=True))


def write_synthetic_dataset(
    out: Path, config: SynthConfig, rows: int, fmt: OutputFormat = OutputFormat.CSV
) -> dict[str, dict[str, float]]:
    """Sample ``rows`` impressions split 7:2:1 into ``out``; returns rows, CTR and oracle AUC per split.

    Rows are sampled and written part by part (``PART_ROWS`` each), so memory is bounded by the part,
    not by ``rows``; the oracle AUC is taken over the first ``AUC_ROWS`` rows of each split (all of
    them up to that size).
    """
    world = AppStoreWorld(config)
    out.mkdir(parents=True, exist_ok=True)
    save_schema_yaml(world.schema, out / "schema.yaml")
    streams = np.random.SeedSequence([config.seed, 2]).spawn(len(SPLIT_FRACTIONS))
    summary: dict[str, dict[str, float]] = {}
    extra = {"true_probability": np.dtype(np.float64)}
    for (split, fraction), stream in zip(SPLIT_FRACTIONS.items(), streams, strict=True):
        written, clicks = 0, 0.0
        labels: list[npt.NDArray[Any]] = []
        truths: list[npt.NDArray[Any]] = []
        with TableWriter(out / f"{split}.{fmt.value}", world.schema, extra=extra) as writer:
            for size, rng in split_parts(stream, max(1, round(rows * fraction))):
                chunk = world.sample_impressions(size, rng)
                context = {name: chunk.columns[name] for name in ("hour", "weekday", "network")}
                truth = world.true_probability(chunk.columns["user_id"], context, chunk.columns["app_id"])
                writer.write(chunk.labels, chunk.columns, {"true_probability": truth})
                if written < AUC_ROWS:
                    labels.append(chunk.labels[: AUC_ROWS - written])
                    truths.append(truth[: AUC_ROWS - written])
                written += chunk.num_rows
                clicks += float(np.sum(chunk.labels))
        summary[split] = {
            "rows": float(written),
            "ctr": clicks / written,
            "oracle_auc": rank_auc(np.concatenate(labels), np.concatenate(truths)),
        }
    # last: its presence says the store is complete (the scale bench reuses a folder that has it)
    (out / "synth.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    return summary


def synth(
    out: Annotated[Path, typer.Option(help="folder to write train/valid/test + schema.yaml into")],
    rows: Annotated[int, typer.Option(min=10, help="impressions in all, split 7:2:1")] = 300_000,
    seed: Annotated[int, typer.Option(help="seed of the store (users, apps, effects) and the sampling")] = 7,
    users: Annotated[int, typer.Option(min=1, help="number of users")] = 5000,
    apps: Annotated[int, typer.Option(min=2, help="number of apps")] = 500,
    ctr: Annotated[float, typer.Option(min=0.001, max=0.999, help="mean CTR of logged impressions")] = 0.08,
    interactions: Annotated[
        float, typer.Option(min=0.0, help="strength of the 2nd- and 3rd-order effects (0 = none)")
    ] = 1.0,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="file format")] = OutputFormat.CSV,
) -> None:
    """Write a synthetic app-store dataset with a known true download probability."""
    config = SynthConfig(
        seed=seed, num_users=users, num_apps=apps, target_ctr=ctr, interaction_strength=interactions
    )
    summary = write_synthetic_dataset(out, config, rows, fmt)
    table = Table(title=f"apprank synth -> {out}")
    for column in ("split", "rows", "CTR", "oracle AUC"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, figures in summary.items():
        table.add_row(
            split, f"{int(figures['rows']):,}", f"{figures['ctr']:.4f}", f"{figures['oracle_auc']:.4f}"
        )
    console.print(table)
    console.print(f"train with: apprank train --data {out} --model deepfm --out <bundle dir>")


def register(app: typer.Typer) -> None:
    """Add ``apprank synth`` to the CLI."""
    app.command("synth")(synth)
