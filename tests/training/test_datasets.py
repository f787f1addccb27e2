"""``resolve_dataset``: folders, single files, the raw Frappe folder and dataset YAMLs; format
detection; schema precedence; the data fingerprint."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.files import save_schema_yaml
from model.schema import FeatureSchema
from tests.training.conftest import WriteFile
from training.datasets import (
    DataFormat,
    DatasetConfig,
    data_fingerprint,
    detect_format,
    resolve_dataset,
    split_files,
)
from training.readers import (
    Chunk,
    CriteoReader,
    DelimitedReader,
    FrappeRawReader,
    LibsvmReader,
    ParquetReader,
    read_all,
    write_table,
)

DATASETS = Path(__file__).resolve().parents[2] / "configs" / "datasets"
TINY = "label,user,score,tags\n1,a,1,x\n0,b,2,y\n"


def test_frappe_ctr_folder(data_dir: Path) -> None:
    splits = resolve_dataset(data_dir / "frappe_ctr")
    assert isinstance(splits.train, DelimitedReader) and splits.schema.name == "frappe_ctr"
    assert splits.valid is not None and splits.valid.path.name == "valid.csv"
    assert splits.test is not None and splits.test.path.name == "test.csv"
    assert "frappe_ctr.yaml" in splits.description
    with (data_dir / "frappe_ctr" / "train.csv").open(newline="") as file:
        expected = [row for row, _ in zip(csv.DictReader(file), range(5), strict=False)]
    chunk = next(splits.train.chunks(chunk_rows=5))  # the rows as the file holds them, in order
    assert chunk.labels.tolist() == [float(row["label"]) for row in expected]
    for name in ("user", "daytime", "city", "downloads", "developer"):
        assert [str(value) for value in chunk.columns[name].tolist()] == [row[name] for row in expected], name


@pytest.mark.parametrize(
    ("relative", "reader", "schema"),
    [
        ("criteo/dac_8k.txt", CriteoReader, "criteo"),
        ("criteo/criteo_10k.csv", DelimitedReader, "criteo"),
        ("frappe_x1/test.libsvm", LibsvmReader, "frappe_x1"),
        ("avazu/avazu_8k.csv", DelimitedReader, "avazu"),
        ("frappe_ctr/valid.csv", DelimitedReader, "frappe_ctr"),
    ],
)
def test_single_files_get_their_reader_and_builtin_schema(
    data_dir: Path, relative: str, reader: type, schema: str
) -> None:
    splits = resolve_dataset(data_dir / relative)
    assert type(splits.train) is reader and splits.schema.name == schema
    assert splits.valid is None and splits.test is None
    assert next(splits.train.chunks(chunk_rows=10)).num_rows == 10


def test_raw_frappe_folder_gives_three_splits(data_dir: Path) -> None:
    splits = resolve_dataset(data_dir / "frappe", seed=11)
    assert isinstance(splits.train, FrappeRawReader) and splits.schema.name == "frappe_ctr"
    assert [r.split for r in (splits.train, splits.valid, splits.test) if isinstance(r, FrappeRawReader)] == [
        "train",
        "valid",
        "test",
    ]
    assert splits.train.seed == 11
    chunk = next(splits.train.chunks(chunk_rows=3_000))
    assert set(chunk.labels.tolist()) == {0.0, 1.0}  # the log's positives and the sampled negatives
    assert abs(float(chunk.labels.mean()) - 1 / 3) < 0.05  # 2 negatives per positive, like frappe_ctr
    assert set(splits.schema.names) <= set(chunk.columns)


@pytest.mark.parametrize("name", ["frappe_ctr", "frappe_raw", "criteo_dac_8k", "frappe_x1", "avazu_8k"])
def test_dataset_yamls(data_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPRANK_DATA_DIR", str(data_dir))
    splits = resolve_dataset(DATASETS / f"{name}.yaml")
    assert splits.train.path.is_relative_to(data_dir.resolve())
    expected = {"frappe_raw": "frappe_ctr", "criteo_dac_8k": "criteo", "avazu_8k": "avazu"}.get(name, name)
    assert splits.schema.name == expected
    assert next(splits.train.chunks(chunk_rows=5)).num_rows == 5


def test_dataset_yaml_is_validated(tmp_path: Path, write_file: WriteFile) -> None:
    with pytest.raises(ValueError, match="either `path` or `train`"):
        DatasetConfig.model_validate({"name": "x"})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        DatasetConfig.model_validate({"name": "x", "path": "a", "shema": "typo.yaml"})
    write_file("rows.csv", TINY)
    write_file("s.yaml", "fields:\n  - {name: user, kind: categorical, source: user}\n")
    config = write_file(
        "d.yaml", "name: t\ndata_dir: ${NOT_SET_ANYWHERE:-.}\ntrain: rows.csv\nschema: s.yaml\n"
    )
    splits = resolve_dataset(config)
    assert splits.schema.names == ("user",) and read_all(splits.train).columns["user"].tolist() == ["a", "b"]


def test_schema_precedence(tmp_path: Path, write_file: WriteFile, tiny_schema: FeatureSchema) -> None:
    data = write_file("rows.csv", TINY)
    with pytest.raises(ValueError, match=r"no schema given, no rows\.schema\.yaml beside it"):
        resolve_dataset(data)
    save_schema_yaml(tiny_schema, tmp_path / "schema.yaml")
    assert resolve_dataset(data).schema == tiny_schema
    only_user = FeatureSchema.model_validate(
        {"fields": [{"name": "user", "kind": "categorical", "source": "user"}]}
    )
    save_schema_yaml(only_user, tmp_path / "rows.schema.yaml")
    assert resolve_dataset(data).schema == only_user  # the file's own sibling beats the folder's
    explicit = FeatureSchema.model_validate({"fields": [{"name": "tags", "kind": "multi", "source": "user"}]})
    assert resolve_dataset(data, explicit).schema == explicit


def test_folder_split_names_and_formats(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    save_schema_yaml(tiny_schema, tmp_path / "schema.yaml")
    (tmp_path / "train.tsv").write_text(TINY.replace(",", "\t"))
    (tmp_path / "val.tsv").write_text(TINY.replace(",", "\t"))
    (tmp_path / "notes.txt.bak").write_text("ignored")
    splits = resolve_dataset(tmp_path)
    assert splits.valid is not None and splits.valid.path.name == "val.tsv" and splits.test is None
    assert read_all(splits.train).columns["tags"].tolist() == ["x", "y"]
    (tmp_path / "train.csv").write_text(TINY)
    with pytest.raises(ValueError, match=r"several train files: \['train.csv', 'train.tsv'\]"):
        split_files(tmp_path)
    (tmp_path / "train.tsv").unlink()
    (tmp_path / "train.csv").unlink()
    with pytest.raises(ValueError, match="no train"):
        resolve_dataset(tmp_path)


def test_parquet_folder(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    chunk = Chunk(
        {"user": np.array(["a"]), "score": np.array([1.5]), "tags": np.array(["t"])},
        np.ones(1, np.float32),
        1,
    )
    write_table(tmp_path / "train.parquet", chunk, tiny_schema)
    splits = resolve_dataset(tmp_path)
    assert isinstance(splits.train, ParquetReader) and splits.schema == tiny_schema


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("a.csv", "label,x\n1,2\n", DataFormat.CSV),
        ("a.txt", "label\tx\n1\t2\n", DataFormat.TSV),
        ("a.txt", "1 3:1 7:1\n", DataFormat.LIBSVM),
        ("a.data", "\n-1 3:0.5 7:1\n", DataFormat.LIBSVM),
        ("a.txt", "1 0:3:1 1:7:1\n", DataFormat.LIBFFM),
        ("a.txt", "\t".join(["0", *[""] * 39]) + "\n", DataFormat.CRITEO),
        ("a.parquet", "", DataFormat.PARQUET),
    ],
)
def test_detect_format(write_file: WriteFile, name: str, text: str, fmt: DataFormat) -> None:
    assert detect_format(write_file(name, text)) is fmt


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        resolve_dataset(tmp_path / "nowhere")


def test_fingerprint_depends_on_content_not_place_or_time(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    first = tmp_path / "one"
    first.mkdir()
    save_schema_yaml(tiny_schema, first / "schema.yaml")
    (first / "train.csv").write_text(TINY)
    (first / "test.csv").write_text(TINY)
    second = tmp_path / "two"
    shutil.copytree(first, second)
    os.utime(second / "train.csv", (1_000_000, 1_000_000))
    fingerprint = data_fingerprint(resolve_dataset(first))
    assert len(fingerprint) == 64 and fingerprint == data_fingerprint(resolve_dataset(second))
    (second / "train.csv").write_text(TINY.replace("1,a", "0,a"))  # same size, other content
    assert data_fingerprint(resolve_dataset(second)) != fingerprint
    (second / "train.csv").write_text(TINY)
    (second / "test.csv").rename(second / "valid.csv")  # same bytes, another role
    assert data_fingerprint(resolve_dataset(second)) != fingerprint


def test_fingerprint_reads_head_and_tail_of_big_files(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    save_schema_yaml(tiny_schema, tmp_path / "schema.yaml")
    body = "".join(f"{i % 2},u{i},{i},t\n" for i in range(300_000))
    (tmp_path / "train.csv").write_text("label,user,score,tags\n" + body)
    before = data_fingerprint(resolve_dataset(tmp_path))
    (tmp_path / "train.csv").write_text("label,user,score,tags\n" + body[:-4] + "u\n")
    assert data_fingerprint(resolve_dataset(tmp_path)) != before


def test_raw_frappe_fingerprint_follows_the_seed(data_dir: Path) -> None:
    first = data_fingerprint(resolve_dataset(data_dir / "frappe", seed=1))
    assert first == data_fingerprint(resolve_dataset(data_dir / "frappe", seed=1))
    assert first != data_fingerprint(resolve_dataset(data_dir / "frappe", seed=2))
