"""Content features of items, reduced to a dense embedding.

Inputs are plain per-item lists (ids, titles, category lists, tag lists, attribute
dicts), not database rows. The pipeline is: one-hot categories, TF-IDF over the title
and the tags, standardised numeric attributes; every block is scaled to a comparable
weight, stacked, and reduced with TruncatedSVD. The result is one float32 array of
shape (n_items, n_components) that the service can load from an ``.npz``.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

# scikit-learn takes about a second to import and only the content step needs it.
_SKLEARN_MODULES = (
    "sklearn.decomposition",
    "sklearn.feature_extraction.text",
    "sklearn.preprocessing",
)


def preload() -> threading.Thread:
    """Import scikit-learn in a background thread, so the import overlaps work that waits
    on the database; a later import of the same modules waits for it (import lock)."""
    thread = threading.Thread(
        target=lambda: [importlib.import_module(name) for name in _SKLEARN_MODULES],
        name="preload-sklearn",
        daemon=True,
    )
    thread.start()
    return thread


@dataclass(frozen=True)
class FeatureWeights:
    """Relative weight of every feature block before the SVD."""

    categories: float = 1.0
    text: float = 1.0
    attributes: float = 0.5


@dataclass(frozen=True)
class ItemEmbedding:
    """Dense content embedding of a catalogue.

    Attributes
    ----------
    item_ids : list of str
        Item identifiers, in row order.
    vectors : ndarray of shape (n_items, n_components), float32
        Unit-norm rows (all-zero for an item without any feature).
    """

    item_ids: list[str]
    vectors: npt.NDArray[np.float32]


def _block_rows_unit(matrix: sp.csr_matrix, weight: float) -> sp.csr_matrix:
    from sklearn.preprocessing import normalize

    # Unit rows per block make "weight" mean the same thing whatever the vocabulary size.
    return sp.csr_matrix(normalize(matrix, norm="l2", axis=1) * weight)


def category_matrix(categories: Sequence[Sequence[str]]) -> tuple[sp.csr_matrix, list[str]]:
    """One-hot encode every item's categories.

    Returns
    -------
    matrix : csr_matrix of shape (n_items, n_categories)
    names : list of str
        Category of every column.
    """
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(sparse_output=True)
    matrix = binarizer.fit_transform([sorted(set(c)) for c in categories])
    return sp.csr_matrix(matrix, dtype=np.float32), [str(c) for c in binarizer.classes_]


def text_matrix(
    titles: Sequence[str], tags: Sequence[Sequence[str]], *, min_df: int = 2
) -> sp.csr_matrix:
    """TF-IDF over each item's title words and tags (tags count as whole tokens too).

    Returns
    -------
    csr_matrix of shape (n_items, n_terms)
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    documents = [
        " ".join([title, *tag_list, *("tag_" + t.lower().replace(" ", "_") for t in tag_list)])
        for title, tag_list in zip(titles, tags, strict=True)
    ]
    vectorizer = TfidfVectorizer(min_df=min_df, sublinear_tf=True, dtype=np.float32)
    try:
        return sp.csr_matrix(vectorizer.fit_transform(documents))
    except ValueError:
        # Too few documents for min_df to leave any term: no text signal rather than failure.
        return sp.csr_matrix((len(documents), 0), dtype=np.float32)


def attribute_matrix(
    attributes: Sequence[Mapping[str, float | int | None]],
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Standardise numeric attributes; a missing or NaN value becomes the column mean (0).

    Returns
    -------
    matrix : ndarray of shape (n_items, n_attributes)
    names : list of str
        Attribute of every column, sorted.
    """
    names = sorted({key for row in attributes for key in row})
    raw = np.full((len(attributes), len(names)), np.nan, dtype=np.float64)
    for i, row in enumerate(attributes):
        for j, name in enumerate(names):
            value = row.get(name)
            if value is not None:
                raw[i, j] = float(value)
    with np.errstate(all="ignore"):
        mean = np.nanmean(raw, axis=0) if len(attributes) else np.zeros(len(names))
        std = np.nanstd(raw, axis=0) if len(attributes) else np.ones(len(names))
    mean = np.nan_to_num(mean)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    scaled = np.nan_to_num((raw - mean) / std)
    return scaled.astype(np.float32), names


def split_attributes(
    attributes: Sequence[Mapping[str, object]],
) -> tuple[list[dict[str, float | None]], list[list[str]]]:
    """Numbers (and booleans, as 0/1) stay numeric; strings become ``name=value`` labels,
    which are encoded one-hot like categories."""
    numeric: list[dict[str, float | None]] = []
    labels: list[list[str]] = []
    for row in attributes:
        values: dict[str, float | None] = {}
        words: list[str] = []
        for name, value in row.items():
            if isinstance(value, bool | int | float):
                values[name] = float(value)
            elif isinstance(value, str) and value:
                words.append(f"{name}={value.strip().lower()}")
            else:
                values[name] = None
        numeric.append(values)
        labels.append(words)
    return numeric, labels


def build_item_embedding(
    item_ids: Sequence[str],
    titles: Sequence[str],
    categories: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]] | None = None,
    attributes: Sequence[Mapping[str, object]] | None = None,
    *,
    n_components: int = 64,
    weights: FeatureWeights | None = None,
    min_df: int = 2,
    seed: int = 42,
) -> ItemEmbedding:
    """Content embedding of a catalogue.

    Parameters
    ----------
    item_ids : sequence of str, length n_items
    titles : sequence of str, length n_items
    categories : sequence of sequences of str, length n_items
        Categories (genres) of every item.
    tags : sequence of sequences of str, length n_items, optional
        Free-text tags of every item.
    attributes : sequence of mappings str -> value, length n_items, optional
        Flat attributes: numbers and booleans are standardised (e.g. release year, price),
        strings are one-hot encoded with the categories (e.g. brand); missing keys are allowed.
    n_components : int
        Embedding size; capped below the number of feature columns.
    weights : FeatureWeights, optional
        Block weights.
    min_df : int
        Minimum number of items a text term must appear in.
    seed : int
        Seed of the randomized SVD.

    Returns
    -------
    ItemEmbedding
        Unit-norm float32 vectors, shape (n_items, d) with ``d <= n_components``.
    """
    n_items = len(item_ids)
    lengths = {len(titles), len(categories)}
    if tags is not None:
        lengths.add(len(tags))
    if attributes is not None:
        lengths.add(len(attributes))
    if lengths != {n_items}:
        raise ValueError("item_ids, titles, categories, tags and attributes must be equally long")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    w = weights or FeatureWeights()
    numeric_attributes, labels = split_attributes(attributes or [{} for _ in item_ids])
    labelled = [[*cats, *words] for cats, words in zip(categories, labels, strict=True)]
    blocks = [_block_rows_unit(category_matrix(labelled)[0], w.categories)]
    blocks.append(
        _block_rows_unit(text_matrix(titles, tags or [[] for _ in titles], min_df=min_df), w.text)
    )
    if attributes is not None:
        numeric, _ = attribute_matrix(numeric_attributes)
        # Divide by sqrt(columns) so the block's expected row norm is about its weight.
        scale = w.attributes / math.sqrt(max(numeric.shape[1], 1))
        blocks.append(sp.csr_matrix(numeric * scale))
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    features = sp.hstack(blocks, format="csr", dtype=np.float32)
    dims = min(n_components, features.shape[1] - 1, n_items - 1)
    if dims < 1:
        dense = features.toarray()
    else:
        svd = TruncatedSVD(n_components=dims, algorithm="randomized", random_state=seed)
        dense = svd.fit_transform(features)
    vectors = normalize(np.asarray(dense, dtype=np.float64), norm="l2", axis=1)
    return ItemEmbedding(item_ids=[str(i) for i in item_ids], vectors=vectors.astype(np.float32))
