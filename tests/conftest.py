"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from apprank.bootstrap import BootstrapConfig, BootstrapResult, bootstrap

if TYPE_CHECKING:
    from tests.exported import ExportedFamily

REPO = Path(__file__).resolve().parent.parent
_T = TypeVar("_T")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def data_root() -> Path:
    """The real datasets, never copied here: $APPRANK_DATA_DIR, else ``../shared/data`` beside the checkout
    (or beside a folder above it: a git worktree or a CI clone may live deeper)."""
    if "APPRANK_DATA_DIR" in os.environ:
        return Path(os.environ["APPRANK_DATA_DIR"])
    candidates = [parent / "shared" / "data" for parent in REPO.parents]
    return next((path for path in candidates if (path / "README.md").is_file()), candidates[0])


def wait_until(condition: Callable[[], _T | None], timeout: float, what: str, interval: float = 0.05) -> _T:
    """Poll ``condition`` until it returns something truthy (returned); fail when an attempt that began
    ``timeout`` seconds or more after the first one still finds nothing (a slow check is not cut short)."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        value = condition()
        if value:
            return value
        if started >= deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(interval)


def require(condition: bool, what: str) -> None:
    """Skip when a needed service or file is missing; fail instead when running in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but missing")
    pytest.skip(f"{what} missing")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    require((root / "frappe_ctr" / "train.csv").is_file(), f"the shared datasets at {root}")
    return root


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL (127.0.0.1:5432, database test, trust auth) or $APPRANK_TEST_POSTGRES_URL."""
    url = os.environ.get("APPRANK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
        reachable = True
    except Exception:  # noqa: BLE001 - any failure means the server is not usable
        reachable = False
    require(reachable, f"PostgreSQL at {url}")
    return url


TINY_TRAINING: dict[str, tuple[str, ...]] = {
    "lr": ("epochs=1", "batch_size=512", "threads=1"),
    "deepfm": ("epochs=1", "batch_size=512", "hidden_units=[16]", "embedding_dim=4", "threads=1"),
}


def tiny_config(root: Path) -> BootstrapConfig:
    """A store of 300 users and 120 apps, 4,000 impressions, models trained for 1 epoch."""
    return BootstrapConfig(
        models_dir=root / "models",
        data_dir=root / "data",
        experiments_file=root / "experiments.json",
        rows=4000,
        num_users=300,
        num_apps=120,
        train_sets=dict(TINY_TRAINING),
    )


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> BootstrapResult:
    """The tiny store, bootstrapped once per session (the orchestration and simulation tests share it)."""
    return bootstrap(tiny_config(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="session")
def exported_family(tmp_path_factory: pytest.TempPathFactory) -> ExportedFamily:
    """One exported bundle per registered model (``tests/exported.py``), each made on first use, shared."""
    pytest.importorskip("torch")  # exporting needs the training dependencies
    from tests.exported import ExportedFamily

    return ExportedFamily.create(tmp_path_factory.mktemp("exported-family"))
