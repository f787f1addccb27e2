"""The typed training configuration: YAML validated with ``extra="forbid"``, plus ``--set`` overrides.

A typo in a key is an error that names the key, never a silently ignored setting.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from model.nets import model_spec

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OptimizerConfig(_Strict):
    """Adam for every model; Adagrad and FTRL-Proximal are also available for LR."""

    name: Literal["adam", "adagrad", "ftrl"] = "adam"
    lr: Positive = 1e-3
    ftrl_alpha: Positive = 0.05
    ftrl_beta: NonNegative = 1.0
    ftrl_l1: NonNegative = 0.0
    ftrl_l2: NonNegative = 0.0


class EarlyStopping(_Strict):
    """Stop when validation AUC has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: Annotated[int, Field(ge=1)] = 2
    min_delta: NonNegative = 1e-5


class LRDecay(_Strict):
    """Multiply the learning rate by ``factor`` when validation AUC stalls for ``patience`` epochs."""

    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    patience: Annotated[int, Field(ge=0)] = 1
    min_lr: NonNegative = 1e-6


class PrepareConfig(_Strict):
    """How ``apprank prepare`` writes a prepared dataset (see ``training.prepared``).

    Attributes:
        row_group_rows: rows per Parquet row group, the unit ranks are assigned and shuffled by.
        shard_rows: rows per shard file (rounded up to whole row groups).
        compression: Parquet codec of the shards.
        vocab_cap: a categorical field with more distinct values is hashed into this many buckets
            (fitting memory is bounded by it); None never falls back.
    """

    row_group_rows: Annotated[int, Field(ge=1)] = 16_384
    shard_rows: Annotated[int, Field(ge=1)] = 1_048_576
    compression: Literal["zstd", "snappy", "lz4", "none"] = "zstd"
    vocab_cap: Annotated[int, Field(ge=1)] | None = 1_000_000


class StreamConfig(_Strict):
    """How training streams a prepared dataset.

    Attributes:
        shuffle_buffer_rows: rows held for shuffling across row groups (bounded memory); 0 keeps the
            order of the (permuted) row groups.
        prefetch_batches: batches the background reader prepares ahead (with ``async_loading``).
    """

    shuffle_buffer_rows: Annotated[int, Field(ge=0)] = 262_144
    prefetch_batches: Annotated[int, Field(ge=1)] = 4


class TrainConfig(_Strict):
    """Everything ``apprank train`` needs besides the data and the output directory.

    Attributes:
        model: a registry name (``lr``, ``fm``, ``deepfm``...).
        params: the model's hyperparameters, validated against its typed parameter class.
        embedding_l2: L2 penalty on embedding tables (FM part and shared embeddings).
        net_l2: L2 penalty on the other weights (dense layers).
        precision: ``bf16`` runs forward/backward under bfloat16 autocast (faster on CPUs with
            AVX-512 BF16); ``fp32`` is exact. Evaluation and export are always fp32.
        device: where to train; ``auto`` takes the GPU when one is present.
        lr_scaling: with ``--nproc N``, ``sqrt`` multiplies the learning rate by sqrt(N).
        calibrate: fit Platt scaling (2 parameters) on the validation split and export it with the
            model, so that the mean predicted CTR matches the observed one; AUC is unchanged.
        async_loading: prepare batches in a background thread while the model trains.
        serving_graphs: export the request-shaped graphs (and the gated int8 one) beside ``model.onnx``
            where the model allows; off: the bundle serves ``model.onnx`` only (a quicker export, for
            runs whose bundle is not served, such as tests of the training itself).
        threads: torch intra-op threads (None = all cores).
        valid_fraction / test_fraction: used when the data is a single file.
        max_rows: read at most this many training rows (quick runs).
        memory_budget: raw input (bytes on disk) up to this size is trained on in memory; larger
            input is prepared first into ``prepared_cache`` and streamed.
        prepared_cache: folder of the automatically prepared datasets (one per cache key).
        checkpoint_every: write a step checkpoint every this many steps (None: never).
        warm_lr_factor: a run warm-started from a bundle (``--resume BUNDLE``, the daily retrain)
            trains at ``optimizer.lr`` times this: it fine-tunes weights that already fit, and at the
            cold-start step its first epoch undoes much of the warm start. ``optimizer.lr`` stays the
            cold-start step (so a chain of retrains does not compound the factor); 1 trains at it.
    """

    model: str = "deepfm"
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 2026
    epochs: Annotated[int, Field(ge=1)] = 50
    batch_size: Annotated[int, Field(ge=1)] = 4096
    eval_batch_size: Annotated[int, Field(ge=1)] = 65536
    optimizer: OptimizerConfig = OptimizerConfig()
    embedding_l2: NonNegative = 0.0
    net_l2: NonNegative = 0.0
    grad_clip: Positive | None = 10.0
    early_stopping: EarlyStopping = EarlyStopping()
    lr_decay: LRDecay | None = LRDecay()
    precision: Literal["fp32", "bf16"] = "bf16"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lr_scaling: Literal["none", "sqrt"] = "none"
    calibrate: bool = True
    async_loading: bool = True
    serving_graphs: bool = True
    threads: Annotated[int, Field(ge=1)] | None = None
    valid_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.1
    test_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.1
    max_rows: Annotated[int, Field(ge=1)] | None = None
    chunk_rows: Annotated[int, Field(ge=1000)] = 200_000
    prepare: PrepareConfig = PrepareConfig()
    stream: StreamConfig = StreamConfig()
    memory_budget: ByteSize = ByteSize(512 * 1024 * 1024)
    prepared_cache: str = "var/cache/prepared"
    checkpoint_every: Annotated[int, Field(ge=1)] | None = None
    warm_lr_factor: Annotated[float, Field(gt=0, le=1)] = 0.1
    version: str | None = None
    name: str | None = None

    @field_validator("model")
    @classmethod
    def _registered(cls, value: str) -> str:
        model_spec(value)  # raises with the list of known names
        return value

    @model_validator(mode="after")
    def _model_and_params(self) -> TrainConfig:
        try:
            model_spec(self.model).params.model_validate(self.params)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: {first['msg']} (hyperparameter of {self.model})") from None
        if self.optimizer.name != "adam" and self.model != "lr":
            raise ValueError(f"optimizer {self.optimizer.name!r} is only available for model 'lr'")
        return self

    def model_params(self) -> BaseModel:
        """The validated hyperparameter object of the chosen model."""
        return model_spec(self.model).params.model_validate(self.params)


# Per-model defaults, beneath the config file and the command line. Tuned on frappe_ctr's validation
# split: LR and FM learn from near-zero weights and need a larger step than the deep models'
# Adam 1e-3 (with 1e-3 they stop early around AUC 0.88); DeepFM-D overfits within ~5 epochs
# without L2 on the shared embedding (test AUC 0.980 -> 0.986 with 0.05).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "lr": {"optimizer": {"lr": 0.01}},
    "fm": {"optimizer": {"lr": 0.01}},
    "deepfm": {"embedding_l2": 0.05},
}


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` laid over it, section by section (a nested mapping replaces only its keys)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def with_values(config: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``config`` with each dotted key of ``values`` (``optimizer.lr``, ``params.dropout``) replaced.

    Raises:
        ConfigError: a key or value the configuration refuses; the message names the key.
    """
    data = config.model_dump(mode="python")
    for key, value in values.items():
        _set_path(data, key, value)
    return _validated(data)


def _validated(data: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {message}" if where else message) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-typed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: {error}") from None
    return key.strip(), value


def load_config(path: Path | None, overrides: list[str] | tuple[str, ...] = (), **flags: Any) -> TrainConfig:
    """Layer, lowest first: the model's built-in defaults, the YAML at ``path``, ``flags`` (CLI options
    such as ``model``; None means unset), then ``key=value`` overrides; validate the result.

    Raises:
        ConfigError: unknown key, wrong type or bad value; the message names the key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping")
        data = loaded
    data.update({key: value for key, value in flags.items() if value is not None})
    parsed = [parse_override(text) for text in overrides]
    for key, value in parsed:
        if key == "model":
            data["model"] = value
    model = data.get("model", TrainConfig.model_fields["model"].default)
    if isinstance(model, str):
        # a deep copy: ``--set`` writes into nested sections, which must not be the shared defaults
        data = deep_merge(copy.deepcopy(MODEL_DEFAULTS.get(model, {})), data)
    for key, value in parsed:
        if key.startswith("params.") or key in TrainConfig.model_fields or "." in key:
            _set_path(data, key, value)
        else:
            _set_path(data, f"params.{key}", value)  # hyperparameters may be set by their bare name
    return _validated(data)
