"""A trained model as serving holds it: the artifact's arrays plus everything per-request
scoring would otherwise recompute.

The math mirrors ``training.recommenders`` (``fold_in_user``, ``ContentScorer``,
``HybridScorer.components``, ``blend_scores``) one user at a time; ``tests/serving`` proves the
scores equal. Serving may not import that module, hence the copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.serving.batching import BatchedProduct
from training.artifact import ArtifactError, ModelArtifact

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
ValueScheme = Literal["binary", "weighted"]
COMPONENTS = ("als", "content", "popularity")
# The order of ``als_float_params`` in the artifact (training.recommenders._FLOAT_FIELDS).
FLOAT_PARAMS = ("regularization", "alpha", "log_epsilon", "bm25_k1", "bm25_b")


def unit_rows(matrix: npt.NDArray[Any]) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def standardize(scores: npt.ArrayLike) -> FloatArray:
    """Z-score of a score vector; a constant vector becomes zeros (as training's
    ``standardize_rows``)."""
    work = np.asarray(scores, dtype=np.float64)
    spread = work.std(axis=-1, keepdims=True)
    centred = work - work.mean(axis=-1, keepdims=True)
    return np.asarray(centred / np.where(spread > 0, spread, 1.0), dtype=np.float32)


@dataclass(frozen=True)
class UserRow:
    """One user's row of the users x items matrix, in model item indices.

    ``values`` are what training's ``Dataset.matrix`` stores (1 per item for the binary scheme,
    summed event weights for the weighted one); content scoring uses them as they are, ALS
    through the model's confidence scheme.
    """

    items: IntArray
    values: npt.NDArray[np.float32]

    @property
    def empty(self) -> bool:
        return bool(self.items.shape[0] == 0)


@dataclass(frozen=True)
class Query:
    """One user's query against a :class:`LinearBlend`: the blended score of item ``i`` is
    ``primary[i] @ main + content[i] @ content + offset``."""

    main: FloatArray
    content: FloatArray | None
    offset: float

    @property
    def content_bound(self) -> float:
        """The most the content part can add to or take from any item's score: embeddings are
        unit length, so ``|e_i . q| <= |q|``."""
        return 0.0 if self.content is None else float(np.linalg.norm(self.content))


@dataclass(frozen=True, eq=False)
class LinearBlend:
    """The blended score of every item as inner products.

    Each component is linear in a per-user vector: ALS scores are ``Y x`` (a cold item's
    row replaced by the mean warm row, which scores exactly the mean warm ALS score that
    ``components`` gives it), content scores ``E p``. Their z-scores over all items need only
    the mean and covariance of the rows: ``mean = mu . x`` and ``var = x^T C x``. So

        score_i = w_als (y_i - mu_Y) . x / s_als + w_content (e_i - mu_E) . p / s_content
                  + w_popularity * z(log1p(popularity))_i

    is ``[y_i, z_i] . [w_als x / s_als, w_popularity] + e_i . (w_content p / s_content)`` plus
    a constant: the exact scores of :meth:`ServingModel.score`. ``primary`` holds
    ``[Y_eff | z]``, ``content`` the unit embeddings ``E``.
    """

    primary: FloatArray  # (n_items, n_factors + 1): [Y_eff | z(log1p(popularity))]
    content: FloatArray | None  # (n_items, n_dims), unit rows
    als_mean: npt.NDArray[np.float64]
    als_cov: npt.NDArray[np.float64]
    content_mean: npt.NDArray[np.float64] | None
    content_cov: npt.NDArray[np.float64] | None

    @classmethod
    def build(
        cls,
        factors: FloatArray,
        cold: npt.NDArray[np.bool_],
        unit_embeddings: FloatArray | None,
        popularity: FloatArray,
    ) -> LinearBlend:
        effective = factors.astype(np.float64)
        if cold.any() and not cold.all():
            effective[cold] = effective[~cold].mean(axis=0)
        als_mean, als_cov = _mean_cov(effective)
        primary = np.empty((factors.shape[0], factors.shape[1] + 1), dtype=np.float32)
        primary[:, :-1] = effective
        primary[:, -1] = standardize(np.log1p(popularity))
        content_mean = content_cov = None
        if unit_embeddings is not None:
            content_mean, content_cov = _mean_cov(unit_embeddings.astype(np.float64))
        return cls(
            primary=primary,
            content=unit_embeddings,
            als_mean=als_mean,
            als_cov=als_cov,
            content_mean=content_mean,
            content_cov=content_cov,
        )

    def query(
        self, user_factors: FloatArray, content: FloatArray | None, weights: Mapping[str, float]
    ) -> Query:
        main = np.zeros(self.primary.shape[1], dtype=np.float64)
        offset = 0.0
        x = user_factors.astype(np.float64)
        spread = math.sqrt(max(float(x @ self.als_cov @ x), 0.0))
        if weights.get("als") and spread > 0:
            main[:-1] = weights["als"] * x / spread
            offset -= weights["als"] * float(self.als_mean @ x) / spread
        main[-1] = weights.get("popularity", 0.0)
        content_query = None
        if (
            content is not None
            and weights.get("content")
            and self.content_mean is not None
            and self.content_cov is not None
        ):
            p = content.astype(np.float64)
            spread = math.sqrt(max(float(p @ self.content_cov @ p), 0.0))
            if spread > 0:
                content_query = (weights["content"] * p / spread).astype(np.float32)
                offset -= weights["content"] * float(self.content_mean @ p) / spread
        return Query(main.astype(np.float32), content_query, offset)


def _mean_cov(
    rows: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean row and population covariance (``ddof=0``, as ``np.std`` in :func:`standardize`)."""
    mean = rows.mean(axis=0)
    centred = rows - mean
    return mean, centred.T @ centred / rows.shape[0]


# The head of the norm order: a sixth of the items, at least HEAD_MIN; none when that would
# be half the catalogue or more (the full product is cheap there).
HEAD_MIN = 4096
HEAD_SHARE = 6


@dataclass(frozen=True, eq=False)
class Head:
    """The items with the longest rows of ``blend.primary``'s factor part, copied together.

    An item's primary score is ``y_i . a + z_i b`` (``a`` the query's factor part, ``b`` its
    popularity weight), at most ``|y_i| |a| + z_i b``. So when even the best such bound of
    the items outside the head stays below the ``size``-th best score inside it, less the
    content part's reach both ways, no outside item can make the list: the list is the
    head's, exactly, from a product over a sixth of the matrix. For trained ALS factors the
    long rows are the items most users score high; the others fall back to the full product.
    """

    items: IntArray  # model indices, longest factor row first
    product: BatchedProduct  # over primary[items]
    rest_norm: float  # the longest factor row outside the head
    rest_z_max: float  # the largest and smallest popularity z-score outside the head
    rest_z_min: float

    @classmethod
    def build(cls, primary: FloatArray, size: int | None = None) -> Head | None:
        n = primary.shape[0]
        if size is None:
            size = max(HEAD_MIN, n // HEAD_SHARE)
            if 2 * size >= n:
                return None
        if size <= 0 or size >= n:
            return None
        norms = np.linalg.norm(primary[:, :-1].astype(np.float64), axis=1)
        order = np.argsort(-norms, kind="stable")
        items, rest = np.sort(order[:size]), order[size:]
        z = primary[rest, -1].astype(np.float64)
        return cls(
            items=items,
            product=BatchedProduct(np.ascontiguousarray(primary[items])),
            rest_norm=float(norms[rest].max()),
            rest_z_max=float(z.max()),
            rest_z_min=float(z.min()),
        )

    def rest_bound(self, main: FloatArray) -> float:
        """The most any item outside the head can score on the primary part."""
        a = float(np.linalg.norm(main[:-1].astype(np.float64)))
        b = float(main[-1])
        return a * self.rest_norm + b * (self.rest_z_max if b >= 0 else self.rest_z_min)


@dataclass(frozen=True, eq=False)
class ServingModel:
    """Everything needed to score any user against every item of one model version.

    The item factors are not kept as an array of their own: ``blend.primary`` holds them
    already, except for the rows of cold items, which it replaces by the mean warm row. Those
    few original rows are kept in ``cold_factors`` (unless all are zero); :meth:`factors_of`
    puts them back.

    Attributes
    ----------
    factor_norms : ndarray of float32, shape (n_items,)
        Length of every item's factor row (cold items' original rows).
    cold_items : ndarray of int64, shape (n_cold,)
        The indices of the cold items (popularity <= 0), ascending.
    cold_factors : ndarray of float32, shape (n_cold, n_factors), or None
        Their factor rows as the artifact has them; None when every one is zero, as implicit
        leaves an item without interactions.
    system : ndarray of float64, shape (n_factors, n_factors)
        ``Y^T Y + regularization * I``, the part of every fold-in system that no user changes.
    unit_embeddings : ndarray of float32, shape (n_items, n_dims), or None
    popularity : ndarray of float32, shape (n_items,)
    """

    version: str
    created_at: str
    item_ids: list[str]
    index: dict[str, int]
    factor_norms: npt.NDArray[np.float32]
    cold_items: IntArray
    cold_factors: FloatArray | None
    system: npt.NDArray[np.float64]
    alpha: float
    confidence: Literal["linear", "log"]
    log_epsilon: float
    unit_embeddings: FloatArray | None
    popularity: FloatArray
    cold: npt.NDArray[np.bool_]
    weights: dict[str, float]
    value_scheme: ValueScheme
    event_weights: dict[str, float]
    blend: LinearBlend
    product: BatchedProduct
    head: Head | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # What drift compares live events with (``app.monitoring.drift``); None before it existed.
    drift_reference: dict[str, Any] | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_factors(self) -> int:
        return int(self.blend.primary.shape[1] - 1)

    @property
    def warm_factors(self) -> FloatArray:
        """The factors as ``blend.primary`` holds them, shape (n_items, n_factors): a view,
        exact for warm items, the mean warm row for cold ones."""
        return self.blend.primary[:, :-1]

    def factors_of(self, items: IntArray) -> FloatArray:
        """The artifact's factor rows of ``items``, shape (len(items), n_factors), cold items'
        included."""
        rows = self.blend.primary[items, :-1]
        cold = self.cold[items]
        if cold.any():
            if self.cold_factors is None:
                rows[cold] = 0.0
            else:
                rows[cold] = self.cold_factors[np.searchsorted(self.cold_items, items[cold])]
        return rows

    @classmethod
    def from_artifact(cls, artifact: ModelArtifact, head_size: int | None = None) -> ServingModel:
        """Build from a loaded artifact; :class:`ArtifactError` when serving cannot use it.

        ``head_size``: items in the :class:`Head` (default: a sixth, at least ``HEAD_MIN``,
        none for small catalogues); 0 for none.
        """
        artifact.validate()
        arrays = artifact.arrays
        name = artifact.version
        factors = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        floats = np.asarray(arrays["als_float_params"], dtype=np.float64).ravel().tolist()
        if len(floats) != len(FLOAT_PARAMS):
            raise ArtifactError(f"artifact {name}: als_float_params has {len(floats)} values")
        params = dict(zip(FLOAT_PARAMS, floats, strict=True))
        confidence = str(arrays["confidence"]) if "confidence" in arrays else "linear"
        if confidence not in ("linear", "log"):
            # bm25 weights depend on the whole training matrix: one live user's row cannot be
            # weighted as training weighted it, so the scores would not be the evaluated ones.
            raise ArtifactError(
                f"artifact {name}: confidence scheme {confidence!r} cannot be folded in one user "
                "at a time; serving supports linear and log"
            )
        blend = np.asarray(arrays["blend_weights"], dtype=np.float64).ravel().tolist()
        if len(blend) != len(COMPONENTS) or not all(math.isfinite(w) for w in blend):
            raise ArtifactError(f"artifact {name}: blend_weights must be 3 finite numbers")
        weights = dict(zip(COMPONENTS, blend, strict=True))
        embeddings = arrays.get("item_embeddings")
        if embeddings is None and weights["content"]:
            raise ArtifactError(f"artifact {name}: a content weight needs item_embeddings")
        choice = artifact.params.get("choice") or {}
        scheme = choice.get("values", "binary")
        if scheme not in ("binary", "weighted"):
            raise ArtifactError(f"artifact {name}: unknown value scheme {scheme!r}")
        event_weights = {
            str(k): float(v) for k, v in (artifact.params.get("event_weights") or {}).items()
        }
        if scheme == "weighted" and not event_weights:
            raise ArtifactError(f"artifact {name}: the weighted scheme needs params.event_weights")

        y64 = factors.astype(np.float64)
        # Training keeps Y^T Y as float32 (ALSScorer.gram); rounding it the same way makes both
        # solve the very same system.
        gram = (y64.T @ y64).astype(np.float32).astype(np.float64)
        system = gram + params["regularization"] * np.eye(factors.shape[1])
        popularity = np.asarray(arrays["popularity"], dtype=np.float32)
        item_ids = artifact.item_ids
        cold = popularity <= 0
        cold_items = np.flatnonzero(cold)
        cold_rows = factors[cold_items]
        # implicit leaves items without interactions at zero: then there is nothing to keep
        # (+0.0 only, so that factors_of gives back the very bits).
        cold_factors = cold_rows if cold_rows.view(np.uint32).any() else None
        unit_embeddings = None if embeddings is None else unit_rows(embeddings)
        linear = LinearBlend.build(factors, cold, unit_embeddings, popularity)
        return cls(
            version=artifact.version,
            created_at=artifact.created_at,
            item_ids=item_ids,
            index={item_id: i for i, item_id in enumerate(item_ids)},
            factor_norms=np.linalg.norm(factors, axis=1).astype(np.float32),
            cold_items=cold_items,
            cold_factors=cold_factors,
            system=system,
            alpha=params["alpha"],
            confidence="log" if confidence == "log" else "linear",
            log_epsilon=params["log_epsilon"],
            unit_embeddings=unit_embeddings,
            popularity=popularity,
            cold=cold,
            weights=weights,
            value_scheme=scheme,
            event_weights=event_weights,
            blend=linear,
            product=BatchedProduct(linear.primary),
            head=None if head_size == 0 else Head.build(linear.primary, head_size),
            metrics=dict(artifact.metrics),
            drift_reference=(artifact.stats or {}).get("drift"),
        )

    # -- scoring -----------------------------------------------------------------------------

    def fold_in(self, row: UserRow) -> FloatArray:
        """The user's ALS factors, shape (n_factors,): training's ``fold_in_user``.

        Solves ``(Y^T Y + reg I + sum_i (|c_i| - 1) y_i y_i^T) x = sum_{c_i > 0} c_i y_i`` with
        ``c_i = alpha * confidence(value_i)``; a negative value is a confident "no".
        """
        if row.empty:
            return np.zeros(self.n_factors, dtype=np.float32)
        values = row.values.astype(np.float32)
        if self.confidence == "log":
            values = np.log1p(values / self.log_epsilon).astype(np.float32)
        conf = self.alpha * values.astype(np.float64)
        rows = self.factors_of(row.items).astype(np.float64)
        weight = np.abs(conf) - 1.0
        lhs = self.system + (rows * weight[:, None]).T @ rows
        rhs = np.where(conf > 0, conf, 0.0) @ rows
        return np.linalg.solve(lhs, rhs).astype(np.float32)

    def content_profile(self, row: UserRow) -> FloatArray | None:
        """Unit-length sum of the row's item embeddings weighted by its values; None without
        embeddings."""
        if self.unit_embeddings is None:
            return None
        summed = row.values.astype(np.float32) @ self.unit_embeddings[row.items]
        return unit_rows(summed)

    def components(self, row: UserRow) -> dict[str, FloatArray]:
        """Raw ALS and content scores of every item, each of shape (n_items,)."""
        als = np.asarray(self.fold_in(row) @ self.warm_factors.T, dtype=np.float32)
        # An item nobody interacted with in training has meaningless factors: give it the
        # user's mean so that content and popularity decide its rank (as HybridScorer does).
        # The mean row that warm_factors holds for it is thus never used.
        if self.cold.any() and not self.cold.all():
            als[self.cold] = als[~self.cold].mean()
        out = {"als": als}
        profile = self.content_profile(row)
        if profile is not None and self.unit_embeddings is not None:
            out["content"] = np.asarray(profile @ self.unit_embeddings.T, dtype=np.float32)
        return out

    def score(self, row: UserRow, weights: Mapping[str, float] | None = None) -> FloatArray:
        """Blended score of every item for one user, shape (n_items,).

        ``weights`` overrides the artifact's blend weights.
        """
        query = self.query(row, weights)
        scores = self.product(query.main)
        if query.content is not None and self.blend.content is not None:
            scores += self.blend.content @ query.content
        scores += np.float32(query.offset)
        return scores

    def top(
        self,
        row: UserRow,
        allowed: npt.NDArray[np.bool_],
        size: int,
        weights: Mapping[str, float] | None = None,
    ) -> tuple[IntArray, FloatArray]:
        """The ``size`` best allowed items and their blended scores, best first (ties to the
        lower index): exactly what ranking :meth:`score` gives, reading less.

        The primary part (ALS and popularity) is scored for the :class:`Head` first, and for
        every item only when an item outside it might make the list; the content part moves a
        score by at most ``query.content_bound`` either way, so only items whose best case
        reaches the ``size``-th best worst case can make the list, and only those get their
        content part computed.
        """
        query = self.query(row, weights)
        found = self._top_in_head(query, allowed, size)
        if found is not None:
            return found
        scores = self.product(query.main)
        scores[~allowed] = -np.inf
        eligible = int(np.count_nonzero(allowed))
        bound = query.content_bound
        if eligible > size:
            threshold = np.partition(scores, scores.size - size)[scores.size - size] - bound
            candidates = np.flatnonzero(scores >= threshold - bound)
        else:
            candidates = np.flatnonzero(allowed)
        return self._best(query, candidates, scores[candidates], size)

    def _best(
        self, query: Query, candidates: IntArray, primary: FloatArray, size: int
    ) -> tuple[IntArray, FloatArray]:
        """The ``size`` best of ``candidates`` (model indices, ascending) by their exact score
        (``primary`` plus the content part and the offset), best first, ties to the lower
        index."""
        exact = primary
        if query.content is not None and self.blend.content is not None:
            exact += self.blend.content[candidates] @ query.content
        exact += np.float32(query.offset)
        if candidates.size > size:
            keep = np.argpartition(-exact, size - 1)[:size]
            candidates, exact = candidates[keep], exact[keep]
        order = np.lexsort((candidates, -exact))
        return candidates[order], exact[order]

    def _top_in_head(
        self, query: Query, allowed: npt.NDArray[np.bool_], size: int
    ) -> tuple[IntArray, FloatArray] | None:
        """:meth:`top` from the head's product alone, or None when an item outside the head
        might make the list (see :class:`Head`)."""
        head = self.head
        if head is None:
            return None
        scores = head.product(query.main)
        scores[~allowed[head.items]] = -np.inf
        if int(np.count_nonzero(np.isfinite(scores))) <= size:
            return None
        kth = float(np.partition(scores, scores.size - size)[scores.size - size])
        bound = query.content_bound
        # A margin for the float32 rounding of the products against the float64 bound.
        margin = 1e-4 * (abs(kth) + abs(head.rest_bound(query.main)) + 1.0)
        if not head.rest_bound(query.main) + margin < kth - 2 * bound:
            return None
        local = np.flatnonzero(scores >= kth - 2 * bound)
        return self._best(query, head.items[local], scores[local], size)

    def query(self, row: UserRow, weights: Mapping[str, float] | None = None) -> Query:
        """The user's query against :attr:`blend` (see :class:`LinearBlend`)."""
        use = self.weights if weights is None else {**self.weights, **weights}
        return self.blend.query(self.fold_in(row), self.content_profile(row), use)

    # -- item-item ---------------------------------------------------------------------------

    def similar_scores(self, item: int) -> FloatArray:
        """Every item's similarity to ``item``: z-scored ALS cosine and content cosine,
        weighted by the model's ALS and content weights; a component the item lacks (no
        interactions in training, no embedding) is left out."""
        parts: list[tuple[float, FloatArray]] = []
        factors = self.warm_factors  # cold rows are overwritten below
        if not self.cold[item] and float(np.abs(factors[item]).sum()) > 0:
            cosine = (factors @ factors[item]) / np.maximum(
                self.factor_norms * self.factor_norms[item], 1e-12
            )
            if self.cold.any() and not self.cold.all():
                cosine[self.cold] = cosine[~self.cold].mean()
            parts.append((self.weights["als"], cosine))
        if self.unit_embeddings is not None:
            parts.append(
                (self.weights["content"], self.unit_embeddings @ self.unit_embeddings[item])
            )
        if not parts:
            return np.zeros(self.n_items, dtype=np.float32)
        if all(weight == 0 for weight, _ in parts):
            parts = [(1.0, scores) for _, scores in parts]
        total = np.zeros(self.n_items, dtype=np.float32)
        for weight, scores in parts:
            if weight:
                total += weight * standardize(scores)
        return total

    def nearest_of(self, candidates: IntArray, anchors: IntArray) -> IntArray:
        """For every candidate, the position in ``anchors`` of the most similar anchor (by
        content embedding, else by ALS factors)."""
        if self.unit_embeddings is not None:
            similarity = self.unit_embeddings[candidates] @ self.unit_embeddings[anchors].T
        else:
            similarity = (
                unit_rows(self.factors_of(candidates)) @ unit_rows(self.factors_of(anchors)).T
            )
        return np.asarray(similarity.argmax(axis=1), dtype=np.int64)
