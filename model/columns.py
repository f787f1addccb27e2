"""Turning raw column arrays into canonical numpy arrays, vectorized (no Python loop per row).

Raw columns arrive from file readers (strings, numbers) and from the service (JSON scalars). These
helpers give every caller the same canonical form, which is what makes training and serving encode
identically:

* categorical values become unicode strings, ``""`` meaning missing (``None``, ``NaN`` and ``""`` are
  missing); integers are written in decimal, integral floats as integers (``5.0`` -> ``"5"``), other
  floats in Python's shortest repr (``4.8`` -> ``"4.8"``), booleans as ``"true"``/``"false"``;
* numeric values become float64, ``NaN`` meaning missing, booleans 1 and 0;
* multi-valued values (a separated string, or a list) become a flat token array plus row lengths.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

StrArray = npt.NDArray[np.str_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _floats_as_strings(values: npt.NDArray[np.floating[Any]]) -> StrArray:
    out = np.full(values.shape, "", dtype=object)
    finite = np.isfinite(values)
    integral = finite & (np.floor(values) == values) & (np.abs(values) < 2**53)
    out[integral] = values[integral].astype(np.int64).astype(str)
    other = finite & ~integral
    out[other] = values[other].astype(str)
    return out.astype(str)


_STR, _NONE, _BOOL, _FLOAT, _OTHER = range(5)


def _scalar_kind(value: Any) -> int:
    if isinstance(value, str):
        return _STR
    if value is None:
        return _NONE
    if isinstance(value, bool | np.bool_):
        return _BOOL
    if isinstance(value, float | np.floating):
        return _FLOAT
    return _OTHER


_scalar_kinds = np.frompyfunc(_scalar_kind, 1, 1)


def _objects_as_strings(values: npt.NDArray[np.object_]) -> StrArray:
    """Object arrays hold JSON scalars: strings mostly, sometimes numbers, bools or None."""
    if values.size == 0:
        return np.empty(values.shape, dtype=str)
    types = set(map(type, values.ravel().tolist()))
    if types <= {str, type(None)}:  # the common case, without a Python call per element
        out: StrArray = values.astype(str)
        if type(None) in types:
            out[values == None] = ""  # noqa: E711 - elementwise comparison, not an identity test
        return out
    kinds = _scalar_kinds(values).astype(np.int8)
    mixed = np.empty(values.shape, dtype=object)
    mixed[kinds == _NONE] = ""
    for kind, convert in ((_STR, _plain), (_OTHER, _plain), (_BOOL, _booleans), (_FLOAT, _floats)):
        mask = kinds == kind
        if mask.any():
            mixed[mask] = convert(values[mask])
    return mixed.astype(str)


def _plain(values: npt.NDArray[np.object_]) -> StrArray:
    return values.astype(str)


def _booleans(values: npt.NDArray[np.object_]) -> StrArray:
    return np.where(values.astype(bool), "true", "false")


def _floats(values: npt.NDArray[np.object_]) -> StrArray:
    return _floats_as_strings(values.astype(np.float64))


def as_category_strings(values: npt.ArrayLike) -> StrArray:
    """Canonical unicode strings of a categorical column; ``""`` is missing."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "U":
        return array
    if kind == "S":
        return np.char.decode(array, "utf-8")
    if kind in "iu":
        return array.astype(str)
    if kind == "b":
        return np.where(array, "true", "false")
    if kind == "f":
        return _floats_as_strings(array)
    if kind == "O":
        return _objects_as_strings(array)
    raise TypeError(f"cannot read a categorical column of dtype {array.dtype}")


def as_float(values: npt.ArrayLike) -> FloatArray:
    """Float64 view of a numeric column; missing (None, "", NaN) becomes NaN.

    Raises:
        ValueError: a value is neither a number nor missing (the message quotes the first one).
    """
    array = np.asarray(values)
    if array.dtype.kind in "iufb":
        return array.astype(np.float64)
    if array.dtype.kind == "O":
        array = _booleans_as_numbers(array)
    if array.dtype.kind in "OUS":
        text = as_category_strings(array)
        missing = text == ""
        filled = np.where(missing, "nan", text)
        try:
            return filled.astype(np.float64)
        except ValueError:
            bad = _first_non_number(filled)
            raise ValueError(f"not a number: {bad!r}") from None
    raise TypeError(f"cannot read a numeric column of dtype {array.dtype}")


def _booleans_as_numbers(values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Booleans of an object column as 1.0 and 0.0, as in a boolean column (``as_float``)."""
    flat = values.ravel().tolist()
    if not {bool, np.bool_} & set(map(type, flat)):
        return values
    numbers = (float(v) if type(v) in (bool, np.bool_) else v for v in flat)
    return np.fromiter(numbers, dtype=object, count=len(flat)).reshape(values.shape)


def _first_non_number(text: StrArray) -> str:
    for value in text.tolist():
        try:
            float(value)
        except ValueError:
            return str(value)
    return ""


def first_bad_number(values: npt.ArrayLike) -> int | None:
    """Index of the first value that is neither a number nor missing, or None when all are fine."""
    text = as_category_strings(np.asarray(values))
    for position, value in enumerate(text.tolist()):
        if value == "":
            continue
        try:
            float(value)
        except ValueError:
            return position
    return None


def split_multi(values: npt.ArrayLike, separator: str) -> tuple[StrArray, IntArray]:
    """Flatten a multi-valued column into (tokens, lengths).

    Each row is either a string of separated values or a list/tuple of values; missing rows and empty
    tokens count as no value. ``lengths[i]`` is the number of tokens of row ``i``.
    """
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if array.dtype.kind in "US":
        rows: Sequence[Any] = np.char.split(as_category_strings(array), separator).tolist()
    else:
        rows = [_row_tokens(row, separator) for row in array.tolist()]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = list(itertools.chain.from_iterable(rows))
    tokens = as_category_strings(np.array(flat, dtype=object)) if flat else np.empty(0, dtype=str)
    keep = tokens != ""
    if not keep.all():
        row_of = np.repeat(np.arange(len(rows)), lengths)
        lengths = np.bincount(row_of[keep], minlength=len(rows)).astype(np.int64)
        tokens = tokens[keep]
    return tokens, lengths


def _row_tokens(row: Any, separator: str) -> list[Any]:
    if row is None:
        return []
    if isinstance(row, str):
        return row.split(separator)
    if isinstance(row, list | tuple | np.ndarray):
        return list(row)
    return [row]
