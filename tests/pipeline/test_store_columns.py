"""The column-wise decoding of the store's rows and the export's spill, against the row-by-row path.

``pipeline.export.block_chunk`` over ``EventStore.labeled_rows`` (one Python object per row and field)
is the reference: ``labeled_chunks`` (``training_pages`` decoded once per distinct text and value) must
give the same chunks, on logged values of every JSON type, with ids filled where the log lacks them,
across keyset pages that end inside a request and blocks that are not a multiple of the pages.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.schema import FeatureSchema
from pipeline.export import block_chunk, blocks, labeled_chunks
from pipeline.retrain_data import Source
from pipeline.row_spill import Spilled
from service.events.models import EventIn
from service.events.store import SqlEventStore
from service.rank.served import ServedList
from tests.service.test_events_support import event_in, served_list
from training.readers.base import Chunk

pytest_plugins = ["tests.service.test_events_support"]

SCHEMA = FeatureSchema.model_validate(
    {
        "name": "messy",
        "label": "label",
        "user_id_field": "user",
        "item_id_field": "app",
        "fields": [
            {"name": "user", "kind": "categorical", "source": "user"},
            {"name": "installed", "kind": "multi", "source": "user"},
            {"name": "hour", "kind": "categorical", "source": "context"},
            {"name": "country", "kind": "categorical", "source": "context"},
            {"name": "app", "kind": "categorical", "source": "item"},
            {"name": "category", "kind": "categorical", "source": "item"},
            {"name": "rating", "kind": "numeric", "source": "item", "transform": "standardize"},
        ],
    }
)
# Raw values of every JSON type the service may log, None and missing keys included.
HOURS: list[Any] = [9, 9.0, "9", 4.5, True, None, ""]
RATINGS: list[Any] = [4.1, 3, None, True, "2.5", 1e300]
CATEGORIES: list[Any] = ["games", 7, 7.0, None, False, "", "jeux vidéo"]
INSTALLED: list[Any] = [["x", "y"], "x|z", [], None, [1, 2.0, True]]


def log_messy_traffic(store: SqlEventStore, requests: int = 30) -> None:
    """Requests of three items, with values cycling through the lists above; a download in three."""
    now = time.time() - 3600
    lists: list[ServedList] = []
    events: list[EventIn] = []
    for r in range(requests):
        apps = [f"a{(r + k) % 5}" for k in range(3)]
        user: dict[str, Any] = {"installed": INSTALLED[r % len(INSTALLED)]}
        if r % 4 == 0:
            user["user"] = f"logged{r % 3}"  # else filled from the request's user_id
        context = {"hour": HOURS[r % len(HOURS)]} | ({"country": "es"} if r % 2 else {})
        features = [
            {"category": CATEGORIES[(r + k) % len(CATEGORIES)], "rating": RATINGS[(r * k) % len(RATINGS)]}
            | ({"app": "renamed"} if (r + k) % 6 == 0 else {})
            for k in range(3)
        ]
        base = served_list(f"r{r:03d}", f"u{r % 7}", apps, ts=now + r)
        lists.append(replace(base, user=user, context=context, features=features))
        for k, app in enumerate(apps):
            # requests share timestamps in pairs: keyset pages must not lose or repeat tied rows
            ts, request, user_id = now + (r // 2) + 0.5, f"r{r:03d}", f"u{r % 7}"
            events.append(event_in(len(events), request_id=request, app_id=app, user_id=user_id, ts=ts))
            if (r + k) % 3 == 0:
                events.append(event_in(len(events), "download", request, app, user_id=user_id, ts=ts))
    store.write_served(lists)
    store.record_events([events], time.time())


def assert_same_chunks(ours: list[Chunk], reference: list[Chunk]) -> None:
    assert [(c.num_rows, c.first_line) for c in ours] == [(c.num_rows, c.first_line) for c in reference]
    for mine, theirs in zip(ours, reference, strict=True):
        np.testing.assert_array_equal(mine.labels, theirs.labels)
        assert mine.labels.dtype == theirs.labels.dtype
        for name in SCHEMA.names:
            assert mine.columns[name].dtype.kind == theirs.columns[name].dtype.kind, name
            np.testing.assert_array_equal(mine.columns[name], theirs.columns[name], err_msg=name)


@pytest.mark.parametrize(("page_size", "block_rows"), [(7, 20), (10_000, 13), (5, 5)])
def test_column_decoding_gives_the_row_by_row_chunks(
    store: SqlEventStore, page_size: int, block_rows: int
) -> None:
    log_messy_traffic(store)
    store.page_size = page_size
    rows = list(store.labeled_rows("exp", 0, float("inf")))
    assert len(rows) == 90 and 0 < sum(r.label for r in rows) < 90
    reference, first = [], 1
    for block in blocks(rows, block_rows):
        reference.append(block_chunk(block, SCHEMA, first))
        first += len(block)
    ours = list(labeled_chunks(store, "exp", 0, float("inf"), SCHEMA, block_rows))
    assert_same_chunks(ours, reference)
    users = np.concatenate([c.columns["user"] for c in ours])
    assert {"logged0", "u1"} <= set(users.tolist())  # logged where present, else the request's user_id


def test_the_spill_gives_back_the_first_pass(
    store: SqlEventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_messy_traffic(store)
    spilled = Spilled(Source(store, "exp", 0, float("inf"), block_rows=17), tmp_path / "rows.spill")
    partial = spilled.chunks(SCHEMA)
    next(partial)
    partial.close()  # an interrupted first pass: read from the store again
    assert not spilled.complete
    first = list(spilled.chunks(SCHEMA))
    assert spilled.complete and (tmp_path / "rows.spill").is_file()
    monkeypatch.setattr(store, "training_pages", None)  # the second pass no longer reads the store
    second = list(spilled.chunks(SCHEMA))
    assert_same_chunks(second, first)
    assert sum(c.num_rows for c in second) == 90
    spilled.remove()
    assert not (tmp_path / "rows.spill").exists() and not spilled.complete
