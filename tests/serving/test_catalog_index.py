"""The catalogue index that requests read."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import update

from app.db.models import Item
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


def test_the_fingerprint_names_the_catalogue_in_every_process(services: Services) -> None:
    """Two indexes (two processes) reading the same catalogue agree on its fingerprint, also
    when one of them got there by incremental updates; any change of an item's rules, or a new
    item, changes it."""
    items = [{"item_id": f"sku-{i}", "title": f"Item {i}", "categories": ["a"]} for i in range(5)]
    assert load_items(services, items).rejected == 0
    one, other = CatalogIndex(services.sessions), CatalogIndex(services.sessions)
    original = one.refresh(full=True).fingerprint
    assert other.refresh(full=True).fingerprint == original
    changed = [{**items[2], "title": "Renamed"}, {"item_id": "sku-9", "categories": ["b"]}]
    assert load_items(services, changed).rejected == 0
    incremental = one.reload_items(["sku-2", "sku-9"]).fingerprint
    assert incremental != original
    assert other.refresh(full=True).fingerprint == incremental
    assert load_items(services, [items[2]]).rejected == 0
    without_new = one.reload_items(["sku-2"]).fingerprint
    assert without_new not in (original, incremental)
    assert other.refresh(full=True).fingerprint == without_new


def test_a_refresh_rereading_unchanged_items_keeps_the_snapshot(services: Services) -> None:
    """Right after an import every refresh reads it again (the overlap that catches late
    commits): unchanged items leave the snapshot as it is, a changed one among them is taken."""
    items = [{"item_id": f"sku-{i}", "title": f"Item {i}", "categories": ["a"]} for i in range(50)]
    assert load_items(services, items).rejected == 0
    index = CatalogIndex(services.sessions)
    first = index.refresh(full=True)
    assert index.refresh() is first  # all 50 re-read: within the overlap
    assert load_items(services, [{**items[7], "title": "Renamed"}]).rejected == 0
    second = index.refresh()
    assert second is not first
    assert second.generation == first.generation + 1
    assert second.items[second.position["sku-7"]].title == "Renamed"
    assert [r.item_id for r in second.items] == [r.item_id for r in first.items]
    assert second.fingerprint == CatalogIndex(services.sessions).refresh(full=True).fingerprint
    assert index.refresh() is second


def test_a_row_committed_late_with_an_older_time_is_still_read(services: Services) -> None:
    """A write whose updated_at predates the last read but which committed after it (a long
    transaction) is found by the next refresh, though only new versions are read whole."""
    items = [{"item_id": f"sku-{i}", "title": f"Item {i}", "categories": ["a"]} for i in range(5)]
    assert load_items(services, items).rejected == 0
    index = CatalogIndex(services.sessions)
    first = index.refresh(full=True)
    assert index.refresh() is first
    assert index._watermark is not None
    late = index._watermark - timedelta(seconds=30)
    with services.engine.begin() as connection:
        connection.execute(
            update(Item).where(Item.item_id == "sku-3").values(title="Late", updated_at=late)
        )
    second = index.refresh()
    assert second.items[second.position["sku-3"]].title == "Late"
    assert index.refresh() is second
