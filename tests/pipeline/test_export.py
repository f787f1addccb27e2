"""``apprank export-training``: labeled rows from the event log, read back by the training readers, and
a model trained on them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from model.schema import FeatureSchema
from pipeline.events_cli import register
from pipeline.export import ExportError, export_training, schema_from_bundles
from service.events.models import EventIn
from service.events.store import SqlEventStore
from service.rank.served import ServedList
from tests.service.bundles import (
    CONTEXT_VALUES,
    fit_frappe_encoder,
    item_features,
    random_weights,
    write_lr_bundle,
)
from tests.service.test_events_support import StoreTarget, event_in

pytest_plugins = ["tests.service.test_events_support"]
VERSION = "20260101.000000"


def frappe_served(request: int, user: int, ts: float) -> ServedList:
    """A served list in the Frappe schema: 5 candidates, the first 3 (by index) returned."""
    context = {
        name: values[(request + i) % len(values)] for i, (name, values) in enumerate(CONTEXT_VALUES.items())
    }
    apps = [(request * 7 + k) % 40 for k in range(5)]
    return ServedList(
        request_id=f"r{request}",
        ts=ts,
        experiment="exp",
        arm="control" if user % 2 else "treatment",
        bucket=user,
        model="lr",
        version=VERSION,
        objective="ctr",
        user_id=str(user),
        user={},  # the schema's user_id_field ("user") is filled from user_id, as /rank does
        context=context,
        app_ids=[f"a{app}" for app in apps],
        bids=None,
        features=[item_features(app) for app in apps],
        order=np.arange(3, dtype=np.int64),
        ctr=np.full(5, 0.1, dtype=np.float32),
    )


def log_frappe_traffic(store: SqlEventStore, requests: int = 240) -> dict[tuple[str, str], int]:
    """Impressions of every returned app; downloads of the paid ones. Returns the labels."""
    ts = time.time() - 3600
    served = [frappe_served(r, r % 30, ts + r) for r in range(requests)]
    events: list[EventIn] = []
    labels: dict[tuple[str, str], int] = {}
    for s in served:
        for position, index in enumerate(s.order.tolist()):
            app, request = s.app_ids[index], s.request_id
            events.append(
                event_in(
                    len(events), request_id=request, app_id=app, user_id=s.user_id, ts=s.ts + 0.1 * position
                )
            )
            labels[(request, app)] = int(s.features[index]["cost"] == "paid")
            if labels[(request, app)]:
                events.append(event_in(len(events), "download", request, app, user_id=s.user_id, ts=s.ts + 2))
    store.write_served(served)
    store.record_events([events], time.time())
    return labels


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    encoder = fit_frappe_encoder()
    write_lr_bundle(tmp_path / "models" / "lr", encoder, random_weights(encoder), version=VERSION)
    return tmp_path / "models"


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_export_round_trips_through_the_training_readers(
    store: SqlEventStore, target: StoreTarget, models_dir: Path, tmp_path: Path
) -> None:
    from training.readers import DelimitedReader, ParquetReader, read_all

    labels = log_frappe_traffic(store, requests=60)
    outputs = {}
    for suffix in ("csv", "parquet"):
        out = tmp_path / f"rows.{suffix}"
        args = ["export-training", "--experiment", "exp", "--out", str(out), "--db", target.url]
        result = CliRunner().invoke(cli(), [*args, "--prefix", target.prefix, "--models", str(models_dir)])
        assert result.exit_code == 0, result.output
        assert f"180 rows ({sum(labels.values())} downloads)" in result.output
        outputs[suffix] = out
    schema = FeatureSchema.load(tmp_path / "rows.schema.yaml")
    assert schema == FeatureSchema.load(models_dir / "lr" / "schema.json")
    from_csv = read_all(DelimitedReader(outputs["csv"], schema))
    from_parquet = read_all(ParquetReader(outputs["parquet"], schema))
    assert from_csv.num_rows == 180
    np.testing.assert_array_equal(from_csv.labels, from_parquet.labels)
    for name in schema.names:
        np.testing.assert_array_equal(from_csv.columns[name], from_parquet.columns[name])
    # row order is (ts, event_id): request r0's three apps first
    assert from_csv.columns["user"][:3].tolist() == ["0", "0", "0"]
    assert from_csv.columns["item"][:3].tolist() == ["a0", "a1", "a2"]
    assert from_csv.columns["category"][1] == item_features(1)["category"]
    assert from_csv.columns["daytime"][0] == CONTEXT_VALUES["daytime"][0]
    expected = [labels[(f"r{r}", f"a{(r * 7 + k) % 40}")] for r in range(60) for k in range(3)]
    assert from_csv.labels.astype(int).tolist() == expected


def test_multi_valued_and_numeric_fields_are_written_canonically(
    store: SqlEventStore, tmp_path: Path
) -> None:
    from training.readers import DelimitedReader, read_all

    schema = FeatureSchema.model_validate(
        {
            "name": "mixed",
            "user_id_field": "uid",
            "item_id_field": "app",
            "fields": [
                {"name": "uid", "kind": "categorical", "source": "user"},
                {"name": "installed", "kind": "multi", "source": "user", "separator": ";"},
                {"name": "hour", "kind": "numeric", "source": "context", "transform": "standardize"},
                {"name": "premium", "kind": "categorical", "source": "context", "column": "is_premium"},
                {"name": "app", "kind": "categorical", "source": "item"},
                {"name": "rating", "kind": "numeric", "source": "item", "transform": "log"},
            ],
        }
    )
    ts = time.time() - 60
    features: list[dict[str, Any]] = [{"rating": 4.5}, {"rating": None}]
    user, context = {"installed": ["maps", 3, True]}, {"hour": 9, "premium": 1.0}
    served = ServedList(
        request_id="m1", ts=ts, experiment="exp", arm="control", bucket=1, model="custom", version="1",
        objective="ctr", user_id="7", user=user, context=context, app_ids=["x1", "x2"], bids=None,
        features=features,
        order=np.array([0, 1]), ctr=np.array([0.2, 0.1], dtype=np.float32),
    )  # fmt: skip
    store.write_served([served])
    store.record_events(
        [
            [
                event_in(0, request_id="m1", app_id="x1", user_id="7"),
                event_in(1, request_id="m1", app_id="x2", user_id="7"),
            ]
        ],
        time.time(),
    )
    summary = export_training(store, "exp", 0, float("inf"), tmp_path / "mixed.csv", schema)
    assert (summary.rows, summary.positives, summary.models) == (2, 0, [("custom", "1")])
    header, first, second = (tmp_path / "mixed.csv").read_text().splitlines()
    assert header == "label,uid,installed,hour,is_premium,app,rating"
    assert first == "0,7,maps;3;true,9.0,1,x1,4.5"
    assert second == "0,7,maps;3;true,9.0,1,x2,"
    assert yaml.safe_load((tmp_path / "mixed.schema.yaml").read_text())["name"] == "mixed"
    chunk = read_all(
        DelimitedReader(tmp_path / "mixed.csv", FeatureSchema.load(tmp_path / "mixed.schema.yaml"))
    )
    assert chunk.columns["installed"].tolist() == ["maps;3;true"] * 2
    assert chunk.columns["premium"].tolist() == ["1", "1"]
    assert np.isnan(chunk.columns["rating"][1]) and chunk.columns["hour"].tolist() == [9.0, 9.0]


def test_export_refuses_what_it_cannot_do(store: SqlEventStore, models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no served lists"):
        schema_from_bundles(store.served_models("exp", 0, float("inf")), models_dir)
    with pytest.raises(ExportError, match="no bundle for model 'ghost'"):
        schema_from_bundles([("ghost", "1")], models_dir)
    with pytest.raises(ExportError, match=r"\.csv or \.parquet"):
        export_training(
            store, "exp", 0, 1, tmp_path / "rows.json", FeatureSchema.load(models_dir / "lr" / "schema.json")
        )


@pytest.mark.slow
def test_a_model_trains_on_exported_rows(tmp_path: Path, models_dir: Path) -> None:
    from service.db import Database
    from service.events.store import open_event_store
    from training.config import TrainConfig
    from training.pipeline import train_bundle

    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    store = open_event_store(db)
    store.migrate()
    log_frappe_traffic(store, requests=600)
    out = tmp_path / "rows.csv"
    export_training(
        store,
        "exp",
        0,
        float("inf"),
        out,
        schema_from_bundles(store.served_models("exp", 0, float("inf")), models_dir),
    )
    db.close()
    config = TrainConfig(
        model="lr", epochs=3, batch_size=128, precision="fp32", async_loading=False, threads=1
    )
    config = config.model_copy(update={"optimizer": config.optimizer.model_copy(update={"lr": 0.05})})
    result = train_bundle(out, tmp_path / "bundle", config)
    assert result is not None  # a single-process run is rank 0
    assert (result.bundle / "model.onnx").is_file()
    assert result.metrics["valid"]["auc"] > 0.8  # downloads follow the app's cost, which LR learns
