"""The raw Frappe log -> CTR rows: frappe_ctr's recipe, columns and sizes, deterministic by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.schema import FeatureSchema
from training.readers import (
    DelimitedReader,
    FrappeRawReader,
    ReaderError,
    TextFile,
    build_frappe_ctr,
    read_all,
)
from training.readers.frappe_raw import FRAPPE_CTR_COLUMNS, META_COLUMNS


def test_splits_have_frappe_ctr_sizes_and_columns(data_dir: Path, frappe_schema: FeatureSchema) -> None:
    sizes = {}
    for split in ("train", "valid", "test"):
        chunk = read_all(FrappeRawReader(data_dir / "frappe", frappe_schema, split=split))
        sizes[split] = chunk.num_rows
        assert set(chunk.columns) == set(frappe_schema.names)
        assert all(column.dtype.kind == "U" for column in chunk.columns.values())
    assert sizes == {"train": 202_026, "valid": 57_722, "test": 28_861}
    table = build_frappe_ctr((data_dir / "frappe").resolve(), 2026, 2)
    assert ("label", *table.columns) == FRAPPE_CTR_COLUMNS


def test_every_log_is_a_positive_with_two_unused_negatives(data_dir: Path) -> None:
    table = build_frappe_ctr((data_dir / "frappe").resolve(), 2026, 2)
    logs = TextFile(data_dir / "frappe" / "frappe.csv", delimiter="\t", quoting=False).read_columns(
        ["user", "item", "daytime", "city"]
    )
    assert table.num_rows == 3 * logs["user"].size and int(table.labels.sum()) == logs["user"].size
    used = set(zip(logs["user"].tolist(), logs["item"].tolist(), strict=True))
    negative = table.labels == 0.0
    pairs = zip(table.column("user")[negative].tolist(), table.column("item")[negative].tolist(), strict=True)
    assert not any(pair in used for pair in pairs)
    positive_context = sorted(
        zip(logs["user"].tolist(), logs["daytime"].tolist(), logs["city"].tolist(), strict=True)
    )
    rows = zip(*(table.column(c)[~negative].tolist() for c in ("user", "daytime", "city")), strict=True)
    assert sorted(rows) == positive_context
    assert 0.1 < np.mean(table.labels[:1000]) < 0.6  # shuffled, not positives first


def test_app_attributes_joined_from_meta(data_dir: Path) -> None:
    table = build_frappe_ctr((data_dir / "frappe").resolve(), 2026, 2)
    meta = TextFile(data_dir / "frappe" / "meta.csv", delimiter="\t", quoting=False).read_columns(
        ["item", *META_COLUMNS]
    )
    by_item = {item: i for i, item in enumerate(meta["item"].tolist())}
    for row in range(0, table.num_rows, 997):
        source = by_item[str(table.columns["item"].rows(row, row + 1)[0])]
        assert all(table.columns[name].rows(row, row + 1)[0] == meta[name][source] for name in META_COLUMNS)
    costs: dict[str, set[str]] = {}
    for item, cost in zip(table.column("item").tolist(), table.column("cost").tolist(), strict=True):
        costs.setdefault(item, set()).add(cost)
    assert all(len(values) == 1 for values in costs.values()) and {"free", "paid"} == set().union(
        *costs.values()
    )


def test_same_values_as_the_canonical_split(data_dir: Path, frappe_schema: FeatureSchema) -> None:
    """Same recipe, other draws: every column takes the values frappe_ctr's does."""
    ours = read_all(FrappeRawReader(data_dir / "frappe", frappe_schema, split="test"))
    theirs = read_all(DelimitedReader(data_dir / "frappe_ctr" / "test.csv", frappe_schema))
    for name in ("daytime", "weekday", "isweekend", "homework", "cost", "language"):
        assert set(ours.columns[name]) == set(theirs.columns[name]), name


def test_deterministic_by_seed(data_dir: Path, frappe_schema: FeatureSchema) -> None:
    path = data_dir / "frappe"
    first = next(FrappeRawReader(path, frappe_schema, split="valid", seed=5).chunks(chunk_rows=5000))
    build_frappe_ctr.cache_clear()
    again = next(FrappeRawReader(path, frappe_schema, split="valid", seed=5).chunks(chunk_rows=5000))
    other = next(FrappeRawReader(path, frappe_schema, split="valid", seed=6).chunks(chunk_rows=5000))
    assert all(np.array_equal(first.columns[n], again.columns[n]) for n in frappe_schema.names)
    assert not np.array_equal(first.columns["item"], other.columns["item"])
    assert first.first_line == 1


def test_missing_files_and_columns(tmp_path: Path, frappe_schema: FeatureSchema) -> None:
    with pytest.raises(ReaderError, match=r"frappe\.csv: no such file$"):
        read_all(FrappeRawReader(tmp_path, frappe_schema))
    (tmp_path / "frappe.csv").write_text("user\titem\tcnt\n1\t2\t3\n")
    (tmp_path / "meta.csv").write_text("item\tcategory\n2\tTools\n")
    with pytest.raises(ReaderError) as caught:
        read_all(FrappeRawReader(tmp_path, frappe_schema))
    assert str(caught.value) == f"{tmp_path / 'frappe.csv'}:1: column daytime: column not in the header"
