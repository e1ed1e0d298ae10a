"""Attribute filters: parsing, matching on the catalogue index, and the recommendations API."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.serving.catalog_index import CatalogSnapshot, ItemRules
from app.serving.filters import AttributeFilter, FilterError
from training import demo
from training.pipeline import TrainResult


def rules(item_id: str, **attributes: Any) -> ItemRules:
    return ItemRules(
        item_id=item_id,
        title=None,
        categories=(),
        shown=True,
        available_from=-math.inf,
        available_until=math.inf,
        attributes=tuple(sorted(attributes.items())),
    )


SNAPSHOT = CatalogSnapshot.build(
    0,
    [
        rules("a", brand="Acme", price=10, on_sale=True),
        rules("b", brand="Terra", price=10.0, on_sale=False),
        rules("c", brand="Acme", price=99.5),
        rules("d", brand="Vanta", price="10"),  # a text attribute that reads as a number
        rules("e"),
    ],
)


def matching(*texts: str) -> list[str]:
    mask = SNAPSHOT.matching([AttributeFilter.parse(t) for t in texts])
    return [SNAPSHOT.items[p].item_id for p in np.flatnonzero(mask)]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["brand=Acme"], ["a", "c"]),
        (["brand=Acme", "brand=Terra"], ["a", "b", "c"]),  # any of, on one name
        (["brand=Acme", "price<50"], ["a"]),  # all of, across names
        (["price=10"], ["a", "b", "d"]),  # numbers by value; "10" as text too
        (["price<=10"], ["a", "b"]),  # order operators: numeric attributes only
        (["price>10"], ["c"]),
        (["price>=99.5", "price<100"], ["c"]),
        (["on_sale=TRUE"], ["a"]),
        (["on_sale!=true"], ["b", "c", "d", "e"]),  # missing counts as different
        (["brand!=Acme"], ["b", "d", "e"]),
        (["colour=red"], []),
        (["weight<5"], []),
    ],
)
def test_filters_select_the_matching_items(texts: list[str], expected: list[str]) -> None:
    assert matching(*texts) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("brand", "is not NAME OP VALUE"),
        ("=Acme", "is not NAME OP VALUE"),
        ("brand=", "has no value"),
        ("price<cheap", "is not a finite number"),
        ("price<nan", "is not a finite number"),
        ("price>=inf", "is not a finite number"),
        ("bad name=1", "is not NAME OP VALUE"),
        ("brand=" + "x" * 300, "over 256 characters"),
    ],
)
def test_unreadable_filters_say_how_to_write_them(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        AttributeFilter.parse(text)


def test_the_api_applies_attribute_filters(
    served: tuple[TestClient, TrainResult], shop: demo.DemoData
) -> None:
    client, _ = served
    user = shop.events[0]["user_id"]
    by_id = {item["item_id"]: item for item in shop.items}
    brand = shop.items[0]["attributes"]["brand"]
    response = client.get(
        f"/v1/users/{user}/recommendations",
        params={"k": 5, "attribute": [f"brand={brand}", "price<=60"], "exclude_seen": False},
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    eligible = [
        i
        for i in shop.items
        if i["attributes"]["brand"] == brand and i["attributes"]["price"] <= 60 and i["available"]
    ]
    assert len(items) == min(5, len(eligible))
    for entry in items:
        attributes = by_id[entry["item_id"]]["attributes"]
        assert attributes["brand"] == brand
        assert attributes["price"] <= 60


def test_a_bad_attribute_filter_is_a_clear_422(served: tuple[TestClient, TrainResult]) -> None:
    client, _ = served
    response = client.get("/v1/users/u1/recommendations", params={"attribute": "price<cheap"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "InvalidInput"
    assert "price<cheap" in body["detail"]
    assert "finite number" in body["detail"]
