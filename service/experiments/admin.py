"""Changing experiments: validation against the loaded models and the stored state, then the store."""

from __future__ import annotations

from datetime import UTC, datetime

from service.errors import RequestError
from service.experiments.models import Experiment, ExperimentSpec, check_name
from service.experiments.router import allocate, targets_of
from service.experiments.store import ExperimentStore
from service.experiments.sync import StoreSync
from service.rank.registry import ModelRegistry, split_ref


class ExperimentAdmin:
    """Creates, updates and deletes experiments; every change is audited with the token's name."""

    def __init__(self, store: ExperimentStore, registry: ModelRegistry, sync: StoreSync) -> None:
        self.store = store
        self.registry = registry
        self.sync = sync

    def put(self, name: str, spec: ExperimentSpec, actor: str) -> tuple[Experiment, bool]:
        """Create or update ``name``; returns the stored experiment and whether it was created.

        Raises:
            RequestError: a bad name, an arm naming a model that is not loaded (422), or a salt change
                while the experiment runs (409).
        """
        try:
            check_name(name, "experiment name")
        except ValueError as error:
            raise RequestError.at(("path", "name"), str(error)) from None
        for index, arm in enumerate(spec.arms):
            if self.registry.get(arm.model) is None:
                raise RequestError.at(("body", "arms", index, "model"), *self._unknown(arm.model))
        experiment, created = self.store.save(name, actor, lambda before: _next(name, spec, before))
        self.sync.refresh_experiments()
        return experiment, created

    def _unknown(self, ref: str) -> tuple[str, str]:
        """Why ``ref`` (``name`` or a pinned ``name@version``) cannot serve, and the error type."""
        name, version = split_ref(ref)
        if version is not None and name in self.registry.models:
            versions = ", ".join(sorted(self.registry.versions.get(name, {}))) or "none"
            return f"model {name!r} has no loaded version {version!r} (loaded: {versions})", "unknown_version"
        loaded = ", ".join(sorted(self.registry.models)) or "none"
        return f"no loaded model named {name!r} (loaded: {loaded})", "unknown_model"

    def delete(self, name: str, actor: str) -> Experiment | None:
        """Delete ``name``; None when there was no such experiment."""
        deleted = self.store.delete(name, actor)
        self.sync.refresh_experiments()
        return deleted


def _next(name: str, spec: ExperimentSpec, before: Experiment | None) -> Experiment:
    """The stored form of ``spec``: salt rule, minimal-move allocation, version and times."""
    now = datetime.now(UTC)
    salt = spec.salt or (before.salt if before is not None else name)
    if before is not None and salt != before.salt and before.running:
        msg = f"cannot change the salt of running experiment {name!r}: stop it (running=false) first"
        raise RequestError.at(("body", "salt"), msg, "salt_fixed", status=409)
    keep = before is not None and salt == before.salt
    allocation = allocate(
        targets_of((arm.name, arm.weight) for arm in spec.arms),
        before.allocation if keep and before else None,
    )
    return Experiment(
        **spec.model_dump(exclude={"salt", "default_arm"}),
        name=name,
        salt=salt,
        default_arm=spec.default_arm or spec.control,
        allocation=allocation,
        version=1 if before is None else before.version + 1,
        created_at=now if before is None else before.created_at,
        updated_at=now,
    )
