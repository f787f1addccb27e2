"""From ``apprank train --data PATH`` to readers: format detection, schema lookup, splits, fingerprint.

PATH may be a directory of ``train.*`` / ``valid.*`` (or ``val.*``) / ``test.*`` files, a single file
(the trainer then splits its rows itself), the raw Frappe directory (``frappe.csv`` + ``meta.csv``), or
a dataset YAML (``configs/datasets/*.yaml``, see ``DatasetConfig``). The schema is the one given, else
a sibling (``X.schema.yaml`` beside ``X.csv``, or ``schema.yaml`` in the folder), else the built-in one
for a recognised format (``configs/schemas/``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.files import schema_sibling
from model.schema import FeatureSchema
from training.readers import (
    CRITEO_COLUMNS,
    FRAPPE_CTR_COLUMNS,
    CriteoReader,
    DelimitedReader,
    FrappeRawReader,
    LibffmReader,
    LibsvmReader,
    ParquetReader,
    Reader,
    TextFile,
)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "configs" / "schemas"
DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".libsvm", ".svm", ".libfm", ".libffm", ".ffm")
SPLIT_STEMS = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)}
FINGERPRINT_BYTES = 1 << 20
AVAZU_MARKERS = frozenset({"click", "device_ip", "site_id", "app_id", "C14"})
_LIBSVM_TOKEN = re.compile(r"^[^:\s]+:[^:\s]+$")
_LIBFFM_TOKEN = re.compile(r"^\d+:[^:\s]+:[^:\s]+$")
_ENV_DEFAULT = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


class DataFormat(StrEnum):
    """How a file is laid out (each has its reader)."""

    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"
    CRITEO = "criteo"
    LIBSVM = "libsvm"
    LIBFFM = "libffm"
    FRAPPE_RAW = "frappe_raw"


@dataclass(frozen=True)
class DatasetSplits:
    """Readers for the train / valid / test parts (valid and test may be absent) and their schema."""

    train: Reader
    valid: Reader | None
    test: Reader | None
    schema: FeatureSchema
    description: str

    def named(self) -> dict[str, Reader]:
        """The readers present, by split name."""
        parts = {"train": self.train, "valid": self.valid, "test": self.test}
        return {name: reader for name, reader in parts.items() if reader is not None}


class DatasetConfig(BaseModel):
    """A dataset YAML: either ``path`` (a file or folder, resolved like ``--data``) or explicit splits.

    Relative paths are relative to ``data_dir``, which is relative to the YAML's folder and may use
    ``${VAR}`` / ``${VAR:-default}`` (``${APPRANK_DATA_DIR:-../../../shared/data}``). ``schema`` is
    relative to the YAML's folder.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    data_dir: str = "."
    path: str | None = None
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    format: DataFormat | None = None
    schema_file: Annotated[str | None, Field(alias="schema")] = None
    seed: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.path is None) == (self.train is None):
            raise ValueError("a dataset YAML names either `path` or `train` (with optional valid/test)")
        if self.path is not None and (self.valid or self.test):
            raise ValueError("`valid` and `test` go with `train`, not with `path`")
        return self


def _first_line(path: Path) -> str:
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                return raw[: 1 << 16].decode("utf-8", errors="replace").strip("\r\n").lstrip("\ufeff")
    return ""


def detect_format(path: Path) -> DataFormat:
    """The layout of ``path``, by suffix and by its first non-blank line."""
    if path.is_dir():
        if (path / "frappe.csv").is_file() and (path / "meta.csv").is_file():
            return DataFormat.FRAPPE_RAW
        raise ValueError(f"{path}: a folder needs train.* files or frappe.csv + meta.csv")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return DataFormat.PARQUET
    line = _first_line(path)
    tokens = line.split()
    if suffix in {".libffm", ".ffm"} or (len(tokens) > 1 and all(map(_LIBFFM_TOKEN.match, tokens[1:]))):
        return DataFormat.LIBFFM
    if suffix in {".libsvm", ".svm", ".libfm"} or (
        len(tokens) > 1 and all(map(_LIBSVM_TOKEN.match, tokens[1:]))
    ):
        return DataFormat.LIBSVM
    fields = line.split("\t")
    if len(fields) == len(CRITEO_COLUMNS) and fields[0] in {"0", "1"}:
        return DataFormat.CRITEO
    if suffix == ".tsv" or line.count("\t") > line.count(","):
        return DataFormat.TSV
    return DataFormat.CSV


def open_reader(path: Path, fmt: DataFormat, schema: FeatureSchema, *, seed: int = 2026) -> Reader:
    """The reader for a file (or the raw Frappe folder, all rows) in format ``fmt``."""
    readers: dict[DataFormat, Any] = {
        DataFormat.CSV: lambda: DelimitedReader(path, schema),
        DataFormat.TSV: lambda: DelimitedReader(path, schema, delimiter="\t"),
        DataFormat.PARQUET: lambda: ParquetReader(path, schema),
        DataFormat.CRITEO: lambda: CriteoReader(path, schema),
        DataFormat.LIBSVM: lambda: LibsvmReader(path, schema),
        DataFormat.LIBFFM: lambda: LibffmReader(path, schema),
        DataFormat.FRAPPE_RAW: lambda: FrappeRawReader(path, schema, seed=seed),
    }
    reader: Reader = readers[fmt]()
    return reader


def builtin_schema(path: Path, fmt: DataFormat) -> Path | None:
    """The ``configs/schemas`` file for a recognised dataset, or None."""
    if fmt is DataFormat.FRAPPE_RAW:
        return SCHEMA_DIR / "frappe_ctr.yaml"
    if fmt is DataFormat.CRITEO:
        return SCHEMA_DIR / "criteo.yaml"
    if fmt in {DataFormat.LIBSVM, DataFormat.LIBFFM}:
        return SCHEMA_DIR / "frappe_x1.yaml" if len(_first_line(path).split()) == 11 else None
    if fmt in {DataFormat.CSV, DataFormat.TSV}:
        header = set(TextFile(path, delimiter="\t" if fmt is DataFormat.TSV else ",").header())
        if header == set(FRAPPE_CTR_COLUMNS):
            return SCHEMA_DIR / "frappe_ctr.yaml"
        if header == set(CRITEO_COLUMNS):
            return SCHEMA_DIR / "criteo.yaml"
        if AVAZU_MARKERS <= header:
            return SCHEMA_DIR / "avazu.yaml"
    return None


def find_schema(path: Path, fmt: DataFormat) -> tuple[FeatureSchema, Path]:
    """The schema for ``path``: a sibling file first, then the built-in one for its format.

    Raises:
        ValueError: none found.
    """
    folder = path if path.is_dir() else path.parent
    candidates = [] if path.is_dir() else [schema_sibling(path), schema_sibling(path).with_suffix(".json")]
    candidates += [folder / "schema.yaml", folder / "schema.yml", folder / "schema.json"]
    builtin = builtin_schema(path, fmt)
    for candidate in [*candidates, *([builtin] if builtin else [])]:
        if candidate.is_file():
            return FeatureSchema.load(candidate), candidate
    raise ValueError(
        f"{path}: no schema given, no {candidates[0].name} beside it and no built-in schema fits"
    )


def split_files(folder: Path) -> dict[str, Path]:
    """``train`` / ``valid`` / ``test`` data files of a folder (``val.*`` counts as valid).

    Raises:
        ValueError: no train file, or two files for one split.
    """
    found: dict[str, Path] = {}
    for split, stems in SPLIT_STEMS.items():
        matches = sorted(
            file
            for file in folder.iterdir()
            if file.is_file() and file.stem in stems and file.suffix.lower() in DATA_SUFFIXES
        )
        if len(matches) > 1:
            raise ValueError(f"{folder}: several {split} files: {[m.name for m in matches]}")
        if matches:
            found[split] = matches[0]
    if "train" not in found:
        raise ValueError(f"{folder}: no train.* file ({', '.join(DATA_SUFFIXES)})")
    return found


def _describe(fmt: DataFormat, files: dict[str, Path], schema: FeatureSchema, origin: str) -> str:
    parts = ", ".join(f"{split} {path}" for split, path in files.items())
    return f"{fmt.value}: {parts}; schema {schema.name} ({origin})"


def _frappe_raw(path: Path, schema: FeatureSchema, origin: str, seed: int) -> DatasetSplits:
    readers = [FrappeRawReader(path, schema, split=split, seed=seed) for split in ("train", "valid", "test")]
    description = f"frappe_raw: {path} -> CTR rows (2 negatives per log, seed {seed}, 7:2:1); schema {origin}"
    return DatasetSplits(readers[0], readers[1], readers[2], schema, description)


def _from_files(
    files: dict[str, Path],
    schema: FeatureSchema | None,
    fmt: DataFormat | None,
    seed: int,
    origin: str = "given",
) -> DatasetSplits:
    """Readers for explicit split files, all in the format of the train file (or ``fmt``)."""
    for path in files.values():
        if not path.exists():
            raise FileNotFoundError(path)
    train = files["train"]
    fmt = fmt or detect_format(train)
    if schema is None:
        schema, source = find_schema(train, fmt)
        origin = str(source)
    if fmt is DataFormat.FRAPPE_RAW:
        return _frappe_raw(train, schema, origin, seed)
    readers = {split: open_reader(path, fmt, schema, seed=seed) for split, path in files.items()}
    description = _describe(fmt, files, schema, origin)
    return DatasetSplits(readers["train"], readers.get("valid"), readers.get("test"), schema, description)


def _expand(text: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from the environment."""
    return _ENV_DEFAULT.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


def load_dataset_config(path: Path, schema: FeatureSchema | None, seed: int) -> DatasetSplits:
    """Resolve a dataset YAML (see ``DatasetConfig``); an explicit ``schema`` wins over the YAML's."""
    config = DatasetConfig.model_validate(yaml.safe_load(path.read_text()))
    root = (path.parent / _expand(config.data_dir)).resolve()
    origin = "given"
    if schema is None and config.schema_file is not None:
        schema = FeatureSchema.load(path.parent / config.schema_file)
        origin = str((path.parent / config.schema_file).resolve())
    seed = config.seed if config.seed is not None else seed
    if config.path is not None:
        target = root / config.path
        if config.format is DataFormat.FRAPPE_RAW or (config.format is None and target.is_dir()):
            return resolve_dataset(target, schema, seed=seed)
        return _from_files({"train": target}, schema, config.format, seed, origin)
    named = {"train": config.train, "valid": config.valid, "test": config.test}
    files = {split: root / name for split, name in named.items() if name is not None}
    return _from_files(files, schema, config.format, seed, origin)


def resolve_dataset(path: Path, schema: FeatureSchema | None = None, *, seed: int = 2026) -> DatasetSplits:
    """Readers for ``apprank train --data PATH`` (see the module docstring).

    Args:
        path: a folder of split files, one data file, the raw Frappe folder, or a dataset YAML.
        schema: overrides every schema lookup.
        seed: for data generated at read time (the raw Frappe negatives and shuffle).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the layout or the schema cannot be worked out.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.suffix in {".yaml", ".yml"}:
        return load_dataset_config(path, schema, seed)
    if path.is_dir() and detect_format_or_none(path) is DataFormat.FRAPPE_RAW:
        resolved, origin = (
            (schema, "given")
            if schema
            else (FeatureSchema.load(SCHEMA_DIR / "frappe_ctr.yaml"), "frappe_ctr.yaml")
        )
        return _frappe_raw(path, resolved, origin, seed)
    files = split_files(path) if path.is_dir() else {"train": path}
    return _from_files(files, schema, None, seed)


def detect_format_or_none(path: Path) -> DataFormat | None:
    """``detect_format``, or None where it cannot tell."""
    try:
        return detect_format(path)
    except ValueError:
        return None


def _reader_files(reader: Reader) -> list[Path]:
    path = reader.path
    if isinstance(reader, FrappeRawReader):
        return [path / "frappe.csv", path / "meta.csv"]
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def _hash_file(digest: Any, path: Path) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            handle.seek(max(size - FINGERPRINT_BYTES, FINGERPRINT_BYTES))
            digest.update(handle.read(FINGERPRINT_BYTES))


def data_fingerprint(splits: DatasetSplits) -> str:
    """sha256 (hex) over each split's file names, sizes and first and last MiB (never mtimes or paths).

    Generated data also hashes how it was generated (the raw Frappe seed, negatives and split).
    """
    digest = hashlib.sha256()
    for split in ("train", "valid", "test"):
        reader = splits.named().get(split)
        digest.update(f"[{split}]".encode())
        if reader is None:
            continue
        for file in _reader_files(reader):
            _hash_file(digest, file)
        if isinstance(reader, FrappeRawReader):
            recipe = (reader.seed, reader.negatives, reader.split, reader.fractions)
            digest.update(f"frappe_raw{recipe}".encode())
    return digest.hexdigest()
