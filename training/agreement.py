"""Every rank of a data-parallel run must train the same thing: same data, same layout, same settings.

On one machine the ranks share one command line, but on several each node runs its own: a node given
another ``--set``, other raw files, or a dataset prepared with other row groups would train on
something else (a different row-group layout even reads rows twice or never, and uneven step counts
hang DDP). So, once the data is open, every rank gathers every rank's view of the run and all of them
stop with the same clear error when any two differ.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch.distributed as dist

from model.schema import FeatureSchema
from training.config import TrainConfig
from training.distributed import DistContext
from training.sources import Streamed

# Settings that may differ between nodes: they change how fast or where a node works, never what it
# computes (threads and readers follow the node's cores; the cache is a local path; only rank 0 names
# and versions the bundle).
LOCAL_SETTINGS = frozenset(
    {"threads", "async_loading", "stream.prefetch_batches", "prepared_cache", "eval_batch_size"}
    | {"version", "name"}
)


class RunMismatch(ValueError):
    """The ranks of one run disagree on its data or settings."""


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "params":
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def run_identity(
    config: TrainConfig, fingerprint: str, schema: FeatureSchema, rows: object
) -> dict[str, str]:
    """What must be equal on every rank: the data fingerprint, the schema, the prepared layout (row
    groups per shard, for a stream) and every setting but ``LOCAL_SETTINGS``."""
    identity = {"data fingerprint": fingerprint, "schema": schema.content_hash()}
    if isinstance(rows, Streamed):
        splits = {name: info.model_dump(mode="json") for name, info in rows.dataset.manifest.splits.items()}
        layout = json.dumps(splits, sort_keys=True).encode()
        identity["prepared layout"] = hashlib.sha256(layout).hexdigest()
    settings = _flatten(config.model_dump(mode="json"))
    return identity | {key: value for key, value in settings.items() if key not in LOCAL_SETTINGS}


def differences(identities: list[dict[str, str]]) -> list[str]:
    """One line per key on which some rank differs from rank 0: ``key: rank 0 a, rank 2 b``."""
    lines = []
    for key in sorted({key for identity in identities for key in identity}):
        values = [identity.get(key, "(missing)") for identity in identities]
        if len(set(values)) > 1:
            shown = ", ".join(
                f"rank {rank} {_short(value)}"
                for rank, value in enumerate(values)
                if rank == 0 or value != values[0]
            )
            lines.append(f"{key}: {shown}")
    return lines


def _short(value: str) -> str:
    return value if len(value) <= 24 else value[:12] + "..."


def check_same_run(context: DistContext | None, identity: dict[str, str]) -> None:
    """Raise ``RunMismatch`` on every rank when any rank's ``identity`` differs (a no-op alone)."""
    if context is None:
        return
    gathered: list[Any] = [None] * context.world
    dist.all_gather_object(gathered, identity)
    lines = differences(gathered)
    if lines:
        raise RunMismatch(
            "the nodes of this run disagree (every node must run the same command on the same data): "
            + "; ".join(lines)
        )
