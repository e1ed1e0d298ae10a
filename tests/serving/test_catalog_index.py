"""The catalogue index that requests read."""

from __future__ import annotations

import numpy as np

from app.services import Services
from app.serving.catalog_index import CatalogIndex
from app.serving.filters import AttributeFilter
from training.loading import load_items


def test_repeated_categories_and_text_attributes_are_held_once(services: Services) -> None:
    """Every item holds its own rules, yet equal category lists and text attributes are one
    object for the whole catalogue (memory per item stays small); sharing never makes the
    number 1 the boolean true, which is equal to it in Python."""
    flags = [True, 1, "true", False, 0]
    items = [
        {
            "item_id": f"sku-{i}",
            "categories": ["shoes", "running"],
            "attributes": {"brand": "Acme", "flag": flag},
        }
        for i, flag in enumerate(flags)
    ]
    assert load_items(services, items).rejected == 0
    snapshot = CatalogIndex(services.sessions).refresh(full=True)
    rules = [snapshot.items[snapshot.position[f"sku-{i}"]] for i in range(len(flags))]
    assert all(r.categories == ("shoes", "running") for r in rules)
    assert len({id(r.categories) for r in rules}) == 1
    assert len({id(r.attributes[0]) for r in rules}) == 1  # ("brand", "Acme")
    assert [dict(r.attributes)["flag"] for r in rules] == flags
    assert [type(dict(r.attributes)["flag"]) for r in rules] == [type(f) for f in flags]
    matched = snapshot.matching([AttributeFilter.parse("flag=true")])
    assert [snapshot.items[p].item_id for p in np.flatnonzero(matched)] == ["sku-0", "sku-2"]
