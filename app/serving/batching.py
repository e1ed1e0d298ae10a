"""Concurrent requests' scores from one matrix product.

Scoring one user against every item is a matrix-vector product that reads the whole item
matrix (tens of megabytes for 50,000 items) to do little arithmetic per byte. Requests that
arrive while a product runs wait for it to finish and are then scored together: one
matrix-matrix product reads the matrix once for all of them. Nobody waits for a batch to fill:
an idle process scores a lone request at once, and the batch grows only with the load.

The first waiting request leads: it takes every query pending at that moment, multiplies, hands
each request its row and leads the next batch if more arrived meanwhile. The BLAS call releases
the GIL, so the others queue up while it runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
MAX_BATCH = 64


@dataclass(eq=False)
class _Job:
    query: FloatArray
    done: threading.Event = field(default_factory=threading.Event)
    scores: FloatArray | None = None
    error: BaseException | None = None


class BatchedProduct:
    """``matrix @ query`` for many concurrent callers, computed together."""

    def __init__(self, matrix: FloatArray, max_batch: int = MAX_BATCH) -> None:
        self.matrix = matrix
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False

    def __call__(self, query: FloatArray) -> FloatArray:
        """This query's scores, shape ``(n_rows,)``; the same values as ``matrix @ query``
        up to float32 rounding."""
        job = _Job(np.asarray(query, dtype=np.float32))
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            if lead:
                self._leading = True
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.scores is not None
        return job.scores

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                if not batch:
                    self._leading = False
                    return
            try:
                if len(batch) == 1:
                    batch[0].scores = self.matrix @ batch[0].query
                else:
                    queries = np.stack([job.query for job in batch])
                    product = queries @ self.matrix.T  # (batch, n_rows), rows contiguous
                    for job, scores in zip(batch, product, strict=True):
                        job.scores = scores
            except BaseException as exc:  # every waiter must wake, with the error
                for job in batch:
                    job.error = exc
            for job in batch:
                job.done.set()
