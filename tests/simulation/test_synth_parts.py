"""``apprank synth`` writes a large store part by part: the rows of every part, in order, the first part
the one a single draw gives, the summary over all parts (bounded memory is what the parts are for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulation import synth_cli
from simulation.synth import AppStoreWorld, SynthConfig
from simulation.synth_cli import OutputFormat, rank_auc, write_synthetic_dataset
from training.datasets import resolve_dataset
from training.readers import read_all

SMALL = SynthConfig(seed=5, num_users=300, num_apps=60)
ROWS = 5_000  # train 3,500 rows in parts of 1,000: four parts, the last of 500


@pytest.fixture(scope="module")
def parted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, float]]]:
    out = tmp_path_factory.mktemp("parted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth_cli, "PART_ROWS", 1_000)
        patch.setattr(synth_cli, "AUC_ROWS", 2_000)
        summary = write_synthetic_dataset(out, SMALL, ROWS, OutputFormat.PARQUET)
    return out, summary


def test_every_part_is_written_in_order(parted: tuple[Path, dict[str, dict[str, float]]]) -> None:
    out, summary = parted
    splits = resolve_dataset(out)
    train = read_all(splits.train)
    assert train.num_rows == summary["train"]["rows"] == 3_500
    world = AppStoreWorld(SMALL)
    stream = np.random.SeedSequence([SMALL.seed, 2]).spawn(3)[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth_cli, "PART_ROWS", 1_000)
        parts = synth_cli.split_parts(stream, 3_500)
    assert [size for size, _ in parts] == [1_000, 1_000, 1_000, 500]
    expected = [world.sample_impressions(size, rng) for size, rng in parts]
    labels = np.concatenate([chunk.labels for chunk in expected])
    np.testing.assert_array_equal(train.labels, labels)
    users = np.concatenate([chunk.columns["user_id"] for chunk in expected])
    np.testing.assert_array_equal(train.columns["user_id"].astype(str), users.astype(str))
    assert summary["train"]["ctr"] == pytest.approx(labels.mean())
    # the first part is the draw a store of one part makes
    single = world.sample_impressions(
        1_000, np.random.default_rng(np.random.SeedSequence([SMALL.seed, 2]).spawn(3)[0])
    )
    np.testing.assert_array_equal(train.labels[:1_000], single.labels)


def test_the_oracle_auc_is_taken_over_the_first_rows(
    parted: tuple[Path, dict[str, dict[str, float]]],
) -> None:
    out, summary = parted
    train = read_all(resolve_dataset(out).train)
    world = AppStoreWorld(SMALL)
    context = {name: train.columns[name][:2_000] for name in ("hour", "weekday", "network")}
    truth = world.true_probability(train.columns["user_id"][:2_000], context, train.columns["app_id"][:2_000])
    assert summary["train"]["oracle_auc"] == pytest.approx(rank_auc(train.labels[:2_000], truth))
