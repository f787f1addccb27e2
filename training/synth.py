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
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from model.columns import as_category_strings
from model.schema import FeatureSchema
from training.readers.base import Chunk

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
StrArray = npt.NDArray[np.str_]

CATEGORIES = (
    "shooter_games", "puzzle_games", "casual_games", "racing_games", "social", "messaging",
    "food_delivery", "music", "video", "productivity", "education", "finance", "health_fitness",
    "travel", "shopping", "news",
)  # fmt: skip
GENDERS, GENDER_WEIGHTS = ("f", "m", "x"), (0.48, 0.48, 0.04)
AGE_BANDS, AGE_WEIGHTS = (
    ("13-17", "18-24", "25-34", "35-44", "45-54", "55+"),
    (0.1, 0.22, 0.25, 0.18, 0.13, 0.12),
)
COUNTRIES = ("us", "gb", "de", "fr", "es", "br", "in", "jp", "mx", "kr")
COUNTRY_WEIGHTS = (0.22, 0.08, 0.08, 0.07, 0.06, 0.12, 0.17, 0.08, 0.07, 0.05)
LANGUAGES = ("en", "de", "fr", "es", "pt", "hi", "ja", "ko")
COUNTRY_LANGUAGE = (0, 0, 1, 2, 3, 4, 5, 6, 3, 7)  # index into LANGUAGES
PRICE_SENSITIVITY = (0.2, 0.3, 0.3, 0.4, 0.6, 1.2, 1.6, 0.1, 1.0, 0.3)  # per country, per log1p($)
DEVICES = ("android_budget", "android_flagship", "iphone", "tablet")
DEVICE_BY_RICH = ((0.2, 0.3, 0.4, 0.1), (0.55, 0.25, 0.12, 0.08))  # rich vs price-sensitive countries
DEVICE_SIZE_PENALTY = (1.6, 0.3, 0.4, 0.2)  # per GB
NETWORKS, NETWORK_WEIGHTS = ("wifi", "5g", "4g", "3g"), (0.55, 0.1, 0.27, 0.08)
NETWORK_BASE, NETWORK_SIZE_PENALTY = (0.1, 0.05, 0.0, -0.2), (0.0, 0.3, 0.9, 2.2)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOUR_WEIGHTS = (
    1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.2, 2.8, 2.6, 2.4, 2.6,
    3.2, 3.0, 2.4, 2.3, 2.5, 2.9, 3.4, 3.9, 4.2, 4.0, 3.1, 1.9,
)  # fmt: skip
SIZE_MEDIAN_MB = (420, 90, 70, 380, 80, 60, 45, 70, 90, 40, 60, 35, 55, 50, 45, 30)  # per category
PRICES = (0.99, 1.99, 2.99, 4.99, 9.99)
SEPARATOR = "|"


def _index(names: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


CAT = _index(CATEGORIES)


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic store; the same config always builds the same world.

    Attributes:
        seed: drives the world (users, apps, effects); sampling takes its own generator.
        num_users, num_apps, num_developers: population sizes.
        latent_dim: rank of the user x app affinity.
        target_ctr: mean download probability of logged impressions (the bias is calibrated to it).
        interaction_strength: multiplies every second- and third-order effect (0 = first order only).
        affinity_strength: standard deviation of the user x app affinity term (in logits).
        days: impressions are spread over this many days (day d is weekday d % 7, day 0 a Monday).
        impressions_per_view: apps shown per page view; the rows of a view share user and context.
        popularity_skew: how strongly the store's candidate sampling favours popular apps.
        max_installed: a user has 1 to this many installed app categories.
    """

    seed: int = 7
    num_users: int = 5000
    num_apps: int = 500
    num_developers: int = 150
    latent_dim: int = 8
    target_ctr: float = 0.08
    interaction_strength: float = 1.0
    affinity_strength: float = 0.8
    days: int = 28
    impressions_per_view: int = 10
    popularity_skew: float = 1.0
    max_installed: int = 6

    def __post_init__(self) -> None:
        if self.num_users < 1 or self.num_apps < 2 or self.num_developers < 1:
            raise ValueError("need at least 1 user, 2 apps and 1 developer")
        if not 0.0 < self.target_ctr < 1.0:
            raise ValueError(f"target_ctr must be in (0, 1), got {self.target_ctr}")
        if not 1 <= self.impressions_per_view <= self.num_apps:
            raise ValueError("impressions_per_view must be between 1 and num_apps")


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


@dataclass(frozen=True)
class _Effects:
    """Ground-truth effect tables, indexed by the codes of the fields they combine."""

    category: FloatArray  # [C]
    hour: FloatArray  # [24]
    category_hour: FloatArray  # [C, 24]
    weekday_hour_category: FloatArray  # [7, 24, C]
    gender_category: FloatArray  # [G, C]
    age_category: FloatArray  # [A, C]
    gender_age_category: FloatArray  # [G, A, C]
    device_category: FloatArray  # [D, C]
    country_category: FloatArray  # [K, C]
    country_language: FloatArray  # [K, L]


@dataclass(frozen=True)
class _Users:
    gender: IntArray
    age: IntArray
    country: IntArray
    device: IntArray
    installed: npt.NDArray[np.bool_]  # [U, C]
    installed_text: StrArray
    bias: FloatArray
    activity: FloatArray  # sampling probabilities of page views
    latent: FloatArray  # [U, k]


@dataclass(frozen=True)
class _Apps:
    category: IntArray
    developer: IntArray
    language: IntArray
    price: FloatArray
    rating: FloatArray
    size_mb: FloatArray
    quality: FloatArray
    log_popularity: FloatArray
    latent: FloatArray  # [A, k]


def _story_effects(effects: _Effects) -> None:
    """The hand-written interactions that make the store believable (added to random tables)."""
    c = CAT
    for hour in (11, 12, 13, 18, 19, 20):
        effects.category_hour[c["food_delivery"], hour] += 1.6
    effects.category_hour[c["food_delivery"], :] -= 0.5
    effects.category_hour[c["news"], 6:10] += 1.0
    effects.category_hour[c["music"], [7, 8, 17, 18]] += 0.6
    for game in ("shooter_games", "racing_games", "casual_games"):
        effects.category_hour[c[game], 19:24] += 0.7
    for work in ("productivity", "finance", "education"):
        effects.weekday_hour_category[0:5, 9:18, c[work]] += 1.0
        effects.weekday_hour_category[5:7, :, c[work]] -= 0.6
    effects.weekday_hour_category[4:6, 17:24, c["travel"]] += 1.0
    effects.weekday_hour_category[5:7, 9:19, c["shopping"]] += 0.6
    g, a = _index(GENDERS), _index(AGE_BANDS)
    young = [a["13-17"], a["18-24"]]
    effects.gender_age_category[g["m"], young, c["shooter_games"]] += 2.0
    effects.gender_age_category[g["m"], young, c["racing_games"]] += 0.9
    effects.gender_age_category[g["f"], young, c["social"]] += 1.2
    effects.gender_age_category[g["f"], [a["25-34"], a["35-44"]], c["health_fitness"]] += 1.2
    effects.gender_age_category[g["m"], [a["35-44"], a["45-54"]], c["finance"]] += 0.9
    effects.age_category[a["55+"], c["news"]] += 0.8
    effects.age_category[a["55+"], [c["shooter_games"], c["racing_games"]]] -= 1.0
    effects.device_category[DEVICES.index("tablet"), [c["video"], c["education"]]] += 0.7


def _make_effects(rng: np.random.Generator) -> _Effects:
    n = len(CATEGORIES)
    language = np.full((len(COUNTRIES), len(LANGUAGES)), -1.6)
    language[:, 0] = -0.3  # English apps, understood but not preferred outside English countries
    language[np.arange(len(COUNTRIES)), COUNTRY_LANGUAGE] = 0.8
    effects = _Effects(
        category=rng.normal(0.0, 0.3, n),
        hour=np.log(np.asarray(HOUR_WEIGHTS) / 2.5) * 0.2,
        category_hour=rng.normal(0.0, 0.15, (n, 24)),
        weekday_hour_category=np.zeros((7, 24, n)),
        gender_category=rng.normal(0.0, 0.3, (len(GENDERS), n)),
        age_category=rng.normal(0.0, 0.3, (len(AGE_BANDS), n)),
        gender_age_category=rng.normal(0.0, 0.2, (len(GENDERS), len(AGE_BANDS), n)),
        device_category=rng.normal(0.0, 0.2, (len(DEVICES), n)),
        country_category=rng.normal(0.0, 0.3, (len(COUNTRIES), n)),
        country_language=language,
    )
    _story_effects(effects)
    return effects


def _top_k(log_weights: FloatArray, rows: int, k: int, rng: np.random.Generator) -> IntArray:
    """``rows`` draws of ``k`` distinct indices each, without replacement, by weight (Gumbel top-k)."""
    keys = log_weights + rng.gumbel(size=(rows, log_weights.shape[-1]))
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    return top.astype(np.int64)


def _make_users(config: SynthConfig, effects: _Effects, rng: np.random.Generator) -> _Users:
    n = config.num_users
    gender = rng.choice(len(GENDERS), n, p=GENDER_WEIGHTS)
    age = rng.choice(len(AGE_BANDS), n, p=AGE_WEIGHTS)
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS)
    sensitive = np.asarray(PRICE_SENSITIVITY)[country] >= 1.0
    device = np.where(sensitive, rng.choice(4, n, p=DEVICE_BY_RICH[1]), rng.choice(4, n, p=DEVICE_BY_RICH[0]))
    taste = (
        effects.gender_category[gender] + effects.age_category[age] + effects.gender_age_category[gender, age]
    )
    ranked = np.argsort(-(taste + rng.gumbel(size=taste.shape)), axis=1)
    counts = rng.integers(1, config.max_installed + 1, n)
    installed = np.zeros(taste.shape, dtype=bool)
    rows = np.repeat(np.arange(n), counts)
    installed[rows, ranked[rows, np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)]] = True
    names = np.asarray(CATEGORIES)
    text = np.asarray([SEPARATOR.join(names[row]) for row in installed], dtype=str)
    activity = np.exp(rng.normal(0.0, 0.8, n))
    return _Users(
        gender=gender, age=age, country=country, device=device, installed=installed, installed_text=text,
        bias=rng.normal(0.0, 0.35, n), activity=activity / activity.sum(),
        latent=rng.normal(0.0, 1.0, (n, config.latent_dim)),
    )  # fmt: skip


def _make_apps(config: SynthConfig, rng: np.random.Generator) -> _Apps:
    n, categories = config.num_apps, len(CATEGORIES)
    home = rng.choice(categories, config.num_developers, p=rng.dirichlet(np.full(categories, 4.0)))
    developer_weight = 1.0 / np.arange(1, config.num_developers + 1) ** 0.7
    developer = rng.choice(config.num_developers, n, p=developer_weight / developer_weight.sum())
    category = np.where(rng.random(n) < 0.8, home[developer], rng.integers(0, categories, n))
    quality = rng.normal(0.0, 0.35, config.num_developers)[developer] + rng.normal(0.0, 0.45, n)
    rating = np.clip(np.round(4.1 + 0.5 * quality + rng.normal(0.0, 0.2, n), 1), 1.5, 5.0)
    often_paid = np.isin(
        category, [CAT[c] for c in ("puzzle_games", "racing_games", "productivity", "education")]
    )
    paid = rng.random(n) < np.where(often_paid, 0.35, 0.12)
    price = np.where(paid, rng.choice(PRICES, n), 0.0)
    size_mb = np.round(
        np.asarray(SIZE_MEDIAN_MB, dtype=np.float64)[category] * np.exp(rng.normal(0.0, 0.5, n)), 1
    )
    local = np.asarray(COUNTRY_LANGUAGE)[rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS)]
    language = np.where(rng.random(n) < 0.65, 0, local)
    log_popularity = config.popularity_skew * (quality + rng.normal(0.0, 0.8, n))
    return _Apps(
        category=category, developer=developer, language=language, price=price, rating=rating,
        size_mb=size_mb, quality=quality, log_popularity=log_popularity,
        latent=rng.normal(0.0, 1.0, (n, config.latent_dim)),
    )  # fmt: skip


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
