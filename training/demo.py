"""Synthetic shop data with structure a recommender can find.

Users have latent tastes over categories; items belong to categories, carry tags and text, and
have power-law popularity; each user's events follow their taste, the items' popularity and a
funnel of event types (views, clicks, carts, purchases, likes, ratings), spread over time.
Everything is drawn from one seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

CATEGORIES = [
    "running",
    "hiking",
    "cycling",
    "swimming",
    "yoga",
    "climbing",
    "camping",
    "tennis",
    "fishing",
    "skiing",
    "fitness",
    "team-sports",
]
ADJECTIVES = [
    "light",
    "pro",
    "classic",
    "trail",
    "urban",
    "all-weather",
    "compact",
    "premium",
    "eco",
    "junior",
    "ultra",
    "everyday",
]
NOUNS = ["shoe", "jacket", "bag", "bottle", "watch", "glove", "mat", "tent", "helmet", "shirt"]
TAGS = ["waterproof", "breathable", "recycled", "bestseller", "new", "lightweight", "durable"]
BRANDS = ["Acme", "Northpeak", "Riverline", "Solis", "Terra", "Vanta"]

EVENT_FUNNEL = [
    ("view", 0.62),
    ("click", 0.2),
    ("add_to_cart", 0.07),
    ("purchase", 0.04),
    ("like", 0.04),
    ("rating", 0.02),
    ("dislike", 0.01),
]


@dataclass(frozen=True)
class DemoSpec:
    users: int = 2_000
    items: int = 600
    events: int = 60_000
    days: int = 90
    seed: int = 42


@dataclass
class DemoData:
    items: list[dict[str, Any]]
    events: list[dict[str, Any]]


def generate(spec: DemoSpec, now: datetime | None = None) -> DemoData:
    """Items and events as the HTTP API takes them (``PUT``/batch bodies)."""
    rng = np.random.default_rng(spec.seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    n_cat = len(CATEGORIES)

    item_cat = rng.integers(0, n_cat, size=spec.items)
    second_cat = np.where(rng.random(spec.items) < 0.25, rng.integers(0, n_cat, spec.items), -1)
    # Zipf-like popularity: a few items take most of the traffic, as in every shop.
    popularity = 1.0 / np.arange(1, spec.items + 1) ** 0.9
    rng.shuffle(popularity)
    items = []
    for i in range(spec.items):
        cats = [CATEGORIES[item_cat[i]]]
        if second_cat[i] >= 0 and second_cat[i] != item_cat[i]:
            cats.append(CATEGORIES[second_cat[i]])
        title = (
            f"{ADJECTIVES[rng.integers(len(ADJECTIVES))].capitalize()} {cats[0]} "
            f"{NOUNS[rng.integers(len(NOUNS))]}"
        )
        tags = sorted({TAGS[t] for t in rng.integers(0, len(TAGS), size=rng.integers(0, 3))})
        items.append(
            {
                "item_id": f"sku-{i:05d}",
                "title": title,
                "categories": cats,
                "tags": [cats[0], *tags],
                "attributes": {
                    "brand": BRANDS[rng.integers(len(BRANDS))],
                    "price": round(float(rng.lognormal(3.5, 0.6)), 2),
                },
                "available": bool(rng.random() > 0.02),
            }
        )

    # Each user likes two or three categories much more than the rest.
    tastes = rng.dirichlet(np.full(n_cat, 0.15), size=spec.users)
    activity = rng.lognormal(0.0, 1.0, size=spec.users)
    per_user = np.maximum(1, np.round(activity / activity.sum() * spec.events)).astype(int)
    types, type_p = zip(*EVENT_FUNNEL, strict=True)
    type_p_arr = np.asarray(type_p) / np.sum(type_p)
    events: list[dict[str, Any]] = []
    for u in range(spec.users):
        affinity = tastes[u][item_cat] * popularity
        affinity /= affinity.sum()
        chosen = rng.choice(spec.items, size=per_user[u], p=affinity)
        kinds = rng.choice(len(types), size=per_user[u], p=type_p_arr)
        ages = rng.uniform(0, spec.days * 86_400, size=per_user[u])
        for k, (item, kind) in enumerate(zip(chosen, kinds, strict=True)):
            event: dict[str, Any] = {
                "event_id": f"demo-{spec.seed}-{u}-{k}",
                "user_id": f"user-{u:05d}",
                "item_id": items[item]["item_id"],
                "type": types[kind],
                "timestamp": (now - timedelta(seconds=float(ages[k]))).isoformat(),
            }
            if types[kind] == "rating":
                event["value"] = float(rng.choice([3.0, 4.0, 4.5, 5.0]))
            events.append(event)
    return DemoData(items=items, events=events)


def batches(values: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
