"""Concurrent scoring shares matrix products, and a busy process computes trending once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.services import Services
from app.serving.batching import BatchedProduct
from app.serving.trending import Trending
from tests.conftest import make_settings


def test_concurrent_queries_get_their_own_exact_scores() -> None:
    """Many threads at once: each gets matrix @ its query, whatever batch it landed in."""
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((5_000, 40)).astype(np.float32)
    queries = rng.standard_normal((200, 40)).astype(np.float32)
    product = BatchedProduct(matrix, max_batch=16)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(product, queries))
    for query, scores in zip(queries, results, strict=True):
        np.testing.assert_allclose(scores, matrix @ query, rtol=1e-4, atol=1e-4)
    assert not product._pending
    assert not product._leading


def test_an_error_reaches_every_waiting_caller() -> None:
    """A failing product (a query of the wrong length) raises in its caller; the next works."""
    matrix = np.ones((10, 4), dtype=np.float32)
    product = BatchedProduct(matrix)
    with pytest.raises(ValueError, match=r"mismatch|shapes|aligned"):
        product(np.ones(3, dtype=np.float32))
    np.testing.assert_allclose(product(np.ones(4, dtype=np.float32)), np.full(10, 4.0))


def test_stale_trending_is_recomputed_by_one_request_at_a_time(services: Services) -> None:
    """Twenty threads ask at once for trending items with a stale cache: one recomputes, the
    others answer from the cached list meanwhile, and everybody gets a list."""
    trending = Trending(services.redis, make_settings(services.settings, trending_cache_seconds=60))
    computed = 0
    started = threading.Event()
    release = threading.Event()
    compute = trending._compute

    def slow_compute(now: float) -> list[tuple[str, float]]:
        nonlocal computed
        computed += 1
        started.set()
        release.wait(5)
        return compute(now)

    trending.ranked()  # a first list, then make it stale
    assert trending._cached is not None
    trending._cached = (trending._cached[0] - 3600, trending._cached[1])
    trending._compute = slow_compute  # type: ignore[method-assign]
    with ThreadPoolExecutor(max_workers=20) as pool:
        first = pool.submit(trending.ranked)
        assert started.wait(5)
        others = [pool.submit(trending.ranked) for _ in range(19)]
        answers = [f.result(timeout=5) for f in others]
        release.set()
        first.result(timeout=5)
    assert computed == 1
    assert all(isinstance(a, list) for a in answers)
