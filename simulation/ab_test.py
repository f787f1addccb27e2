"""The simulated A/B test: users of the synthetic world visit the store, see ranked lists, download.

Every simulated day a share of the users visits, each visit being one or more page views in one
context (hour, weekday, network). A page view asks ``POST /rank`` to order ``candidates`` apps (drawn
as the store would, without the apps the user already downloaded), shows the top ``list_size``, and
downloads each shown app with its TRUE probability (``AppStoreWorld.true_probability``). Impressions
and downloads go to ``POST /events``. Everything random is drawn from generators seeded by
(seed, day, user), so a run is reproducible whatever the concurrency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from simulation.eventpost import EventPoster, EventTime, PostStats
from simulation.listmetrics import LIST_SIZES, ServedLists, download_shares
from simulation.storefront import Storefront

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
IntArray = npt.NDArray[np.int64]
DAY_S = 86_400


class SimulationError(RuntimeError):
    """The service refused a /rank request or could not be reached."""


@dataclass(frozen=True)
class SimulationConfig:
    """The scenario.

    Attributes:
        users: distinct users taking part (drawn from the world's users).
        days: simulated days; day d is the UTC date ``first_day + d``.
        visit_share: probability that a user visits on a given day.
        views_per_visit: mean page views per visit (1 + Poisson(mean - 1)).
        candidates: apps per /rank request; ``list_size``: the top apps shown (and logged).
        keep: ranked apps kept per page view for the list metrics (at least ``list_size``).
        first_day: the first simulated UTC date (default: ``days`` days ago, so the last is yesterday).
    """

    users: int = 2000
    days: int = 7
    seed: int = 7
    visit_share: float = 0.5
    views_per_visit: float = 2.0
    candidates: int = 100
    list_size: int = 10
    keep: int = max(LIST_SIZES)
    experiment: str = "deepfm-vs-lr"
    concurrency: int = 16
    batch_size: int = 500
    event_time: EventTime = EventTime.AUTO
    first_day: date | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.visit_share <= 1.0:
            raise ValueError(f"visit_share must be in (0, 1], got {self.visit_share}")
        if self.views_per_visit < 1.0:
            raise ValueError(f"views_per_visit must be at least 1, got {self.views_per_visit}")
        if not 1 <= self.list_size <= self.candidates:
            raise ValueError("list_size must be between 1 and the number of candidates")
        if self.users < 1 or self.days < 1 or self.concurrency < 1:
            raise ValueError("users, days and concurrency must be positive")

    def start_date(self) -> date:
        """The UTC date of simulated day 0."""
        return self.first_day or datetime.now(UTC).date() - timedelta(days=self.days)


@dataclass(frozen=True)
class Visit:
    """One user's visit on one day: how many page views, in which context, from which time."""

    user: int
    day: int
    views: int
    context: dict[str, str]
    start_ts: float


@dataclass
class ViewLog:
    """What the client saw, one entry per page view (kept client-side for the list metrics)."""

    users: list[int] = field(default_factory=list)
    days: list[int] = field(default_factory=list)
    arms: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    lists: list[IntArray] = field(default_factory=list)
    true_ctr_sum: list[float] = field(default_factory=list)
    downloads: list[int] = field(default_factory=list)
    downloaded_apps: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SimulationResult:
    """A finished simulation: the scenario, the client-side log and what /events said."""

    config: SimulationConfig
    log: ViewLog
    posted: PostStats
    event_time: EventTime
    catalog_size: int

    def served_lists(self) -> ServedLists:
        """The served lists and download histories, for ``simulation.listmetrics``."""
        users = np.asarray(self.log.users, dtype=np.int64)
        size = int(users.max()) + 1 if users.size else 0
        downloaded = np.asarray(self.log.downloaded_apps, dtype=np.int64)
        per_user = np.bincount(users, weights=np.asarray(self.log.downloads), minlength=size)
        return ServedLists(
            lists=_as_matrix(self.log.lists),
            users=users,
            arms=np.asarray(self.log.arms, dtype=str),
            user_downloads=per_user.astype(np.int64),
            app_popularity=download_shares(downloaded, self.catalog_size),
        )


def _as_matrix(lists: list[IntArray]) -> IntArray:
    """Ranked lists as one ``[V, K]`` matrix, cut to the shortest list (candidates may run short)."""
    if not lists:
        return np.zeros((0, 0), dtype=np.int64)
    width = min(row.size for row in lists)
    return np.stack([row[:width] for row in lists]).astype(np.int64)


def plan_day(config: SimulationConfig, population: IntArray, day: int, store: Storefront) -> list[Visit]:
    """The visits of simulated day ``day`` (who visits, how many views, context and time of day)."""
    rng = np.random.default_rng([config.seed, 1, day])
    date_ = config.start_date() + timedelta(days=day)
    visitors = population[rng.random(population.size) < config.visit_share]
    views = 1 + rng.poisson(config.views_per_visit - 1.0, visitors.size)
    # The calendar date's weekday drives the context (the world's day 0 is a Monday, as date.weekday()).
    context = store.world.sample_context(visitors.size, rng, day=date_.weekday())
    midnight = datetime(date_.year, date_.month, date_.day, tzinfo=UTC).timestamp()
    minutes = rng.integers(0, 50, visitors.size)
    return [
        Visit(
            user=int(user),
            day=day,
            views=int(views[i]),
            context={name: str(values[i]) for name, values in context.items()},
            start_ts=midnight + int(context["hour"][i]) * 3600 + int(minutes[i]) * 60,
        )
        for i, user in enumerate(visitors)
    ]


class Simulation:
    """Runs a ``SimulationConfig`` against a service over HTTP (see the module docstring)."""

    def __init__(self, store: Storefront, config: SimulationConfig) -> None:
        if config.users > store.num_users:
            raise ValueError(f"the world has {store.num_users} users, fewer than {config.users}")
        self.store = store
        self.config = config
        self.log = ViewLog()
        self._installed: dict[int, set[int]] = {}
        rng = np.random.default_rng([config.seed, 0])
        self.population = np.sort(rng.choice(store.num_users, config.users, replace=False)).astype(np.int64)

    async def run(
        self,
        client: httpx.AsyncClient,
        on_day: Callable[[int, int], None] | None = None,
        after_day: Callable[[int], Awaitable[None] | None] | None = None,
    ) -> SimulationResult:
        """Simulate every day in turn; ``on_day(day, page views so far)`` after each.

        ``after_day(day)`` is called once a day's events are posted; an awaitable it returns (a
        retrain, say) runs while the next day is simulated, and is awaited before the day after it.
        """
        poster = EventPoster(client, self.config.batch_size, self.config.event_time)
        beside: asyncio.Future[None] | None = None
        for day in range(self.config.days):
            visits = iter(plan_day(self.config, self.population, day, self.store))
            workers = [self._worker(client, poster, visits) for _ in range(self.config.concurrency)]
            await asyncio.gather(*workers)
            await poster.flush()
            if on_day is not None:
                on_day(day, len(self.log.users))
            if beside is not None:
                await beside
                beside = None
            job = after_day(day) if after_day is not None else None
            if job is not None:
                beside = asyncio.ensure_future(job)
        if beside is not None:
            await beside
        mode = poster.mode if poster.mode is not EventTime.AUTO else EventTime.SIMULATED
        return SimulationResult(self.config, self.log, poster.stats, mode, self.store.num_apps)

    async def _worker(self, client: httpx.AsyncClient, poster: EventPoster, visits: Iterator[Visit]) -> None:
        for visit in visits:
            rng = np.random.default_rng([self.config.seed, 2, visit.day, visit.user])
            for view in range(visit.views):
                events = await self._page_view(client, visit, view, rng)
                await poster.add(events)

    async def _page_view(
        self, client: httpx.AsyncClient, visit: Visit, view: int, rng: np.random.Generator
    ) -> list[dict[str, Any]]:
        """One /rank call, the user's reaction, and the events to post."""
        installed = self._installed.setdefault(visit.user, set())
        candidates = self.store.candidates(self.config.candidates, rng, installed)
        top_k = max(self.config.keep, self.config.list_size)
        body = self.store.body(
            visit.user, visit.context, candidates, top_k=top_k, experiment=self.config.experiment
        )
        served = await self._rank(client, body)
        ranked = self.store.app_index([item["app_id"] for item in served["items"]])
        shown = ranked[: self.config.list_size]
        truth = self.store.world.true_probability(visit.user, visit.context, shown)
        downloaded = rng.random(shown.size) < truth
        installed.update(int(a) for a in shown[downloaded])
        self._record(visit, served, ranked, float(truth.sum()), shown[downloaded])
        return self._events(
            served["request_id"], body["user_id"], visit.start_ts + 30 * view, shown, downloaded
        )

    async def _rank(self, client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
        response = await client.post(
            "/rank", content=orjson.dumps(body), headers={"content-type": "application/json"}
        )
        if response.status_code != 200:
            raise SimulationError(f"POST /rank answered {response.status_code}: {response.text[:500]}")
        served: dict[str, Any] = orjson.loads(response.content)
        return served

    def _record(
        self, visit: Visit, served: dict[str, Any], ranked: IntArray, truth_sum: float, got: IntArray
    ) -> None:
        self.log.users.append(visit.user)
        self.log.days.append(visit.day)
        self.log.arms.append(served["arm"])
        self.log.versions.append(str(served.get("version", "")))
        self.log.lists.append(ranked[: self.config.keep])
        self.log.true_ctr_sum.append(truth_sum)
        self.log.downloads.append(int(got.size))
        self.log.downloaded_apps.extend(int(a) for a in got)

    def _events(
        self, request_id: str, user_id: str, ts: float, shown: IntArray, downloaded: npt.NDArray[np.bool_]
    ) -> list[dict[str, Any]]:
        """Impressions of the shown apps at ``ts``, downloads a few seconds later."""
        app_ids = self.store.world.app_ids

        def event(kind: str, app: int, at: float) -> dict[str, Any]:
            app_id = str(app_ids[app])
            return {
                "event_id": f"{request_id}:{app_id}:{kind[0]}",
                "type": kind,
                "request_id": request_id,
                "app_id": app_id,
                "user_id": user_id,
                "ts": at,
            }

        events = [event("impression", app, ts) for app in shown.tolist()]
        got = shown[downloaded].tolist()
        return events + [event("download", app, ts + 5.0 + i) for i, app in enumerate(got)]
