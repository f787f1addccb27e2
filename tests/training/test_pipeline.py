"""``apprank train`` / ``apprank evaluate`` end to end on real data, writing and verifying bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from apprank.cli import build_app
from model.bundle import ITEMS_ONNX, read_bundle
from model.encoder import Encoded, InputLayout
from model.export import export_onnx
from training import pipeline
from training.config import load_config
from training.pipeline import ExportError, train_bundle

QUICK = ["epochs=2", "max_rows=20000", "hidden_units=[64,64]", "batch_size=1024", "threads=2"]
# runs that test the training, not the serving graphs (frappe_bundle checks those): model.onnx only
TRAIN_ONLY = [*QUICK, "serving_graphs=false"]
runner = CliRunner()
app = build_app()


@pytest.fixture(scope="module")
def frappe_bundle(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "deepfm"
    train_bundle(data_dir / "frappe_ctr", out, load_config(None, QUICK, model="deepfm"))
    return out


def test_bundle_is_complete_and_verified(frappe_bundle: Path) -> None:
    bundle = read_bundle(frappe_bundle)
    manifest = bundle.manifest
    assert manifest.model == "deepfm" and manifest.opset >= 17
    assert manifest.inputs == list(bundle.schema.names)
    assert manifest.parity.passed and manifest.parity.rows == 10_000 and manifest.parity.max_abs_diff <= 1e-5
    assert manifest.serving is not None and manifest.serving.graph == "request"  # the default
    assert manifest.serving.parity is not None and manifest.serving.parity.passed
    assert len(manifest.data_fingerprint) == 64 and manifest.schema_hash == bundle.schema.content_hash()
    assert {"valid", "test", "training"} <= set(manifest.metrics)
    assert 0.5 < manifest.metrics["test"]["auc"] <= 1.0
    assert manifest.hyperparameters["params"]["hidden_units"] == [64, 64]
    for name in ("manifest.json", "schema.json", "encoder.json", "model.onnx", "metrics.json", "weights.pt"):
        assert (frappe_bundle / name).is_file()


def test_evaluate_cli_scores_through_onnx(frappe_bundle: Path, data_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "eval.png"
    args = [
        "evaluate",
        str(frappe_bundle),
        "--data",
        str(data_dir / "frappe_ctr"),
        "--json",
        "--png",
        str(png),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    test_metrics = read_bundle(frappe_bundle).manifest.metrics["test"]
    assert row["split"] == "test" and row["rows"] == 28861
    # ONNX Runtime scores the test split as the torch model did at training time.
    assert row["auc"] == pytest.approx(test_metrics["auc"], abs=1e-5)
    assert row["logloss"] == pytest.approx(test_metrics["logloss"], abs=1e-5)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_resume_keeps_the_encoder_and_starts_from_the_weights(
    frappe_bundle: Path, data_dir: Path, tmp_path: Path
) -> None:
    config = load_config(None, [*TRAIN_ONLY, "epochs=1"], model="deepfm")
    result = train_bundle(data_dir / "frappe_ctr", tmp_path / "resumed", config, resume=frappe_bundle)
    assert result is not None
    before, after = read_bundle(frappe_bundle), read_bundle(result.bundle)
    assert after.encoder.state_dict() == before.encoder.state_dict()
    first_epoch_auc = result.history.epochs[0].valid["auc"]
    assert first_epoch_auc > before.manifest.metrics["valid"]["auc"] - 0.01  # not a fresh start
    # a warm start fine-tunes at a tenth of the step; the manifest keeps the cold-start step
    assert result.history.epochs[0].lr == pytest.approx(config.optimizer.lr * 0.1)
    assert after.manifest.hyperparameters["optimizer"]["lr"] == config.optimizer.lr


def test_criteo_trains_and_evaluates_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "criteo"
    result = runner.invoke(
        app,
        ["train", "--model", "deepfm", "--data", str(data_dir / "criteo" / "dac_8k.txt"), "--out", str(out),
         *(arg for item in TRAIN_ONLY for arg in ("--set", item))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).manifest
    assert manifest.inputs[:2] == ["I1", "I2"] and len(manifest.inputs) == 39
    assert 0.55 < manifest.metrics["test"]["auc"] < 1.0
    evaluated = runner.invoke(
        app, ["evaluate", str(out), "--data", str(data_dir / "criteo" / "dac_8k.txt"), "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)[0]["rows"] == 8000


def test_synchronous_and_asynchronous_loading_train_identically(data_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for flag in ("true", "false"):
        sets = [*TRAIN_ONLY, "epochs=1", f"async_loading={flag}", "precision=fp32"]
        config = load_config(None, sets, model="deepfm")
        result = train_bundle(data_dir / "frappe_ctr", tmp_path / flag, config)
        assert result is not None
        runs[flag] = result.metrics["valid"]
        serving = read_bundle(result.bundle).manifest.serving
        assert serving is not None and serving.graph == "plain" and not (result.bundle / ITEMS_ONNX).exists()
    assert runs["true"]["logloss"] == runs["false"]["logloss"]


def test_failed_parity_fails_the_export_and_writes_nothing(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def drifting_export(model: torch.nn.Module, layout: InputLayout, example: Encoded, path: Path) -> Any:
        export_onnx(model, layout, example, path)
        with torch.no_grad():
            model.get_parameter("model.linear.bias").add_(1.0)  # the graph no longer matches the model

    monkeypatch.setattr(pipeline, "export_onnx", drifting_export)
    out = tmp_path / "broken"
    with pytest.raises(ExportError, match=r"ONNX parity check failed: max \|ctr_onnx - ctr_torch\|"):
        train_bundle(
            data_dir / "frappe_ctr", out, load_config(None, ["epochs=1", "max_rows=20000"], model="lr")
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left behind


def test_train_cli_reports_config_errors_without_a_traceback(data_dir: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--model",
        "deepfm",
        "--data",
        str(data_dir / "frappe_ctr"),
        "--out",
        str(tmp_path / "x"),
    ]
    result = runner.invoke(app, [*args, "--set", "epoch=1"])
    assert result.exit_code == 2
    assert "epoch: Extra inputs are not permitted" in result.output
