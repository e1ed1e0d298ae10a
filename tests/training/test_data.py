"""Reading what the service stored: both readers give the same interactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from app.config import DEFAULT_EVENT_WEIGHTS
from app.services import Services
from training.data import (
    _load_interactions_postgresql,
    _load_interactions_rows,
    load_interactions,
    load_items,
)
from training.loading import load_events
from training.loading import load_items as store_items


def keyed(inter: object) -> list[tuple[str, str, float, float, str]]:
    from training.data import Interactions

    assert isinstance(inter, Interactions)
    users = np.asarray(inter.user_ids, dtype=object)[inter.users]
    items = np.asarray(inter.item_ids, dtype=object)[inter.items]
    types = np.asarray([*inter.type_names, "?"], dtype=object)[inter.types]
    return sorted(
        zip(
            users.tolist(),
            items.tolist(),
            np.round(inter.weights, 9).tolist(),
            np.round(inter.timestamps, 3).tolist(),
            types.tolist(),
            strict=True,
        )
    )


def test_both_readers_agree_on_every_event(services: Services) -> None:
    """Ratings weighted by their value, dislikes negative, an item only the events know (a stub
    item appended after the catalogue's order), a type the weights leave out (weight 0)."""
    assert store_items(services, [{"item_id": f"i{k}", "title": f"t{k}"} for k in range(5)])
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        {"user_id": "u1", "item_id": "i1", "type": "view"},
        {"user_id": "u1", "item_id": "i2", "type": "rating", "value": 4.5},
        {"user_id": "u2", "item_id": "i1", "type": "dislike"},
        {"user_id": "u2", "item_id": "stub-9", "type": "purchase"},
        {"user_id": "u3", "item_id": "i4", "type": "click"},
        # Ids that need quoting in CSV, and non-ASCII ones.
        {"user_id": 'u,"4"', "item_id": "i3", "type": "view"},
        {"user_id": "ü5 ß", "item_id": 'stub,"x"', "type": "like"},
    ]
    for n, event in enumerate(events):
        event["timestamp"] = (now - timedelta(minutes=n)).isoformat()
    assert load_events(services, events).rejected == 0
    weights = {k: v for k, v in DEFAULT_EVENT_WEIGHTS.items() if k != "click"}
    catalogue = [i for i in load_items(services.engine).ids if not i.startswith("stub")]

    rows = _load_interactions_rows(services.engine, weights, catalogue, None)
    chosen = load_interactions(services.engine, weights, item_ids=catalogue)
    assert keyed(chosen) == keyed(rows)
    # The catalogue's order first, then the items only the events know.
    assert chosen.item_ids[: len(catalogue)] == catalogue
    assert sorted(chosen.item_ids[len(catalogue) :]) == sorted(["stub-9", 'stub,"x"'])
    assert len(chosen) == len(events)
    by_type = {entry[4]: entry[2] for entry in keyed(chosen)}
    assert by_type["rating"] == DEFAULT_EVENT_WEIGHTS["rating"] * 4.5
    assert by_type["dislike"] < 0
    assert by_type["?"] == 0.0  # click: no weight given
    if services.engine.dialect.name == "postgresql":
        fast = _load_interactions_postgresql(services.engine, weights, catalogue, None)
        assert keyed(fast) == keyed(rows)


def test_no_events_read_as_none_with_the_catalogue_order_kept(services: Services) -> None:
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    readers = [_load_interactions_rows]
    if services.engine.dialect.name == "postgresql":
        readers.append(_load_interactions_postgresql)
    for reader in readers:
        inter = reader(services.engine, weights, ["a", "b"], None)
        assert (len(inter), inter.n_users, inter.item_ids) == (0, 0, ["a", "b"])
