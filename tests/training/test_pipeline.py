"""`train()` from stored events to a registered, gated version, and the fixed holdout it is
judged on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from app.config import Settings
from app.services import Services
from tests.conftest import count_rows
from training import demo
from training.artifact import ARRAYS_FILE, ModelArtifact, sha256_file
from training.data import Interactions
from training.loading import load_events, load_items
from training.pipeline import TrainingError, TrainOptions, holdout_mask, remap_artifact, train
from training.recommenders import recommend
from training.registry import ACTIVE, CANDIDATE, RETIRED, Registry

DEMO = demo.DemoSpec(users=300, items=120, events=6000)

# -- the fixed holdout -------------------------------------------------------------------------


def interactions(
    pairs: list[tuple[str, str]], user_ids: list[str], item_ids: list[str]
) -> Interactions:
    """Events of ``pairs`` on the given id orders (one event per pair)."""
    user_index = {u: i for i, u in enumerate(user_ids)}
    item_index = {i: k for k, i in enumerate(item_ids)}
    n = len(pairs)
    return Interactions(
        user_ids=user_ids,
        item_ids=item_ids,
        users=np.array([user_index[u] for u, _ in pairs], dtype=np.int64),
        items=np.array([item_index[i] for _, i in pairs], dtype=np.int64),
        weights=np.ones(n),
        timestamps=np.zeros(n),
        types=np.zeros(n, dtype=np.int8),
        type_names=["view"],
    )


def held_pairs(inter: Interactions, percent: float) -> set[tuple[str, str]]:
    mask = holdout_mask(inter, percent)
    return {
        (inter.user_ids[u], inter.item_ids[i])
        for u, i in zip(inter.users[mask], inter.items[mask], strict=True)
    }


def test_holdout_depends_on_the_pair_not_on_index_or_row_order() -> None:
    """The same (user id, item id) pairs are held out however ids are indexed and rows are
    ordered: a version trained later, on more data, is judged on the same pairs."""
    users = [f"user-{u}" for u in range(60)]
    items = [f"sku-{i}" for i in range(50)]
    pairs = [(u, i) for u in users for i in items]
    rng = np.random.default_rng(3)
    shuffled_pairs = [pairs[k] for k in rng.permutation(len(pairs))]
    first = interactions(pairs, users, items)
    second = interactions(
        shuffled_pairs,
        [users[k] for k in rng.permutation(len(users))],
        [items[k] for k in rng.permutation(len(items))],
    )
    held = held_pairs(first, 10.0)
    assert held == held_pairs(second, 10.0)
    assert held  # not vacuous
    # And it asks nothing but the pair: a pair on its own gets the same verdict.
    for user_id, item_id in list(held)[:5]:
        assert holdout_mask(interactions([(user_id, item_id)], [user_id], [item_id]), 10.0)[0]


def test_holdout_takes_roughly_the_requested_share_and_keeps_pairs_together() -> None:
    """Over 30,000 pairs the held-out share is within half a point of the request; every
    event of a held pair is held; 0% holds nothing."""
    users = [f"u{u}" for u in range(200)]
    items = [f"i{i}" for i in range(150)]
    pairs = [(u, i) for u in users for i in items]
    inter = interactions(pairs, users, items)
    for percent in (5.0, 10.0, 25.0):
        share = holdout_mask(inter, percent).mean()
        assert abs(share - percent / 100) < 0.005, (percent, share)
    assert not holdout_mask(inter, 0.0).any()

    twice = interactions(pairs[:3000] + pairs[:3000], users, items)
    mask = holdout_mask(twice, 10.0)
    np.testing.assert_array_equal(mask[:3000], mask[3000:])


def test_the_holdout_grows_with_the_share_and_keeps_what_a_smaller_share_held() -> None:
    """A pair held at 5% is also held at 10% (the same hash bucket, a larger cut)."""
    users = [f"u{u}" for u in range(40)]
    items = [f"i{i}" for i in range(40)]
    inter = interactions([(u, i) for u in users for i in items], users, items)
    assert held_pairs(inter, 5.0) < held_pairs(inter, 10.0)


# -- train() on the database -------------------------------------------------------------------


@pytest.fixture
def demo_shop(services: Services) -> Services:
    """The demo shop loaded through the ingestion path, as `demo-data` does."""
    data = demo.generate(DEMO)
    items = load_items(services, data.items)
    events = load_events(services, data.events)
    assert items.rejected == 0
    assert events.rejected == 0
    assert count_rows(services, "events") == len(data.events)
    return services


def run_train(services: Services, settings: Settings, model_dir: Path, **options: Any) -> Any:
    return train(
        services.engine,
        services.sessions,
        dict(settings.event_weights),
        model_dir,
        TrainOptions(**options),
    )


def test_train_promotes_the_first_version_and_registers_a_loadable_artifact(
    demo_shop: Services, settings: Settings, tmp_path: Path
) -> None:
    """The first training is promoted ('no version is active'); its artifact loads, its
    registry row points at it with the right SHA-256, and on structured data the hybrid
    beats popularity on the holdout."""
    result = run_train(demo_shop, settings, tmp_path)

    assert result.decision.promote
    assert result.decision.reasons == ["no version is active: the first model is promoted"]
    row = Registry(demo_shop.sessions).get(result.version)
    assert row.status == ACTIVE
    assert Path(row.artifact_path) == result.path.resolve()
    assert row.artifact_sha256 == sha256_file(result.path / ARRAYS_FILE)
    assert row.gate is not None
    assert row.gate["reasons"] == result.decision.reasons
    assert (row.n_events, row.n_users, row.n_items) == (
        count_rows(demo_shop, "events"),
        DEMO.users,
        DEMO.items,
    )

    artifact = ModelArtifact.load(Path(row.artifact_path), row.artifact_sha256)
    assert artifact.version == result.version
    assert sorted(artifact.item_ids) == [f"sku-{i:05d}" for i in range(DEMO.items)]
    assert artifact.metrics == row.metrics
    assert artifact.stats["n_events"] == row.n_events

    metrics = row.metrics
    assert metrics["holdout_percent"] == 10.0
    hybrid, popularity = metrics["validation"], metrics["validation_popularity"]
    assert hybrid["users"] == popularity["users"] > 50
    assert hybrid["ndcg@10"] > popularity["ndcg@10"] * 1.2
    assert hybrid["recall@10"] > popularity["recall@10"]


def test_retraining_on_the_same_data_keeps_the_active_version(
    demo_shop: Services, settings: Settings, tmp_path: Path
) -> None:
    """Same data, same options: the candidate ties the active version on the shared holdout,
    which is not better, so it stays a candidate with the gate's reasons stored; --force
    then promotes a third one and retires the first."""
    registry = Registry(demo_shop.sessions)
    first = run_train(demo_shop, settings, tmp_path)
    second = run_train(demo_shop, settings, tmp_path)

    assert not second.decision.promote
    assert second.decision.active_version == first.version
    assert second.decision.candidate_score == pytest.approx(second.decision.active_score)
    row = registry.get(second.version)
    assert row.status == CANDIDATE
    assert row.gate is not None
    assert row.gate["reasons"] == second.decision.reasons
    assert row.gate["reasons"][0].startswith("not better")
    active = registry.active()
    assert active is not None
    assert active.version == first.version

    forced = run_train(demo_shop, settings, tmp_path, force=True)
    assert forced.decision.promote
    assert forced.decision.forced
    assert "forced" in forced.decision.reasons[0]
    assert {v.version: v.status for v in registry.all()} == {
        first.version: RETIRED,
        second.version: CANDIDATE,
        forced.version: ACTIVE,
    }
    assert len({first.version, second.version, forced.version}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.version, second.version, forced.version]
    )


def test_train_with_no_events_explains_how_to_load_data(
    services: Services, settings: Settings, tmp_path: Path
) -> None:
    """An empty database stops training with a message naming the ways to load data, and
    registers nothing."""
    with pytest.raises(TrainingError) as caught:
        run_train(services, settings, tmp_path)
    message = str(caught.value)
    assert "no events are stored" in message
    assert "python -m training demo-data" in message
    assert "import-movielens" in message
    assert count_rows(services, "model_versions") == 0
    assert not any(tmp_path.iterdir())


# -- known answer ------------------------------------------------------------------------------

GROUP_A_USERS, GROUP_B_USERS, ITEMS_PER_GROUP = 12, 20, 8
WITHHELD = ["a-item-00", "a-item-01"]
TARGET = "a-user-00"


def two_worlds() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Group A users only buy A items, group B users only B items; the target A user has not
    bought two A items. B is the larger group, so popularity points the wrong way, and an A
    item and a B item of the same number share title and category, so content cannot tell
    the groups apart: only the co-occurrences learnt by ALS can."""
    items = [
        {"item_id": f"{g}-item-{i:02d}", "title": f"thing {i}", "categories": [f"kind-{i}"]}
        for g in "ab"
        for i in range(ITEMS_PER_GROUP)
    ]
    start = datetime.now(UTC) - timedelta(days=5)
    events: list[dict[str, Any]] = []
    for group, n_users in (("a", GROUP_A_USERS), ("b", GROUP_B_USERS)):
        for u in range(n_users):
            user_id = f"{group}-user-{u:02d}"
            for i in range(ITEMS_PER_GROUP):
                item_id = f"{group}-item-{i:02d}"
                if user_id == TARGET and item_id in WITHHELD:
                    continue
                events.append(
                    {
                        "event_id": f"{user_id}-{item_id}",
                        "user_id": user_id,
                        "item_id": item_id,
                        "type": "purchase",
                        "timestamp": (start + timedelta(minutes=len(events))).isoformat(),
                    }
                )
    return items, events


def test_train_recovers_a_planted_preference(
    services: Services, settings: Settings, tmp_path: Path
) -> None:
    """Through the whole pipeline (ingestion, train(), the saved artifact, fold-in as served),
    the target user's two best unseen items are the two A items it has not bought, ahead of
    the more popular B items."""
    items, events = two_worlds()
    load_items(services, items)
    assert load_events(services, events).accepted == len(events)

    result = run_train(services, settings, tmp_path)

    artifact = ModelArtifact.load(result.path)
    item_ids = sorted(artifact.item_ids)
    model = remap_artifact(artifact, item_ids)
    seen = [item_ids.index(e["item_id"]) for e in events if e["user_id"] == TARGET]
    history = sp.csr_matrix(
        (np.ones(len(seen), dtype=np.float32), ([0] * len(seen), seen)),
        shape=(1, len(item_ids)),
    )
    top = recommend(model, history, k=2)[0]
    assert sorted(item_ids[i] for i in top) == WITHHELD
