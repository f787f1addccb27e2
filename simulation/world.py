"""The synthetic store's world: constants, settings, ground-truth effect tables, users and apps.

``simulation.synth`` builds an ``AppStoreWorld`` from these; they are drawn once from the config's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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
