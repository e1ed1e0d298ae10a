"""The model artifact: what training writes is exactly what serving reads, and nothing else is
read (no pickles, no corrupt or foreign files, no arrays that do not fit together)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from training.artifact import (
    ARRAYS_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    ArtifactError,
    ModelArtifact,
    sha256_file,
)
from training.pipeline import remap_artifact
from training.recommenders import (
    ALSParams,
    ContentScorer,
    HybridScorer,
    PopularityScorer,
    fit_als,
    hybrid_to_arrays,
    recommend,
)

N_BLOCK = 6
ITEM_IDS = [f"sku-{i:02d}" for i in range(2 * N_BLOCK)]


def block_matrix() -> sp.csr_matrix:
    """Two user groups, each interacting with its own half of the items."""
    n = 2 * N_BLOCK
    dense = np.zeros((n, n), dtype=np.float32)
    dense[:N_BLOCK, :N_BLOCK] = 1
    dense[N_BLOCK:, N_BLOCK:] = 1
    return sp.csr_matrix(dense)


def small_hybrid() -> HybridScorer:
    """A served-style hybrid (no user factors) fitted on the block matrix."""
    user_items = block_matrix()
    als = fit_als(user_items, ALSParams(factors=4, regularization=0.1, iterations=10))
    embeddings = np.random.default_rng(7).normal(size=(user_items.shape[1], 3)).astype(np.float32)
    popularity = np.asarray(user_items.sum(axis=0), dtype=np.float32).ravel()
    popularity[0] += 3.0  # not all equal, so the popularity row is not constant
    return HybridScorer(
        als=type(als)(als.item_factors, None, als.params),
        content=ContentScorer(embeddings),
        popularity=PopularityScorer(popularity),
        weights={"als": 1.0, "content": 0.2, "popularity": 0.1},
    )


def make_artifact(version: str = "v-test-1", **overrides: Any) -> ModelArtifact:
    arrays = hybrid_to_arrays(small_hybrid())
    arrays["item_ids"] = np.asarray(ITEM_IDS)
    fields: dict[str, Any] = {
        "version": version,
        "arrays": arrays,
        "params": {"choice": {"als": {"factors": 4}, "weights": {"als": 1.0}}, "note": "x"},
        "metrics": {"validation": {"ndcg@10": 0.25, "users": 12}, "holdout_percent": 10.0},
        "stats": {"n_events": 36, "event_type_share": {"view": 1.0}, "data_from": None},
        "created_at": "2026-03-01T12:00:00+00:00",
    }
    fields.update(overrides)
    return ModelArtifact(**fields)


def write_manifest(directory: Path, **changes: Any) -> None:
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


# -- round trip --------------------------------------------------------------------------------


def test_save_then_load_returns_the_same_arrays_and_metadata(tmp_path: Path) -> None:
    """Every array (values and dtype), the parameters, metrics, statistics and creation time
    come back unchanged, and the returned digest is the arrays file's SHA-256."""
    artifact = make_artifact()
    directory, digest = artifact.save(tmp_path)

    assert directory == tmp_path / artifact.version
    assert digest == sha256_file(directory / ARRAYS_FILE)
    loaded = ModelArtifact.load(directory, expected_sha256=digest)

    assert loaded.version == artifact.version
    assert loaded.format_version == FORMAT_VERSION
    assert sorted(loaded.arrays) == sorted(artifact.arrays)
    for name, array in artifact.arrays.items():
        assert loaded.arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded.arrays[name], array, err_msg=name)
    assert loaded.item_ids == ITEM_IDS
    assert loaded.params == artifact.params
    assert loaded.metrics == artifact.metrics
    assert loaded.stats == artifact.stats
    assert loaded.created_at == artifact.created_at


def test_save_leaves_no_staging_directory_behind(tmp_path: Path) -> None:
    """A finished save leaves only the version's directory (the staging one was renamed)."""
    make_artifact().save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["v-test-1"]
    assert sorted(p.name for p in (tmp_path / "v-test-1").iterdir()) == [ARRAYS_FILE, MANIFEST_FILE]


def test_saving_over_an_existing_version_is_refused_and_keeps_the_first(tmp_path: Path) -> None:
    """Versions are immutable: a second save under the same name fails and changes nothing."""
    first = make_artifact()
    directory, digest = first.save(tmp_path)
    second = make_artifact(metrics={"validation": {"ndcg@10": 0.99}})
    with pytest.raises(ArtifactError, match="already exists"):
        second.save(tmp_path)
    assert sha256_file(directory / ARRAYS_FILE) == digest
    assert ModelArtifact.load(directory).metrics == first.metrics


# -- refusing what cannot be trusted -----------------------------------------------------------


def test_an_object_array_is_refused_rather_than_unpickled(tmp_path: Path) -> None:
    """A pickled (object) array in arrays.npz is never unpickled: loading raises ArtifactError,
    even when the manifest's checksum matches the file."""
    directory, _ = make_artifact().save(tmp_path)
    arrays_path = directory / ARRAYS_FILE
    with np.load(arrays_path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["item_ids"] = np.array(ITEM_IDS, dtype=object)
    with arrays_path.open("wb") as handle:
        np.savez(handle, **arrays)
    write_manifest(directory, arrays_sha256=sha256_file(arrays_path))

    with pytest.raises(ArtifactError, match="unreadable: Object arrays cannot be loaded"):
        ModelArtifact.load(directory)


def test_flipped_bytes_in_the_arrays_file_are_refused_as_corrupt(tmp_path: Path) -> None:
    """Changing a few bytes of arrays.npz is caught by the manifest's SHA-256."""
    directory, _ = make_artifact().save(tmp_path)
    arrays_path = directory / ARRAYS_FILE
    raw = bytearray(arrays_path.read_bytes())
    middle = len(raw) // 2
    for offset in range(middle, middle + 8):
        raw[offset] ^= 0xFF
    arrays_path.write_bytes(bytes(raw))

    with pytest.raises(ArtifactError, match="corrupt: its SHA-256 does not match"):
        ModelArtifact.load(directory)


def test_a_digest_other_than_the_registered_one_is_refused(tmp_path: Path) -> None:
    """An intact artifact is still refused when the registry expects another file."""
    directory, digest = make_artifact().save(tmp_path)
    with pytest.raises(ArtifactError, match="SHA-256 does not match"):
        ModelArtifact.load(directory, expected_sha256="0" * len(digest))


def test_another_format_version_is_refused_naming_both_versions(tmp_path: Path) -> None:
    """An artifact of a newer format is refused with a message naming its format and ours."""
    directory, _ = make_artifact().save(tmp_path)
    write_manifest(directory, format_version=FORMAT_VERSION + 1)

    with pytest.raises(ArtifactError) as caught:
        ModelArtifact.load(directory)
    message = str(caught.value)
    assert f"format {FORMAT_VERSION + 1}" in message
    assert f"reads format {FORMAT_VERSION}" in message


def test_a_directory_without_the_files_is_not_an_artifact(tmp_path: Path) -> None:
    """A missing manifest is reported as 'not a model artifact'."""
    directory, _ = make_artifact().save(tmp_path)
    (directory / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match="not a model artifact"):
        ModelArtifact.load(directory)


@pytest.mark.parametrize("name", ["popularity", "item_factors", "item_embeddings"])
def test_validate_refuses_arrays_with_the_wrong_number_of_rows(name: str) -> None:
    """An item array with a row count other than the number of item ids is refused, naming it."""
    artifact = make_artifact()
    artifact.arrays[name] = artifact.arrays[name][:-1]
    with pytest.raises(ArtifactError, match=f"{name} has {len(ITEM_IDS) - 1} rows"):
        artifact.validate()


def test_save_refuses_an_invalid_artifact_and_writes_nothing(tmp_path: Path) -> None:
    """Saving validates first: a shape mismatch leaves no version directory."""
    artifact = make_artifact()
    artifact.arrays["popularity"] = artifact.arrays["popularity"][:3]
    with pytest.raises(ArtifactError, match="popularity"):
        artifact.save(tmp_path)
    assert not (tmp_path / artifact.version).exists()


def test_validate_refuses_missing_arrays_and_duplicate_ids() -> None:
    """A required array missing, or the same item id twice, is refused."""
    artifact = make_artifact()
    del artifact.arrays["blend_weights"]
    with pytest.raises(ArtifactError, match="blend_weights"):
        artifact.validate()

    artifact = make_artifact()
    artifact.arrays["item_ids"] = np.asarray([ITEM_IDS[0], *ITEM_IDS[:-1]])
    with pytest.raises(ArtifactError, match="not unique"):
        artifact.validate()


def test_validate_refuses_non_finite_factors() -> None:
    """A NaN in the item factors is refused before it can reach a ranking."""
    artifact = make_artifact()
    artifact.arrays["item_factors"] = artifact.arrays["item_factors"].copy()
    artifact.arrays["item_factors"][2, 1] = np.nan
    with pytest.raises(ArtifactError, match="NaN or infinity"):
        artifact.validate()


# -- from artifact to a working model ----------------------------------------------------------


def test_a_loaded_artifact_scores_exactly_like_the_model_it_was_saved_from(tmp_path: Path) -> None:
    """remap_artifact on the artifact's own item order rebuilds the saved model: same scores
    and the planted block structure is recommended."""
    original = small_hybrid()
    arrays = hybrid_to_arrays(original)
    arrays["item_ids"] = np.asarray(ITEM_IDS)
    directory, digest = ModelArtifact("v-roundtrip", arrays).save(tmp_path)

    served = remap_artifact(ModelArtifact.load(directory, digest), ITEM_IDS)

    history = block_matrix()
    history[0, 1] = 0  # user 0 has not seen item 1 of its own block
    history.eliminate_zeros()
    users = np.arange(history.shape[0])
    np.testing.assert_allclose(
        served.score(users, history), original.score(users, history), rtol=1e-5, atol=1e-5
    )
    assert served.weights == pytest.approx(original.weights)
    assert recommend(served, history[[0]], k=1)[0, 0] == 1


def test_remap_to_a_new_item_order_moves_every_item_and_gives_a_new_item_nothing(
    tmp_path: Path,
) -> None:
    """On today's index (reversed order plus an item the model never saw) every known item
    keeps its factors, popularity, embedding and component scores under its id, and the new
    item gets zero factors, zero popularity and a zero embedding."""
    original = small_hybrid()
    arrays = hybrid_to_arrays(original)
    arrays["item_ids"] = np.asarray(ITEM_IDS)
    directory, _ = ModelArtifact("v-remap", arrays).save(tmp_path)
    artifact = ModelArtifact.load(directory)

    today = ["sku-new", *reversed(ITEM_IDS)]
    remapped = remap_artifact(artifact, today)
    old_index = [ITEM_IDS.index(i) for i in today[1:]]

    assert remapped.n_items == len(today)
    np.testing.assert_array_equal(remapped.als.item_factors[1:], arrays["item_factors"][old_index])
    np.testing.assert_array_equal(remapped.als.item_factors[0], 0.0)
    np.testing.assert_array_equal(
        remapped.popularity.popularity[1:], arrays["popularity"][old_index]
    )
    assert remapped.popularity.popularity[0] == 0.0
    assert remapped.content is not None
    np.testing.assert_array_equal(
        remapped.content.item_embeddings[1:], arrays["item_embeddings"][old_index]
    )
    np.testing.assert_array_equal(remapped.content.item_embeddings[0], 0.0)

    # The same histories, written in each index, score every known item the same.
    history_old = block_matrix()[[0, N_BLOCK]]
    column = {item_id: i for i, item_id in enumerate(today)}
    history_new = sp.csr_matrix((history_old.shape[0], len(today)), dtype=np.float32).tolil()
    for row, col in zip(*history_old.nonzero(), strict=True):
        history_new[row, column[ITEM_IDS[col]]] = history_old[row, col]
    history_new = history_new.tocsr()
    users = np.arange(2)
    before = original.components(users, history_old)
    after = remapped.components(users, history_new)
    for name in ("als", "content", "popularity"):
        np.testing.assert_allclose(
            after[name][:, 1:], before[name][:, old_index], rtol=1e-5, atol=1e-5, err_msg=name
        )
    # The new item has no interactions: its ALS score is the user's mean, not a raw zero.
    np.testing.assert_allclose(after["als"][:, 0], after["als"][:, 1:].mean(axis=1), rtol=1e-5)

    # Each user is still recommended its own block first.
    recs = recommend(remapped, history_new, k=N_BLOCK, exclude_seen=False)
    group_a = {column[i] for i in ITEM_IDS[:N_BLOCK]}
    group_b = {column[i] for i in ITEM_IDS[N_BLOCK:]}
    assert set(recs[0].tolist()) == group_a
    assert set(recs[1].tolist()) == group_b
