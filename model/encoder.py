"""FeatureEncoder: raw columns -> model inputs, the same code in training and in serving.

``transform`` is pure and vectorized: for every field it runs a few numpy operations over the whole
column. Its output is one array per field, keyed by field name (these are also the ONNX input names):

* index fields (categorical, hashed, bucketed numeric): ``int64 [B]``, 0 = missing, 1 = out of vocabulary;
* continuous numeric fields: ``float32 [B]``, transformed and standardized, missing -> 0 (the mean);
* multi-valued fields: ``int64 [B, max_len]``, 0 = padding; a row of zeros is a missing value.

The state is JSON (``encoder.json`` in a bundle), never pickle. Fitting lives in ``model.fitting``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from model.columns import as_category_strings, as_float, split_multi
from model.schema import FeatureSchema, FeatureSpec, NumericTransform
from model.vocabulary import MISSING, OOV, Vocabulary, hash_buckets

_T = TypeVar("_T")

Columns = Mapping[str, npt.ArrayLike]
Encoded = dict[str, npt.NDArray[Any]]


class _State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CategoricalState(_State):
    kind: Literal["categorical"] = "categorical"
    vocabulary: list[str]


class HashedState(_State):
    kind: Literal["hashed"] = "hashed"
    num_buckets: int
    seed: int


class ContinuousState(_State):
    kind: Literal["continuous"] = "continuous"
    transform: NumericTransform
    mean: float
    std: float
    clip: float | None


class LogBucketState(_State):
    kind: Literal["log_bucket"] = "log_bucket"
    vocabulary: list[int]


class QuantileState(_State):
    kind: Literal["quantile_bucket"] = "quantile_bucket"
    boundaries: list[float]


class MultiState(_State):
    kind: Literal["multi"] = "multi"
    vocabulary: list[str]
    separator: str
    max_len: int


FieldState = Annotated[
    CategoricalState | HashedState | ContinuousState | LogBucketState | QuantileState | MultiState,
    Field(discriminator="kind"),
]
_STATES: TypeAdapter[dict[str, FieldState]] = TypeAdapter(dict[str, FieldState])


class InputRole(StrEnum):
    """How a field enters a model: an index, a scaled value, or a bag of indices."""

    INDEX = "index"
    VALUE = "value"
    BAG = "bag"


@dataclass(frozen=True)
class InputField:
    """One model input: its name (the field name), role, embedding rows and, for bags, length."""

    name: str
    role: InputRole
    cardinality: int
    max_len: int = 1


def group_by_role(items: Sequence[_T], roles: Sequence[InputRole]) -> tuple[list[_T], list[_T], list[_T]]:
    """``items`` (one per input, in layout order) split into the index, value and bag inputs."""
    groups: dict[InputRole, list[_T]] = {role: [] for role in InputRole}
    for item, role in zip(items, roles, strict=True):
        groups[role].append(item)
    return groups[InputRole.INDEX], groups[InputRole.VALUE], groups[InputRole.BAG]


@dataclass(frozen=True)
class InputLayout:
    """The model-facing description of an encoder: what every net is built from."""

    fields: tuple[InputField, ...]

    def of_role(self, role: InputRole) -> tuple[InputField, ...]:
        return tuple(f for f in self.fields if f.role is role)

    def stacked(self, encoded: Encoded, rows: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any], list[Any]]:
        """The encoded arrays as the nets take them: index fields ``[B, F_idx]`` (int64), value fields
        ``[B, F_val]`` (float32), and the bags, one ``[B, L]`` array each."""
        index, values, bags = group_by_role(
            [encoded[f.name] for f in self.fields], [f.role for f in self.fields]
        )
        idx = np.stack(index, axis=1) if index else np.zeros((rows, 0), np.int64)
        val = np.stack(values, axis=1) if values else np.zeros((rows, 0), np.float32)
        return idx, val, bags

    @property
    def num_fields(self) -> int:
        return len(self.fields)


def log_bucket_tokens(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The Criteo trick: ``floor(log(x)^2)`` for x > 2, ``floor(x)`` otherwise (NaN -> 0, masked later)."""
    safe = np.where(np.isnan(values), 0.0, values)
    large = safe > 2.0
    squared = np.floor(np.log(np.where(large, safe, 3.0)) ** 2)
    return np.where(large, squared + 1_000_000, np.floor(safe)).astype(np.int64)


def continuous_values(values: npt.NDArray[np.float64], state: ContinuousState) -> npt.NDArray[np.float32]:
    """Transform, standardize and clip; missing becomes 0 (the training mean)."""
    if state.transform is NumericTransform.LOG:
        values = np.sign(values) * np.log1p(np.abs(values))
    scaled = (values - state.mean) / state.std
    if state.clip is not None:
        np.clip(scaled, -state.clip, state.clip, out=scaled)
    return np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


class FeatureEncoder:
    """Encodes raw columns with a fitted state. Build it with ``model.fitting.fit_encoder`` or ``load``."""

    def __init__(self, schema: FeatureSchema, states: Mapping[str, FieldState]) -> None:
        missing = [name for name in schema.names if name not in states]
        if missing:
            raise ValueError(f"encoder state lacks fields {missing}")
        self.schema = schema
        self.states: dict[str, FieldState] = {name: states[name] for name in schema.names}
        self._vocabularies: dict[str, Vocabulary] = {}
        for name, state in self.states.items():
            if isinstance(state, CategoricalState | MultiState):
                self._vocabularies[name] = Vocabulary(state.vocabulary)
            elif isinstance(state, LogBucketState):
                self._vocabularies[name] = Vocabulary(state.vocabulary, numeric=True)
        self.layout = InputLayout(tuple(self._input_field(spec) for spec in schema.fields))

    def _input_field(self, spec: FeatureSpec) -> InputField:
        state = self.states[spec.name]
        if isinstance(state, ContinuousState):
            return InputField(spec.name, InputRole.VALUE, 1)
        if isinstance(state, HashedState):
            return InputField(spec.name, InputRole.INDEX, state.num_buckets + 2)
        if isinstance(state, QuantileState):
            return InputField(spec.name, InputRole.INDEX, len(state.boundaries) + 3)
        cardinality = self._vocabularies[spec.name].cardinality
        if isinstance(state, MultiState):
            return InputField(spec.name, InputRole.BAG, cardinality, state.max_len)
        return InputField(spec.name, InputRole.INDEX, cardinality)

    def transform(self, columns: Columns, num_rows: int) -> Encoded:
        """Encode ``num_rows`` rows; a field absent from ``columns`` is missing in every row.

        Raises:
            ValueError: a column has the wrong length or a numeric column holds text (message names it).
        """
        encoded: Encoded = {}
        for name, state in self.states.items():
            raw = columns.get(name)
            if raw is None:
                encoded[name] = self._all_missing(state, num_rows)
                continue
            array = np.asarray(raw)
            if array.shape[:1] != (num_rows,):
                raise ValueError(f"{name}: expected {num_rows} values, got {array.shape[:1]}")
            try:
                encoded[name] = self._encode(name, state, array)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{name}: {error}") from None
        return encoded

    def _all_missing(self, state: FieldState, num_rows: int) -> npt.NDArray[Any]:
        if isinstance(state, ContinuousState):
            return np.zeros(num_rows, dtype=np.float32)
        if isinstance(state, MultiState):
            return np.zeros((num_rows, state.max_len), dtype=np.int64)
        return np.zeros(num_rows, dtype=np.int64)

    def _encode(self, name: str, state: FieldState, raw: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if isinstance(state, CategoricalState):
            tokens = as_category_strings(raw)
            return np.where(tokens == "", MISSING, self._vocabularies[name].lookup(tokens))
        if isinstance(state, HashedState):
            return hash_buckets(as_category_strings(raw), state.num_buckets, state.seed)
        if isinstance(state, MultiState):
            return self._encode_multi(name, state, raw)
        values = as_float(raw)
        missing = np.isnan(values)
        if isinstance(state, ContinuousState):
            return continuous_values(values, state)
        if isinstance(state, LogBucketState):
            indices = self._vocabularies[name].lookup(log_bucket_tokens(values))
        else:
            indices = np.searchsorted(np.asarray(state.boundaries), values, side="right") + 2
        return np.where(missing, MISSING, indices).astype(np.int64)

    def _encode_multi(self, name: str, state: MultiState, raw: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        tokens, lengths = split_multi(raw, state.separator)
        indices = self._vocabularies[name].lookup(tokens)
        starts = np.cumsum(lengths) - lengths
        slot = np.arange(tokens.size) - np.repeat(starts, lengths)
        row = np.repeat(np.arange(lengths.size), lengths)
        keep = slot < state.max_len
        out = np.zeros((lengths.size, state.max_len), dtype=np.int64)
        out[row[keep], slot[keep]] = indices[keep]
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state, with the schema hash it was fitted under."""
        return {
            "schema_hash": self.schema.content_hash(),
            "fields": {name: state.model_dump(mode="json") for name, state in self.states.items()},
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.state_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def from_state(cls, schema: FeatureSchema, state: Mapping[str, Any]) -> FeatureEncoder:
        """Rebuild from ``state_dict()`` output; the schema hash must match."""
        if state.get("schema_hash") != schema.content_hash():
            raise ValueError("encoder state was fitted under a different schema (schema hash mismatch)")
        return cls(schema, _STATES.validate_python(state.get("fields")))

    @classmethod
    def load(cls, schema: FeatureSchema, path: Path) -> FeatureEncoder:
        return cls.from_state(schema, json.loads(path.read_text()))


def unknown_counts(encoded: Encoded, layout: InputLayout) -> dict[str, tuple[int, int]]:
    """(missing, out-of-vocabulary) counts per index field of an encoded batch."""
    counts: dict[str, tuple[int, int]] = {}
    for spec in layout.of_role(InputRole.INDEX):
        column = encoded[spec.name]
        counts[spec.name] = (int(np.count_nonzero(column == MISSING)), int(np.count_nonzero(column == OOV)))
    return counts
