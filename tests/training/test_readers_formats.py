"""Criteo TSV, libsvm / libffm and Parquet readers on real files and on tiny malformed ones, and the
writer's round trip (the layout of ``apprank synth`` and of the event-log export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.files import schema_sibling
from model.schema import FeatureSchema
from tests.training.conftest import WriteFile, load_schema
from training.readers import (
    Chunk,
    CriteoReader,
    DelimitedReader,
    LibffmReader,
    LibsvmReader,
    ParquetReader,
    ReaderError,
    read_all,
    write_table,
)

X1 = load_schema("frappe_x1")
ROW = "1 " + " ".join(f"{i}:1" for i in range(10)) + "\n"


def test_criteo_tsv(data_dir: Path, criteo_schema: FeatureSchema) -> None:
    chunk = read_all(CriteoReader(data_dir / "criteo" / "dac_8k.txt", criteo_schema))
    assert chunk.num_rows == 8_000 and int(chunk.labels.sum()) == 1_728
    row = [chunk.columns[f"I{i}"][1] for i in range(1, 14)]
    assert row[:11] == [2.0, 0.0, 44.0, 1.0, 102.0, 8.0, 2.0, 2.0, 4.0, 1.0, 1.0] and np.isnan(row[11])
    assert chunk.columns["C1"][1] == "68fd1e64" and chunk.columns["C26"][1] == "731c3655"


def test_criteo_same_rows_as_the_csv_slice(data_dir: Path, criteo_schema: FeatureSchema) -> None:
    """The two files share their first three rows: same values whichever reader and layout."""
    tsv = next(CriteoReader(data_dir / "criteo" / "dac_8k.txt", criteo_schema).chunks(chunk_rows=3))
    csv = next(DelimitedReader(data_dir / "criteo" / "criteo_10k.csv", criteo_schema).chunks(chunk_rows=3))
    for name in criteo_schema.names:
        assert np.array_equal(tsv.columns[name], csv.columns[name], equal_nan=name.startswith("I")), name
    assert np.array_equal(tsv.labels, csv.labels) and (tsv.first_line, csv.first_line) == (1, 2)


def test_criteo_wrong_column_count(write_file: WriteFile, criteo_schema: FeatureSchema) -> None:
    good = "\t".join(["1", *["3"] * 13, *["ab"] * 26])
    path = write_file("c.txt", f"{good}\n{good}\n{good[: good.rindex(chr(9))]}\n")
    with pytest.raises(ReaderError) as caught:
        read_all(CriteoReader(path, criteo_schema))
    assert str(caught.value) == f"{path}:3: column C26: missing (expected 40 columns, got 39)"


@pytest.mark.parametrize(("split", "rows", "positives"), [("valid", 57_722, 19_063), ("test", 28_860, 9_536)])
def test_frappe_x1_libsvm(data_dir: Path, split: str, rows: int, positives: int) -> None:
    reader = LibsvmReader(data_dir / "frappe_x1" / f"{split}.libsvm", X1)
    chunks = list(reader.chunks(chunk_rows=20_000))
    assert [c.first_line for c in chunks] == list(range(1, rows + 1, 20_000))
    whole = read_all(reader)
    assert whole.num_rows == rows and int(whole.labels.sum()) == positives
    if split == "test":
        first = [whole.columns[f"f{i}"][0] for i in range(10)]
        assert first == ["204", "4798", "5041", "5046", "5053", "5055", "5058", "5060", "5073", "5183"]
    assert all((whole.columns[name] != "").all() for name in X1.names)


def test_libsvm_values_other_than_one(write_file: WriteFile) -> None:
    schema = FeatureSchema.model_validate(
        {
            "fields": [
                {"name": "a", "kind": "categorical", "source": "user"},
                {"name": "b", "kind": "numeric", "source": "item", "transform": "standardize"},
            ]
        }
    )
    path = write_file("w.libsvm", "1 3:1 9:0.25\n-1 4:0 9:7\n\n+1 5:0.5 10:-1\n0 6:1.0 11:0\n")
    chunk = read_all(LibsvmReader(path, schema))
    assert chunk.labels.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert chunk.columns["a"].tolist() == ["3", "", "5:0.5", "6"]
    assert chunk.columns["b"].tolist() == [0.25, 7.0, -1.0, 0.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ROW + "0 1:1\n", ":2: column f1: missing (expected 10 features, got 1)"),
        (
            "1 " + " ".join(f"{i}:1" for i in range(11)) + "\n",
            ":1: column #11: unexpected extra feature (expected 10 features, got 11)",
        ),
        ("1 " + " ".join(f"{i}:1" for i in range(9)) + " 9\n", ":1: column f9: expected idx:val, got '9'"),
        ("1 " + " ".join(f"{i}:1" for i in range(9)) + " 9:x\n", ":1: column f9: not a number: 'x'"),
        (
            "\n\n2 " + " ".join(f"{i}:1" for i in range(10)) + "\n",
            ":3: column label: bad label '2' (expected 0/1 or -1/+1)",
        ),
        ("", ": empty file"),
        ("\n  \n", ": empty file"),
    ],
)
def test_libsvm_malformed(write_file: WriteFile, text: str, message: str) -> None:
    path = write_file("bad.libsvm", text)
    with pytest.raises(ReaderError) as caught:
        read_all(LibsvmReader(path, X1))
    assert str(caught.value) == f"{path}{message}"


def test_libffm_matches_libsvm(data_dir: Path, tmp_path: Path) -> None:
    lines = (data_dir / "frappe_x1" / "test.libsvm").read_text().splitlines()[:3000]
    ffm = tmp_path / "x1.libffm"
    ffm.write_text(
        "".join(
            f"{t[0]} " + " ".join(f"{j}:{v}" for j, v in enumerate(t[1:])) + "\n"
            for t in map(str.split, lines)
        )
    )
    svm = tmp_path / "x1.libsvm"
    svm.write_text("\n".join(lines) + "\n")
    left, right = read_all(LibffmReader(ffm, X1)), read_all(LibsvmReader(svm, X1))
    assert all(np.array_equal(left.columns[n], right.columns[n]) for n in X1.names)
    assert np.array_equal(left.labels, right.labels)


def test_libffm_sparse_rows_repeats_and_errors(write_file: WriteFile) -> None:
    schema = FeatureSchema.model_validate(
        {
            "fields": [
                {"name": "u", "kind": "categorical", "source": "user"},
                {"name": "tags", "kind": "multi", "source": "user"},
                {"name": "x", "kind": "numeric", "source": "item", "transform": "log"},
            ]
        }
    )
    chunk = read_all(LibffmReader(write_file("ok.ffm", "1 0:7:1 1:3:1 1:4:1\n0 2:0:2.5\n"), schema))
    assert chunk.columns["u"].tolist() == ["7", ""] and chunk.columns["tags"].tolist() == ["3|4", ""]
    assert np.isnan(chunk.columns["x"][0]) and chunk.columns["x"][1] == 2.5
    repeated = write_file("rep.ffm", "1 0:7:1\n0 0:1:1 0:2:1\n")
    with pytest.raises(ReaderError, match=rf"^{repeated}:2: column u: field given more than once$"):
        read_all(LibffmReader(repeated, schema))
    unknown = write_file("unk.ffm", "1 0:7:1\n\n0 5:1:1\n")
    with pytest.raises(
        ReaderError, match=rf"^{unknown}:3: expected field:idx:val with field < 3, got '5:1:1'$"
    ):
        read_all(LibffmReader(unknown, schema))


def _tiny_chunk() -> Chunk:
    columns = {
        "user": np.array(["u1", "", 'u,3 "q"']),
        "score": np.array([0.1, np.nan, -3e10]),
        "tags": np.array(["a|b", "", "c"]),
    }
    return Chunk(columns, np.array([1.0, 0.0, 1.0], dtype=np.float32), 1)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_writer_round_trip(tmp_path: Path, tiny_schema: FeatureSchema, suffix: str) -> None:
    path = write_table(tmp_path / f"rows{suffix}", _tiny_chunk(), tiny_schema, extra={"p": [0.5, 0.25, 1.0]})
    assert FeatureSchema.load(schema_sibling(path)) == tiny_schema
    if suffix == ".parquet":
        back = read_all(ParquetReader(path, tiny_schema))
    else:
        back = read_all(DelimitedReader(path, tiny_schema, delimiter="\t" if suffix == ".tsv" else ","))
    original = _tiny_chunk()
    assert back.columns["user"].tolist() == original.columns["user"].tolist()
    assert back.columns["tags"].tolist() == ["a|b", "", "c"]
    assert np.array_equal(back.columns["score"], original.columns["score"], equal_nan=True)
    assert back.labels.tolist() == [1.0, 0.0, 1.0]


def test_parquet_typed_columns(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    path = tmp_path / "typed.parquet"
    table = pa.table(
        {
            "label": pa.array([1, 0, None], pa.int64()),
            "user": pa.array([5.0, None, 7.5]),
            "score": pa.array([1, None, 3], pa.int32()),
            "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
        }
    )
    pq.write_table(table.slice(0, 2), path)
    chunk = read_all(ParquetReader(path, tiny_schema))
    assert chunk.columns["user"].tolist() == ["5", ""] and chunk.columns["tags"].tolist() == ["a|b", ""]
    assert chunk.columns["score"][0] == 1.0 and np.isnan(chunk.columns["score"][1])
    pq.write_table(table, path)
    with pytest.raises(ReaderError, match=rf"^{path}:3: column label: bad label null \(expected 0 or 1\)$"):
        read_all(ParquetReader(path, tiny_schema))


def test_parquet_errors(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"label": ["1", "0"], "user": ["a", "b"], "score": ["1", "x"], "tags": ["", ""]}), path
    )
    with pytest.raises(ReaderError, match=rf"^{path}:2: column score: not a number: 'x'$"):
        read_all(ParquetReader(path, tiny_schema))
    pq.write_table(pa.table({"label": pa.array([], pa.int8()), "user": pa.array([], pa.string())}), path)
    with pytest.raises(ReaderError, match=rf"^{path}: column score: schema field not in the file$"):
        read_all(ParquetReader(path, tiny_schema))
    with pytest.raises(ReaderError, match=rf"^{path}: no data rows$"):
        read_all(ParquetReader(path, tiny_schema, allow_missing_columns=True))
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(ReaderError, match=rf"^{empty}: empty file$"):
        read_all(ParquetReader(empty, tiny_schema))


def test_libsvm_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.libsvm"
    path.write_bytes(ROW.encode() + b"0 1:\xff\n")
    with pytest.raises(ReaderError) as caught:
        read_all(LibsvmReader(path, X1))
    assert str(caught.value) == f"{path}:2: not UTF-8 text (invalid start byte at byte 5 of the line)"
