"""Versions of a model: ``models/NAME/VERSION/`` (one bundle each) and a ``current`` pointer file.

Layout::

    models/deepfm/
        current                 the serving version's name (one line)
        20261201.040000/        a bundle (manifest.json, schema.json, encoder.json, model.onnx, ...)
        20261202.040000/

Every change is atomic for a reader: a version directory appears by one rename of a finished staging
directory, and ``current`` is replaced by one rename of a temp file, so a service reloading at any
moment sees the old state or the new one, never a mix. Versions are ordered by their manifest's
``created_at`` (then by name); the retrain names them by UTC time, so both orders agree.

A flat bundle (``models/NAME/manifest.json``, what ``apprank train --out models/NAME`` wrote before
versions existed) keeps loading as a model with one version, the one its manifest records. It is
converted to the versioned layout at its first publish or promote (``migrate_flat``).

No torch here: the service imports this module.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from model.bundle import MANIFEST, BundleError, read_manifest

CURRENT = "current"
DEFAULT_KEEP = 5
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class VersionError(BundleError):
    """A version operation cannot be done (unknown version, bad name, nothing to roll back to)."""


@dataclass(frozen=True)
class VersionEntry:
    """One stored version of a model."""

    version: str
    path: Path
    created_at: datetime


def check_version(version: str) -> str:
    """A version name: 1-64 letters, digits, ``_ . -`` (never ``current``, never a path)."""
    if not _VERSION.match(version) or version == CURRENT:
        raise VersionError(f"bad version name {version!r}: 1-64 letters, digits, '_', '.' or '-'")
    return version


def is_flat(model_dir: Path) -> bool:
    """Whether ``model_dir`` is a single flat bundle (the layout before versions)."""
    return (model_dir / MANIFEST).is_file()


def has_bundle(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a flat bundle or at least one version."""
    return is_flat(model_dir) or bool(list_versions(model_dir))


def list_versions(model_dir: Path) -> list[VersionEntry]:
    """The versions of the model at ``model_dir``, oldest first (a flat bundle is one version).

    A directory whose manifest cannot be read is left out here; loading it is what reports why.
    """
    if is_flat(model_dir):
        manifest = read_manifest(model_dir)
        return [VersionEntry(manifest.version, model_dir, manifest.created_at)]
    if not model_dir.is_dir():
        return []
    entries = []
    for path in model_dir.iterdir():
        if not path.is_dir() or not _VERSION.match(path.name) or not (path / MANIFEST).is_file():
            continue
        try:
            entries.append(VersionEntry(path.name, path, read_manifest(path).created_at))
        except BundleError:
            continue
    return sorted(entries, key=lambda e: (e.created_at, e.version))


def current_version(model_dir: Path) -> str | None:
    """The serving version: the pointer's, a flat bundle's own, or the newest when there is no pointer."""
    entries = list_versions(model_dir)
    if is_flat(model_dir):
        return entries[0].version
    pointer = model_dir / CURRENT
    if pointer.is_file():
        return pointer.read_text().strip() or None
    return entries[-1].version if entries else None


def version_path(model_dir: Path, version: str) -> Path:
    """Where ``version`` of the model at ``model_dir`` lies.

    Raises:
        VersionError: no such version.
    """
    for entry in list_versions(model_dir):
        if entry.version == version:
            return entry.path
    known = ", ".join(e.version for e in list_versions(model_dir)) or "none"
    raise VersionError(f"{model_dir.name}: no version {version!r} (versions: {known})")


def current_path(model_dir: Path) -> Path:
    """The serving version's bundle directory (raises VersionError when there is none)."""
    version = current_version(model_dir)
    if version is None:
        raise VersionError(f"{model_dir}: no bundle")
    return version_path(model_dir, version)


def _write_pointer(model_dir: Path, version: str) -> None:
    handle, temp = tempfile.mkstemp(prefix=".current.", dir=model_dir)
    with os.fdopen(handle, "w") as out:
        out.write(version + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, model_dir / CURRENT)


def migrate_flat(model_dir: Path) -> None:
    """Turn a flat bundle into the versioned layout (its version becomes the current one).

    The bundle moves into ``.NAME.migrate/VERSION`` beside it, the pointer is written there, and that
    directory is renamed to ``NAME``: between the two renames the model's directory is absent, which a
    reloading service treats as "keep serving what is loaded" for models that experiments use.
    """
    if not is_flat(model_dir):
        return
    version = check_version(read_manifest(model_dir).version)
    aside = model_dir.parent / f".{model_dir.name}.migrate"
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    os.replace(model_dir, aside / version)
    _write_pointer(aside, version)
    os.replace(aside, model_dir)


def set_current(model_dir: Path, version: str) -> str | None:
    """Point ``current`` at ``version``; returns the version it pointed at before.

    Raises:
        VersionError: no such version.
    """
    migrate_flat(model_dir)
    version_path(model_dir, check_version(version))
    before = current_version(model_dir)
    _write_pointer(model_dir, version)
    return before


def previous_version(model_dir: Path) -> str:
    """The version published before the current one (what a rollback goes back to).

    Raises:
        VersionError: the current version is the oldest kept.
    """
    versions = [e.version for e in list_versions(model_dir)]
    current = current_version(model_dir)
    if current not in versions or versions.index(current) == 0:
        raise VersionError(f"{model_dir.name}: no version before {current!r} to roll back to")
    return versions[versions.index(current) - 1]


def publish(
    model_dir: Path, staging: Path, version: str, keep: int = DEFAULT_KEEP, protect: Collection[str] = ()
) -> Path:
    """Move the finished bundle at ``staging`` in as ``version``, make it current, prune to ``keep``
    (never the versions in ``protect``: those that experiment arms pin).

    ``staging`` must be on the same filesystem as ``model_dir`` (the move is one rename).

    Raises:
        VersionError: ``version`` exists already or is a bad name.
    """
    check_version(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    migrate_flat(model_dir)
    target = model_dir / version
    if target.exists():
        raise VersionError(f"{model_dir.name}: version {version!r} exists already")
    os.replace(staging, target)
    _write_pointer(model_dir, version)
    prune(model_dir, keep, protect)
    return target


def prune(model_dir: Path, keep: int, protect: Collection[str] = ()) -> list[str]:
    """Delete the oldest versions beyond the newest ``keep``; the current one and those in ``protect``
    are never deleted."""
    if keep < 1:
        raise VersionError(f"keep must be at least 1, not {keep}")
    spared = {current_version(model_dir), *protect}
    entries = list_versions(model_dir)
    doomed = [e for e in entries[: max(0, len(entries) - keep)] if e.version not in spared]
    for entry in doomed:
        # renamed aside first: a reader never sees a half-deleted version
        aside = model_dir / f".{entry.version}.deleting"
        os.replace(entry.path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    return [e.version for e in doomed]
