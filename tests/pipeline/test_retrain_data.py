"""The retrain's streamed data: store rows as chunks, the prepared export, the held-out evaluation.

Each is checked against the file path it replaces: the rows exported to Parquet and read back, the
same file prepared by ``apprank prepare``'s writer, and ``evaluate_bundle`` on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.bundle import read_bundle
from model.encoder import FeatureEncoder
from pipeline.export import export_training, labeled_chunks
from pipeline.retrain_data import Source, evaluate_streamed, training_rows, write_prepared
from service.events.store import SqlEventStore
from tests.pipeline.test_export import VERSION, log_frappe_traffic
from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle
from training.config import PrepareConfig, TrainConfig
from training.datasets import resolve_dataset
from training.evaluate import evaluate_bundle
from training.prepared.manifest import PreparedManifest
from training.prepared.writer import prepare_dataset
from training.readers import ParquetReader, read_all

pytest_plugins = ["tests.service.test_events_support"]
CONFIG = TrainConfig(prepare=PrepareConfig(row_group_rows=64, shard_rows=128), chunk_rows=1000)


def test_store_chunks_are_what_the_exported_file_reads_back(store: SqlEventStore, tmp_path: Path) -> None:
    log_frappe_traffic(store, requests=60)
    schema = fit_frappe_encoder().schema
    export_training(store, "exp", 0, float("inf"), tmp_path / "rows.parquet", schema)
    from_file = read_all(ParquetReader(tmp_path / "rows.parquet", schema))
    chunks = list(labeled_chunks(store, "exp", 0, float("inf"), schema, block_rows=50))
    assert [c.num_rows for c in chunks] == [50, 50, 50, 30]
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), from_file.labels)
    for name in schema.names:
        streamed = np.concatenate([c.columns[name] for c in chunks])
        assert streamed.dtype.kind == from_file.columns[name].dtype.kind
        np.testing.assert_array_equal(streamed, from_file.columns[name])


def test_the_prepared_export_is_the_exported_file_prepared(store: SqlEventStore, tmp_path: Path) -> None:
    log_frappe_traffic(store, requests=200)
    encoder = fit_frappe_encoder()
    source = Source(store, "exp", 0, float("inf"), block_rows=70)  # blocks cut across row groups
    written = write_prepared(source, encoder, CONFIG, tmp_path / "streamed")
    assert written.rows == 600 and 0 < written.positives < 600
    export_training(store, "exp", 0, float("inf"), tmp_path / "rows.parquet", encoder.schema)
    splits = resolve_dataset(tmp_path / "rows.parquet", encoder.schema, seed=CONFIG.seed)
    prepare_dataset(splits, tmp_path / "from_file", CONFIG, encoder=encoder)
    streamed, from_file = (PreparedManifest.load(tmp_path / n) for n in ("streamed", "from_file"))
    assert streamed.splits == from_file.splits and set(streamed.splits) == {"train", "valid", "test"}
    for split in streamed.splits.values():
        for shard in split.shards:
            ours, theirs = (pq.read_table(tmp_path / n / shard.file) for n in ("streamed", "from_file"))
            assert ours.equals(theirs), shard.file
    saved = FeatureEncoder.load(encoder.schema, tmp_path / "streamed" / "encoder.json")
    assert saved.state_dict() == encoder.state_dict()
    fitted_rows = sum(chunk.num_rows for chunk in training_rows(source, encoder.schema, CONFIG))
    assert fitted_rows == streamed.splits["train"].rows


def test_a_window_without_rows_is_refused_and_leaves_nothing(store: SqlEventStore, tmp_path: Path) -> None:
    log_frappe_traffic(store, requests=10)
    with pytest.raises(ValueError, match="0 rows, none in the train split"):
        write_prepared(Source(store, "other", 0, float("inf")), fit_frappe_encoder(), CONFIG, tmp_path / "p")
    assert not [path for path in tmp_path.iterdir() if path.name.startswith((".p", "p"))]


def test_the_streamed_evaluation_matches_the_file_one(store: SqlEventStore, tmp_path: Path) -> None:
    log_frappe_traffic(store, requests=100)
    encoder = fit_frappe_encoder()
    paths = [
        write_lr_bundle(tmp_path / f"m{seed}", encoder, random_weights(encoder, seed), version=VERSION)
        for seed in (1, 2)
    ]
    held_out = evaluate_streamed([read_bundle(p) for p in paths], Source(store, "exp", 0, float("inf"), 40))
    export_training(store, "exp", 0, float("inf"), tmp_path / "rows.parquet", encoder.schema)
    assert held_out.rows == 300
    for path, metrics in zip(paths, held_out.metrics, strict=True):
        expected = evaluate_bundle(path, tmp_path / "rows.parquet").metrics
        assert metrics.keys() == expected.keys()
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value, rel=1e-6), key


def test_an_empty_held_out_day_has_no_figures(store: SqlEventStore, tmp_path: Path) -> None:
    encoder = fit_frappe_encoder()
    path = write_lr_bundle(tmp_path / "m", encoder, random_weights(encoder), version=VERSION)
    held_out = evaluate_streamed([read_bundle(path)], Source(store, "exp", 0, float("inf")))
    assert (held_out.rows, held_out.metrics) == (0, [{"rows": 0.0}])
