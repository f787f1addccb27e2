"""Keeps every worker in step with the store: experiments and model reloads within a second.

A daemon thread polls the store's change counters every ``interval`` seconds (one tiny query, off the
request path). A changed ``experiments`` counter reloads the router's table; a changed ``models``
counter (a reload, promote, rollback or retrain publish anywhere) reloads the bundles. The same
thread flushes the per-feature counters and the model-age and retrain gauges into Prometheus.
"""

from __future__ import annotations

import logging
import threading

from service.experiments.router import Router
from service.experiments.store import EXPERIMENTS, MODELS, ExperimentStore
from service.metrics import EXPERIMENT_WEIGHT
from service.rank.registry import ModelRegistry, ReloadReport

log = logging.getLogger(__name__)


class StoreSync:
    """Polls ``store`` and applies changes to ``router`` and ``registry``."""

    def __init__(
        self, store: ExperimentStore, router: Router, registry: ModelRegistry, interval_s: float
    ) -> None:
        self.store = store
        self.router = router
        self.registry = registry
        self.interval_s = interval_s
        self.store_ok = False
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def refresh_experiments(self) -> None:
        """Load every experiment from the store into the router, and publish the weights."""
        with self._lock:
            experiments = self.store.experiments()
            self.router.replace(experiments)
        for experiment in experiments:
            for arm in experiment.arms:
                EXPERIMENT_WEIGHT.labels(experiment.name, arm.name).set(arm.weight)

    def reload_models(self) -> ReloadReport:
        """Reload bundles, keeping the models (and pinned versions) that stored experiments use."""
        keep = {arm.model for e in self.router.experiments.values() for arm in e.arms}
        return self.registry.reload(keep)

    def poll_once(self) -> None:
        """One poll: apply what changed since the last one."""
        try:
            generations = self.store.generations()
        except Exception:  # noqa: BLE001 - a store outage must not kill the thread; readyz reports it
            if self.store_ok:
                log.exception("experiment store unreachable")
            self.store_ok = False
            return
        self.store_ok = True
        if generations.get(EXPERIMENTS) != self._seen.get(EXPERIMENTS):
            self.refresh_experiments()
        if MODELS in self._seen and generations.get(MODELS) != self._seen.get(MODELS):
            report = self.reload_models()
            log.info("models reloaded on request of another worker: %s", report)
        self._seen = generations
        for model in self.registry.models.values():
            model.encoder.flush_metrics()
        self.registry.refresh_gauges()

    def start(self) -> None:
        """Poll once now, then in a daemon thread."""
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="apprank-store-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                log.exception("store sync failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for model in self.registry.models.values():
            model.encoder.flush_metrics()
