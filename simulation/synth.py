"""A synthetic app store with a known ground-truth download probability.

Users (gender, age band, country, device, installed app categories), apps (category, developer,
language, price, rating, size) and request context (hour, weekday, network) are drawn once from a seed.
The probability that a user downloads an app shown in a context is ``sigmoid(logit)`` with

* first-order effects: user propensity, app quality and rating, category, hour, network, price;
* second-order interactions: category x hour (food delivery at meal times, news in the morning),
  device x size and network x size (big downloads on budget phones or 3G), country x price (price
  sensitivity), country x app language, installed categories x category, and random gender, age band,
  device and country x category tables;
* third-order interactions: gender x age band x category (teenage boys and shooting games) and
  weekday x hour x category (productivity apps during office hours);
* a low-rank user x app affinity (latent vectors);

and a bias calibrated so that logged impressions have the configured CTR. ``true_probability`` is the
oracle that later stages (the online simulation) compare models against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from model.columns import as_category_strings
from model.schema import FeatureSchema
from simulation.world import (
    AGE_BANDS,
    CATEGORIES,
    COUNTRIES,
    DEVICE_SIZE_PENALTY,
    DEVICES,
    GENDERS,
    HOUR_WEIGHTS,
    LANGUAGES,
    NETWORK_BASE,
    NETWORK_SIZE_PENALTY,
    NETWORK_WEIGHTS,
    NETWORKS,
    PRICE_SENSITIVITY,
    SEPARATOR,
    WEEKDAYS,
    FloatArray,
    IntArray,
    StrArray,
    SynthConfig,
    _make_apps,
    _make_effects,
    _make_users,
    _top_k,
)
from training.readers.base import Chunk

logger = logging.getLogger(__name__)

__all__ = ["CATEGORIES", "AppStoreWorld", "SynthConfig", "synth_schema"]


def _spec(name: str, source: str, kind: str = "categorical", **settings: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "source": source, **settings}


def synth_schema() -> FeatureSchema:
    """The schema of the synthetic store's rows."""
    fields = [
        *(_spec(name, "user") for name in ("user_id", "gender", "age_band", "country", "device")),
        _spec("installed_categories", "user", "multi", separator=SEPARATOR, max_len=8),
        *(_spec(name, "context") for name in ("hour", "weekday", "network")),
        *(_spec(name, "item") for name in ("app_id", "category", "developer", "language")),
        _spec("price", "item", "numeric", transform="log"),
        _spec("rating", "item", "numeric", transform="standardize"),
        _spec("size_mb", "item", "numeric", transform="quantile_bucket", num_buckets=16),
    ]
    schema = {
        "name": "synthetic_appstore",
        "fields": fields,
        "user_id_field": "user_id",
        "item_id_field": "app_id",
    }
    return FeatureSchema.model_validate(schema)


def _codes(values: npt.ArrayLike, names: tuple[str, ...], field: str) -> IntArray:
    """Codes of raw categorical values (strings or, for ``hour``, numbers)."""
    text = as_category_strings(np.asarray(values).reshape(-1))
    table = np.asarray(names)
    order = np.argsort(table)
    position = np.minimum(np.searchsorted(table[order], text), table.size - 1)
    known = table[order][position] == text
    if not known.all():
        raise ValueError(f"{field}: unknown value {str(text[np.argmin(known)])!r}")
    return order[position].astype(np.int64)


class AppStoreWorld:
    """The synthetic store: its users, apps, context distribution and true download probability."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        self._effects = _make_effects(rng)
        self._users = _make_users(config, self._effects, rng)
        self._apps = _make_apps(config, rng)
        self.schema = synth_schema()
        self.user_ids = np.asarray(
            [f"u{i:0{len(str(config.num_users - 1))}d}" for i in range(config.num_users)]
        )
        self.app_ids = np.asarray([f"a{i:0{len(str(config.num_apps - 1))}d}" for i in range(config.num_apps)])
        self._developer_ids = np.asarray([f"dev{i:03d}" for i in range(config.num_developers)])
        self._bias = 0.0
        self._bias = self._calibrate(np.random.default_rng([config.seed, 1]))

    def _calibrate(self, rng: np.random.Generator, rows: int = 50_000) -> float:
        """The bias that gives logged impressions a mean probability of ``target_ctr`` (bisection)."""
        users, context, apps = self._draw(rows, rng)
        logits = self._logit(users, context, apps)
        low, high = -20.0, 20.0
        for _ in range(60):
            middle = (low + high) / 2
            if float(np.mean(1.0 / (1.0 + np.exp(-(logits + middle))))) < self.config.target_ctr:
                low = middle
            else:
                high = middle
        logger.debug("synthetic store: bias %.3f for a CTR of %.3f", low, self.config.target_ctr)
        return (low + high) / 2

    def user_features(self, user_ids: npt.ArrayLike) -> dict[str, npt.NDArray[Any]]:
        """Raw user columns (``user_id``, gender, age band, country, device, installed categories)."""
        u = self._user_index(user_ids)
        users = self._users
        return {
            "user_id": self.user_ids[u],
            "gender": np.asarray(GENDERS)[users.gender[u]],
            "age_band": np.asarray(AGE_BANDS)[users.age[u]],
            "country": np.asarray(COUNTRIES)[users.country[u]],
            "device": np.asarray(DEVICES)[users.device[u]],
            "installed_categories": users.installed_text[u],
        }

    def app_features(self, app_ids: npt.ArrayLike) -> dict[str, npt.NDArray[Any]]:
        """Raw app columns (``app_id``, category, developer, language, price, rating, size_mb)."""
        a = self._app_index(app_ids)
        apps = self._apps
        return {
            "app_id": self.app_ids[a],
            "category": np.asarray(CATEGORIES)[apps.category[a]],
            "developer": self._developer_ids[apps.developer[a]],
            "language": np.asarray(LANGUAGES)[apps.language[a]],
            "price": apps.price[a],
            "rating": apps.rating[a],
            "size_mb": apps.size_mb[a],
        }

    def sample_context(self, n: int, rng: np.random.Generator, day: int | None = None) -> dict[str, StrArray]:
        """Raw context columns of ``n`` requests: hour (store traffic curve), weekday, network.

        Args:
            day: the day of every request (weekday ``day % 7``, day 0 a Monday); None draws a day per
                request from ``config.days``.
        """
        days = rng.integers(0, self.config.days, n) if day is None else np.full(n, day)
        hours = rng.choice(24, n, p=np.asarray(HOUR_WEIGHTS) / sum(HOUR_WEIGHTS))
        networks = rng.choice(len(NETWORKS), n, p=NETWORK_WEIGHTS)
        return {
            "hour": hours.astype(str),
            "weekday": np.asarray(WEEKDAYS)[days % 7],
            "network": np.asarray(NETWORKS)[networks],
        }

    def true_probability(
        self, user_ids: npt.ArrayLike, context: Mapping[str, npt.ArrayLike], app_ids: npt.ArrayLike
    ) -> FloatArray:
        """The ground-truth download probability of each aligned (user, context, app) row.

        Args:
            user_ids, app_ids: indices (integers) or ids (``u0042``, ``a017``).
            context: raw ``hour``, ``weekday`` and ``network`` columns (one value broadcasts).
        """
        users, apps = self._user_index(user_ids), self._app_index(app_ids)
        codes = tuple(
            _codes(context[field], names, field)
            for field, names in (
                ("hour", tuple(map(str, range(24)))),
                ("weekday", WEEKDAYS),
                ("network", NETWORKS),
            )
        )
        rows = max(users.size, apps.size, *(c.size for c in codes))
        users, apps = np.broadcast_to(users, rows), np.broadcast_to(apps, rows)
        hour, weekday, network = (np.broadcast_to(c, rows) for c in codes)
        logits = self._logit(users, (hour, weekday, network), apps) + self._bias
        probability: FloatArray = 1.0 / (1.0 + np.exp(-logits))
        return probability

    def _logit(self, u: IntArray, context: tuple[IntArray, IntArray, IntArray], a: IntArray) -> FloatArray:
        """Everything but the bias (see the module docstring)."""
        users, apps, effects = self._users, self._apps, self._effects
        hour, weekday, network = context
        c, gender, age, device, country = (
            apps.category[a],
            users.gender[u],
            users.age[u],
            users.device[u],
            users.country[u],
        )
        log_price = np.log1p(apps.price[a])
        first = (
            users.bias[u] + apps.quality[a] + 0.4 * (apps.rating[a] - 4.0) + effects.category[c]
            + effects.hour[hour] + np.asarray(NETWORK_BASE)[network] - 0.3 * log_price
        )  # fmt: skip
        size_penalty = np.asarray(DEVICE_SIZE_PENALTY)[device] + np.asarray(NETWORK_SIZE_PENALTY)[network]
        second = (
            effects.category_hour[c, hour] - apps.size_mb[a] / 1000.0 * size_penalty
            - np.asarray(PRICE_SENSITIVITY)[country] * log_price
            + effects.country_language[country, apps.language[a]] + 0.7 * users.installed[u, c]
            + effects.gender_category[gender, c] + effects.age_category[age, c]
            + effects.device_category[device, c] + effects.country_category[country, c]
        )  # fmt: skip
        third = effects.gender_age_category[gender, age, c] + effects.weekday_hour_category[weekday, hour, c]
        affinity = np.einsum("ij,ij->i", users.latent[u], apps.latent[a]) / np.sqrt(self.config.latent_dim)
        strength = self.config.interaction_strength
        out: FloatArray = first + strength * (second + third) + self.config.affinity_strength * affinity
        return out

    def candidates(self, n: int, rng: np.random.Generator) -> IntArray:
        """``n`` distinct app indices a store would rank for one page view (popular apps more often)."""
        shown: IntArray = _top_k(self._apps.log_popularity, 1, n, rng)[0]
        return shown

    def _draw(
        self, n: int, rng: np.random.Generator
    ) -> tuple[IntArray, tuple[IntArray, IntArray, IntArray], IntArray]:
        """(users, context codes, apps) of ``n`` logged impressions, in page views of shared context."""
        per_view = self.config.impressions_per_view
        views = -(-n // per_view)
        viewers = rng.choice(self.config.num_users, views, p=self._users.activity)
        days = rng.integers(0, self.config.days, views)
        hours = rng.choice(24, views, p=np.asarray(HOUR_WEIGHTS) / sum(HOUR_WEIGHTS))
        networks = rng.choice(len(NETWORKS), views, p=NETWORK_WEIGHTS)
        shown = np.concatenate(
            [_top_k(self._apps.log_popularity, block, per_view, rng) for block in _blocks(views)]
        )
        repeat = np.repeat(np.arange(views), per_view)[:n]
        context = (hours[repeat], (days % 7)[repeat], networks[repeat])
        return viewers[repeat], context, shown.reshape(-1)[:n]

    def sample_impressions(self, n: int, rng: np.random.Generator) -> Chunk:
        """``n`` logged impressions (page views of ``impressions_per_view`` apps), labels from the truth."""
        users, (hour, weekday, network), apps = self._draw(n, rng)
        probability = 1.0 / (1.0 + np.exp(-(self._logit(users, (hour, weekday, network), apps) + self._bias)))
        labels = (rng.random(n) < probability).astype(np.float32)
        context = {
            "hour": hour.astype(str),
            "weekday": np.asarray(WEEKDAYS)[weekday],
            "network": np.asarray(NETWORKS)[network],
        }
        columns = {**self.user_features(users), **context, **self.app_features(apps)}
        return Chunk({name: columns[name] for name in self.schema.names}, labels, 1)

    def request_dict(
        self, user_id: Any, context_row: Mapping[str, Any], app_ids: npt.ArrayLike
    ) -> dict[str, Any]:
        """A JSON-ready ``POST /rank`` body: user_id, user and context features, candidates with features.

        Feature values are JSON scalars, as the service accepts them: the installed categories are one
        ``|``-separated string, exactly as in the training files.
        """
        user = self.user_features([user_id])
        features = {name: _json(values[0]) for name, values in user.items() if name != "user_id"}
        context = {
            name: str(as_category_strings(np.asarray(context_row[name]).reshape(-1))[0])
            for name in ("hour", "weekday", "network")
        }
        apps = self.app_features(app_ids)
        candidates = [
            {
                "app_id": str(app_id),
                "features": {name: _json(values[i]) for name, values in apps.items() if name != "app_id"},
            }
            for i, app_id in enumerate(apps["app_id"].tolist())
        ]
        return {
            "user_id": str(user["user_id"][0]),
            "user": features,
            "context": context,
            "candidates": candidates,
        }

    def _user_index(self, ids: npt.ArrayLike) -> IntArray:
        return _ids_to_index(ids, self.user_ids, "user_id")

    def _app_index(self, ids: npt.ArrayLike) -> IntArray:
        return _ids_to_index(ids, self.app_ids, "app_id")


def _blocks(total: int, size: int = 8192) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _json(value: Any) -> Any:
    """A numpy scalar as a JSON value (NaN -> None)."""
    item = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(item, float) and np.isnan(item) else item


def _ids_to_index(ids: npt.ArrayLike, names: StrArray, field: str) -> IntArray:
    """Indices from integer indices or from id strings (``names`` is sorted: ids are zero-padded)."""
    array = np.asarray(ids).reshape(-1)
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() >= names.size):
            raise ValueError(f"{field}: index out of range [0, {names.size})")
        return array.astype(np.int64)
    text = as_category_strings(array)
    position = np.minimum(np.searchsorted(names, text), names.size - 1)
    known = names[position] == text
    if not known.all():
        raise ValueError(f"{field}: unknown id {str(text[np.argmin(known)])!r}")
    return position.astype(np.int64)
