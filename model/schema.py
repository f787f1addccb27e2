"""The feature schema: the one description of every field, shared by training and serving.

A schema is frozen and typed. It is written into every model bundle as ``schema.json`` together with a
content hash, so that the service can refuse a bundle whose schema differs from the one it expects.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FeatureKind(StrEnum):
    """How a raw value becomes model input."""

    CATEGORICAL = "categorical"  # vocabulary learned at fit time, with a min count
    HASHED = "hashed"  # stable hash into a fixed number of buckets, for huge cardinalities
    NUMERIC = "numeric"  # a number, transformed (see NumericTransform)
    MULTI = "multi"  # a bag of categorical values, e.g. a user's installed app categories


class Source(StrEnum):
    """Where a field comes from at serving time."""

    USER = "user"
    CONTEXT = "context"
    ITEM = "item"


class NumericTransform(StrEnum):
    """What a numeric field turns into.

    ``standardize`` and ``log`` give one continuous value per row (an embedding scaled by the value);
    ``log_bucket`` and ``quantile_bucket`` turn the number into a bucket index (an ordinary embedding).
    """

    STANDARDIZE = "standardize"  # (x - mean) / std
    LOG = "log"  # sign(x) * log1p(|x|), then standardized
    LOG_BUCKET = "log_bucket"  # the Criteo winners' trick: floor(log(x)^2) for x > 2, x itself below
    QUANTILE_BUCKET = "quantile_bucket"  # equal-frequency buckets fitted on the training data


class FeatureSpec(BaseModel):
    """One field of the schema.

    Attributes:
        name: identifier used in requests, files, encoder state and ONNX input names.
        kind: categorical, hashed, numeric or multi.
        source: user, context or item; the service broadcasts user and context fields to candidates.
        column: name of the raw column in files, when it differs from ``name``.
        min_count: categorical and multi: values seen fewer times map to out-of-vocabulary.
        max_vocab: categorical and multi: keep at most this many of the most frequent values.
        num_buckets: hashed: number of hash buckets; numeric quantile_bucket: number of buckets.
        transform: numeric: how the number is transformed.
        clip: numeric: values are clipped to [-clip, clip] after transformation.
        separator: multi: separator of the values when they arrive as one string.
        max_len: multi: values kept per row (the first ones).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: FeatureKind
    source: Source
    column: str | None = None
    min_count: Annotated[int, Field(ge=1)] = 1
    max_vocab: Annotated[int, Field(ge=1)] | None = None
    num_buckets: Annotated[int, Field(ge=2, le=1 << 30)] | None = None
    transform: NumericTransform | None = None
    clip: Annotated[float, Field(gt=0)] | None = None
    separator: str = "|"
    max_len: Annotated[int, Field(ge=1, le=1024)] = 16

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"feature name {value!r} must be an identifier of at most 64 characters")
        return value

    @model_validator(mode="after")
    def _kind_settings(self) -> Self:
        if self.kind is FeatureKind.HASHED and self.num_buckets is None:
            raise ValueError(f"hashed feature {self.name!r} needs num_buckets")
        if self.kind is FeatureKind.NUMERIC:
            if self.transform is None:
                raise ValueError(f"numeric feature {self.name!r} needs a transform")
            if self.transform is NumericTransform.QUANTILE_BUCKET and self.num_buckets is None:
                raise ValueError(f"quantile_bucket feature {self.name!r} needs num_buckets")
        elif self.transform is not None:
            raise ValueError(f"transform is only for numeric features, not {self.name!r}")
        if self.kind is FeatureKind.MULTI and not self.separator:
            raise ValueError(f"multi feature {self.name!r} needs a non-empty separator")
        return self

    @property
    def raw_column(self) -> str:
        """Name of the column in raw files."""
        return self.column or self.name


class FeatureSchema(BaseModel):
    """An ordered, frozen collection of fields plus the label column.

    Attributes:
        name: a short name for the data this schema describes (``frappe_ctr``, ``synthetic``...).
        label: the label column in raw files (0/1).
        fields: the features, in a fixed order.
        user_id_field: the field that is filled from a request's ``user_id`` when the user object
            lacks it (for data where the user id itself is a feature, as in Frappe).
        item_id_field: likewise, the field filled from each candidate's ``app_id``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    label: str = "label"
    fields: tuple[FeatureSpec, ...]
    user_id_field: str | None = None
    item_id_field: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> Self:
        if not self.fields:
            raise ValueError("a schema needs at least one field")
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        if self.label in names:
            raise ValueError(f"label {self.label!r} is also a feature name")
        for attribute, source in (("user_id_field", Source.USER), ("item_id_field", Source.ITEM)):
            name = getattr(self, attribute)
            if name is not None and (name not in names or self.field(name).source is not source):
                raise ValueError(f"{attribute} {name!r} must name a {source.value} field")
        return self

    def filled_from(self, name: str) -> Literal["user_id", "app_id"] | None:
        """Which id fills field ``name`` when a row (a request, a logged list) lacks it: the request's
        ``user_id`` for ``user_id_field``, the candidate's ``app_id`` for ``item_id_field``, else none."""
        if name == self.user_id_field:
            return "user_id"
        if name == self.item_id_field:
            return "app_id"
        return None

    def field(self, name: str) -> FeatureSpec:
        """The field called ``name`` (KeyError when absent)."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def by_source(self, source: Source) -> tuple[FeatureSpec, ...]:
        """The fields that come from ``source``, in schema order."""
        return tuple(f for f in self.fields if f.source is source)

    def canonical_json(self) -> str:
        """Deterministic JSON text: the thing that is hashed and written to ``schema.json``."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def content_hash(self) -> str:
        """sha256 of the canonical JSON, as hex."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def save(self, path: Path) -> None:
        """Write the schema as indented JSON."""
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> FeatureSchema:
        """Read a schema from JSON or YAML (by suffix)."""
        text = path.read_text()
        data: Any = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
        return cls.model_validate(data)
