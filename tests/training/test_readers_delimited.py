"""CSV / TSV reading: the real frappe_ctr, Criteo-with-header and Avazu files, chunking, and every
malformed-file case with its exact message (file, line, column, reason)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.fitting import EncoderFitter
from model.schema import FeatureSchema
from tests.training.conftest import WriteFile, load_schema
from training.readers import DelimitedReader, ReaderError, read_all
from training.readers.frappe_raw import FRAPPE_CTR_COLUMNS

GOOD = 'label,user,score,tags\n1,u1,0.5,"a|b"\n0,"u,2",,\n1,u3,-2e3,c\n'


def _error(reader: DelimitedReader) -> ReaderError:
    with pytest.raises(ReaderError) as caught:
        read_all(reader)
    return caught.value


def test_frappe_ctr_splits_read_whole(data_dir: Path, frappe_schema: FeatureSchema) -> None:
    sizes = {}
    for split in ("train", "valid", "test"):
        chunk = read_all(DelimitedReader(data_dir / "frappe_ctr" / f"{split}.csv", frappe_schema))
        sizes[split] = chunk.num_rows
        assert set(chunk.columns) == set(frappe_schema.names)
        assert all(
            column.dtype.kind == "U" and column.shape == (chunk.num_rows,)
            for column in chunk.columns.values()
        )
        assert chunk.labels.dtype == np.float32 and set(np.unique(chunk.labels)) == {0.0, 1.0}
        assert 0.32 < chunk.labels.mean() < 0.35  # two negatives per positive
    assert sizes == {"train": 202_026, "valid": 57_722, "test": 28_861}


def test_frappe_ctr_first_rows_and_quoted_commas(data_dir: Path, frappe_schema: FeatureSchema) -> None:
    chunk = next(DelimitedReader(data_dir / "frappe_ctr" / "train.csv", frappe_schema).chunks(chunk_rows=3))
    assert chunk.first_line == 2 and chunk.num_rows == 3
    assert chunk.labels.tolist() == [0.0, 1.0, 0.0]
    assert chunk.columns["user"].tolist() == ["265", "16", "33"]
    assert chunk.columns["downloads"][0] == "1,000,000 - 5,000,000"
    assert chunk.columns["developer"][0] == "Blizzard Entertainment, Inc."
    assert chunk.columns["rating"].tolist() == ["4.8", "4.4", "4.5"]


def test_chunks_cover_the_file_in_order(data_dir: Path, frappe_schema: FeatureSchema) -> None:
    reader = DelimitedReader(data_dir / "frappe_ctr" / "test.csv", frappe_schema)
    whole = read_all(reader)
    chunks = list(reader.chunks(chunk_rows=10_000))
    assert [c.num_rows for c in chunks] == [10_000, 10_000, 8_861]
    assert [c.first_line for c in chunks] == [2, 10_002, 20_002]
    for name in frappe_schema.names:
        assert np.array_equal(np.concatenate([c.columns[name] for c in chunks]), whole.columns[name])
    fitter = EncoderFitter(frappe_schema)
    for chunk in chunks:
        fitter.update(chunk.columns)
    encoded = fitter.finish().transform(whole.columns, whole.num_rows)
    assert all(int(encoded[name].min()) >= 2 for name in frappe_schema.names)  # every value known


def test_criteo_with_header_and_avazu(data_dir: Path, criteo_schema: FeatureSchema) -> None:
    criteo = read_all(DelimitedReader(data_dir / "criteo" / "criteo_10k.csv", criteo_schema))
    assert criteo.num_rows == 9_999
    assert criteo.columns["I1"].dtype == np.float64 and criteo.columns["C1"].dtype.kind == "U"
    assert [criteo.columns[f"I{i}"][0] for i in range(1, 6)] == [1.0, 1.0, 5.0, 0.0, 1382.0]
    assert np.isnan(criteo.columns["I12"][0]) and criteo.columns["C22"][0] == ""
    avazu = read_all(DelimitedReader(data_dir / "avazu" / "avazu_8k.csv", load_schema("avazu")))
    assert avazu.num_rows == 8_087 and 0.1 < avazu.labels.mean() < 0.3
    assert avazu.columns["site_id"][0] == "1fbe01fe" and avazu.columns["C21"][0] == "79"


def test_tiny_file_values(write_file: WriteFile, tiny_schema: FeatureSchema) -> None:
    chunk = read_all(DelimitedReader(write_file("t.csv", GOOD), tiny_schema))
    assert chunk.columns["user"].tolist() == ["u1", "u,2", "u3"]
    assert chunk.columns["score"][0] == 0.5 and np.isnan(chunk.columns["score"][1])
    assert chunk.columns["score"][2] == -2000.0
    assert chunk.columns["tags"].tolist() == ["a|b", "", "c"]
    assert chunk.labels.tolist() == [1.0, 0.0, 1.0]


def test_tsv_and_label_spellings(write_file: WriteFile, tiny_schema: FeatureSchema) -> None:
    path = write_file("t.tsv", "label\tuser\tscore\ttags\n1.0\ta\t1\t\n0.0\tb\t2\tx\n")
    chunk = read_all(DelimitedReader(path, tiny_schema, delimiter="\t"))
    assert chunk.labels.tolist() == [1.0, 0.0]
    signed = write_file("s.csv", "label,user,score,tags\n-1,a,1,\n+1,b,2,\n")
    assert read_all(DelimitedReader(signed, tiny_schema, signed_labels=True)).labels.tolist() == [0.0, 1.0]
    error = _error(DelimitedReader(signed, tiny_schema))
    assert str(error) == f"{signed}:2: column label: bad label '-1' (expected 0 or 1)"


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        (
            "label,user,score,tags\n1,a,1,x\n0,b,2,y,extra\n",
            3,
            "#5",
            "unexpected extra value (expected 4 columns, got 5)",
        ),
        ("label,user,score,tags\n1,a,1,x\n0,b\n", 3, "score", "missing (expected 4 columns, got 2)"),
        ("label,user,score,tags\n1,a,1,x\n0,b,abc,y\n", 3, "score", "not a number: 'abc'"),
        (
            "label,user,score,tags\n1,a,1,x\n0,b,1,000,y\n",
            3,
            "#5",
            "unexpected extra value (expected 4 columns, got 5)",
        ),
        ("label,user,score,tags\n1,a,1,x\nyes,b,2,y\n", 3, "label", "bad label 'yes' (expected 0 or 1)"),
        ("label,user,score,tags\n1,a,1,x\n2,b,2,y\n", 3, "label", "bad label '2' (expected 0 or 1)"),
        ("label,user,score,tags\n1,a,1,x\n,b,2,y\n", 3, "label", "bad label '' (expected 0 or 1)"),
        ("user,score,tags\na,1,x\n", 1, "label", "label column not in the header"),
        ("label,user,tags\n1,a,x\n", 1, "score", "schema field not in the header"),
    ],
)
def test_malformed_rows_name_file_line_and_column(
    write_file: WriteFile, tiny_schema: FeatureSchema, text: str, line: int, column: str, reason: str
) -> None:
    path = write_file("bad.csv", text)
    error = _error(DelimitedReader(path, tiny_schema))
    assert (error.file, error.line, error.column, error.reason) == (path, line, column, reason)
    assert str(error) == f"{path}:{line}: column {column}: {reason}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty file"), ("\n\n", "empty file"), ("label,user,score,tags\n", "no data rows (header only)")],
)
def test_empty_and_header_only_files(
    write_file: WriteFile, tiny_schema: FeatureSchema, text: str, reason: str
) -> None:
    path = write_file("empty.csv", text)
    error = _error(DelimitedReader(path, tiny_schema))
    assert str(error) == f"{path}: {reason}" and error.line is None and error.column is None


def test_missing_file(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    assert (
        str(_error(DelimitedReader(tmp_path / "nope.csv", tiny_schema)))
        == f"{tmp_path / 'nope.csv'}: no such file"
    )


def test_line_numbers_count_blank_lines_and_quoted_newlines(
    write_file: WriteFile, tiny_schema: FeatureSchema
) -> None:
    text = 'label,user,score,tags\n1,"two\nlines",1,x\n\n0,b,2,y\n1,c,oops,z\n'
    path = write_file("lines.csv", text)
    error = _error(DelimitedReader(path, tiny_schema))
    assert (error.line, error.column, error.reason) == (6, "score", "not a number: 'oops'")
    good = write_file("ok.csv", text.replace("oops", "3"))
    chunk = read_all(DelimitedReader(good, tiny_schema))
    assert chunk.columns["user"].tolist() == ["two\nlines", "b", "c"]


def test_error_in_a_later_chunk_gives_its_line(write_file: WriteFile, tiny_schema: FeatureSchema) -> None:
    rows = [f"{i % 2},u{i},{i},t" for i in range(1, 1001)]
    rows[876] = "1,u877,8x7,t"
    path = write_file("long.csv", "label,user,score,tags\n" + "\n".join(rows) + "\n")
    reader = DelimitedReader(path, tiny_schema)
    chunks = reader.chunks(chunk_rows=100)
    assert [next(chunks).first_line for _ in range(8)] == [2 + 100 * i for i in range(8)]
    with pytest.raises(ReaderError, match=rf"^{path}:878: column score: not a number: '8x7'$"):
        next(chunks)


def test_absent_columns_allowed_on_request(write_file: WriteFile, tiny_schema: FeatureSchema) -> None:
    path = write_file("part.csv", "label,user,extra\n1,a,z\n")
    chunk = read_all(DelimitedReader(path, tiny_schema, allow_missing_columns=True))
    assert set(chunk.columns) == {"user"} and chunk.columns["user"].tolist() == ["a"]


def test_frappe_ctr_header_is_the_documented_one(data_dir: Path) -> None:
    header = (data_dir / "frappe_ctr" / "train.csv").open().readline().strip().split(",")
    assert tuple(header) == FRAPPE_CTR_COLUMNS


def test_bom_crlf_and_no_final_newline(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    path = tmp_path / "win.csv"
    path.write_bytes("\ufefflabel,user,score,tags\r\n1,é,1,x\r\n0,b,2,y".encode())
    chunk = read_all(DelimitedReader(path, tiny_schema))
    assert chunk.columns["user"].tolist() == ["é", "b"] and chunk.columns["score"].tolist() == [1.0, 2.0]


def test_not_utf8_names_the_line(tmp_path: Path, tiny_schema: FeatureSchema) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"label,user,score,tags\n1,a,1,x\n0,caf\xe9,2,y\n")
    error = _error(DelimitedReader(path, tiny_schema))
    assert str(error) == f"{path}:3: not UTF-8 text (invalid continuation byte at byte 6 of the line)"
