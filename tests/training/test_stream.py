"""Streaming training and evaluation: exact streamed metrics, 2 ranks under torchrun on uneven shards,
async = sync, raw input over the memory budget prepared into the cache, and real files end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from apprank.cli import build_app
from model.bundle import read_bundle
from model.nets import build_model
from tests.training.stream_support import small_config, write_dataset
from training.datasets import resolve_dataset
from training.pipeline import prepare, train_bundle
from training.prepared.reader import PreparedDataset
from training.prepared.writer import prepare_dataset
from training.sources import open_stream
from training.trainer import Trainer, evaluate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("stream") / "raw")


@pytest.fixture(scope="module")
def prepared(raw: Path) -> Path:
    out = raw.parent / "prepared"
    prepare_dataset(resolve_dataset(raw), out, small_config())
    return out


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _train_stream(prepared: Path, *overrides: str) -> torch.nn.Module:
    config = small_config(*overrides)
    stream = open_stream(prepared, config, None)
    torch.manual_seed(config.seed)
    model = build_model(config.model, stream.encoder.layout, config.params)
    Trainer(model, config).fit(stream.train, stream.valid)
    return model


def test_streamed_evaluation_is_exact(raw: Path, prepared: Path) -> None:
    config = small_config()
    _, memory = prepare(resolve_dataset(raw), config, None)
    stream = open_stream(prepared, config, None)
    torch.manual_seed(0)
    model = build_model("deepfm", stream.encoder.layout, config.params)
    for split, data in (("valid", memory.valid), ("test", memory.test)):
        assert data is not None
        streamed = evaluate(model, getattr(stream, split), 300)  # blocks cut across row groups
        in_memory = evaluate(model, data, 65_536)
        assert streamed["rows"] == in_memory["rows"] == len(data)
        assert streamed["auc"] == pytest.approx(in_memory["auc"], abs=1e-12)
        assert streamed["logloss"] == pytest.approx(in_memory["logloss"], rel=1e-6)


def test_asynchronous_reading_trains_the_same_model(prepared: Path) -> None:
    synchronous = _weights(_train_stream(prepared, "async_loading=false"))
    asynchronous = _weights(_train_stream(prepared, "async_loading=true"))
    assert all(torch.equal(synchronous[k], asynchronous[k]) for k in synchronous)


def test_two_ranks_on_uneven_shards_read_every_row_once(raw: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "uneven"
    prepare_dataset(resolve_dataset(raw), prepared, small_config("prepare.row_group_rows=1024"))
    groups = PreparedDataset(prepared).row_groups("train")
    assert [g.rows for g in groups] == [1024, 1024, 952]  # rank 0: 1976 rows, rank 1: 1024 (8 padded steps)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command += ["-m", "tests.training.stream_worker", str(prepared), str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 16
    assert ranks[0]["epochs"] == ranks[1]["epochs"] == 2
    for epoch in range(2):
        reads = [rank["train_reads"][epoch] for rank in ranks]
        assert sorted(reads[0]["row_groups"]) == [0, 2] and reads[1]["row_groups"] == [1]
        assert reads[0]["rows"] + reads[1]["rows"] == 3000
    assert ranks[0]["test_rows_read"] + ranks[1]["test_rows_read"] == 500
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"]  # DDP kept the replicas equal
    assert ranks[0]["test"] == ranks[1]["test"] and ranks[0]["test"]["rows"] == 500
    # the gathered test figures are those of the final weights over all rows, scored by one process
    config = small_config()
    stream = open_stream(prepared, config, None)
    model = build_model(config.model, stream.encoder.layout, config.params)
    model.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert stream.test is not None
    alone = evaluate(model, stream.test, 65_536)
    assert alone["auc"] == pytest.approx(ranks[0]["test"]["auc"], abs=1e-12) and alone["auc"] > 0.7


def test_raw_input_over_the_memory_budget_is_prepared_once_into_the_cache(raw: Path, tmp_path: Path) -> None:
    config = small_config("memory_budget=1KB", f"prepared_cache={tmp_path / 'cache'}", "epochs=1")
    first = train_bundle(raw, tmp_path / "one", config)
    assert first is not None and first.metrics["training"]["streamed"] == 1.0
    training = first.metrics["training"]
    assert 0.0 < training["train_data_wait_s"] < training["train_seconds"]  # the data path's share, measured
    (cached,) = (tmp_path / "cache").iterdir()
    manifest = PreparedDataset(cached).manifest
    assert manifest.cache_key == cached.name and manifest.splits["train"].rows == 3000
    stamp = (cached / "manifest.json").stat().st_mtime_ns
    second = train_bundle(raw, tmp_path / "two", config)
    assert second is not None and (cached / "manifest.json").stat().st_mtime_ns == stamp  # reused
    assert second.metrics["test"]["auc"] == pytest.approx(first.metrics["test"]["auc"], abs=1e-12)
    in_memory = train_bundle(raw, tmp_path / "mem", small_config("epochs=1"))
    assert in_memory is not None and in_memory.metrics["training"]["streamed"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "overrides"),
    [("criteo/dac_8k.txt", ["epochs=2"]), ("frappe_ctr", ["epochs=1", "max_rows=30000"])],
)
def test_real_files_through_prepare_and_train(
    data_dir: Path, tmp_path: Path, name: str, overrides: list[str]
) -> None:
    sets = [arg for item in ["batch_size=1024", "threads=2", *overrides] for arg in ("--set", item)]
    app = build_app()
    prepared = CliRunner().invoke(
        app, ["prepare", "--data", str(data_dir / name), "--out", str(tmp_path / "ds"), *sets]
    )
    assert prepared.exit_code == 0, prepared.output
    trained = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "ds"),
            "--out",
            str(tmp_path / "bundle"),
            "--model",
            "deepfm",
            *sets,
        ],
    )
    assert trained.exit_code == 0, trained.output
    bundle = read_bundle(tmp_path / "bundle")
    dataset = PreparedDataset(tmp_path / "ds")
    metrics = bundle.manifest.metrics
    assert bundle.manifest.data_fingerprint == dataset.manifest.data_fingerprint
    assert metrics["training"]["streamed"] == 1.0 and metrics["test"]["rows"] == dataset.rows("test")
    assert metrics["test"]["auc"] > (0.65 if "criteo" in name else 0.85)
    scored = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "bundle"), "--data", str(tmp_path / "ds"), "--json"]
    )
    assert scored.exit_code == 0, scored.output
    (onnx,) = json.loads(scored.output)
    assert onnx["rows"] == metrics["test"]["rows"] and onnx["auc"] == pytest.approx(
        metrics["test"]["auc"], abs=1e-4
    )
