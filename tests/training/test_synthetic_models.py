"""DeepFM-D learns the synthetic store's higher-order interactions that logistic regression cannot."""

from __future__ import annotations

from pathlib import Path

from simulation.synth import SynthConfig
from simulation.synth_cli import write_synthetic_dataset
from training.config import load_config
from training.pipeline import train_bundle


def test_deepfm_beats_lr_by_a_clear_margin_on_synthetic_data(tmp_path: Path) -> None:
    summary = write_synthetic_dataset(tmp_path / "data", SynthConfig(seed=11), rows=150_000)
    common = ["epochs=5", "threads=2", "serving_graphs=false"]  # the AUCs are the point: model.onnx only
    lr = train_bundle(tmp_path / "data", tmp_path / "lr", load_config(None, common, model="lr"))
    assert lr is not None
    deep_sets = [*common, "hidden_units=[128,128]"]
    deepfm = train_bundle(
        tmp_path / "data", tmp_path / "deepfm", load_config(None, deep_sets, model="deepfm")
    )
    assert deepfm is not None
    lr_auc, deepfm_auc = lr.metrics["test"]["auc"], deepfm.metrics["test"]["auc"]
    oracle = summary["test"]["oracle_auc"]
    assert deepfm_auc > lr_auc + 0.01, (lr_auc, deepfm_auc)
    assert deepfm_auc < oracle  # the oracle knows the true probability: nothing may beat it
    assert abs(deepfm.metrics["test"]["calibration"] - 1.0) < 0.1
