"""The model artifact: the one format that training writes and serving reads.

A version is a directory ``<model_dir>/<version>/`` with two files:

- ``arrays.npz``: numpy arrays only, read with ``allow_pickle=False``: ``item_ids`` (str),
  ``item_factors`` (n_items, n_factors), ``popularity`` (n_items,), optionally
  ``item_embeddings`` (n_items, n_dims), plus the ALS parameters and blend weights as arrays;
- ``manifest.json``: format version, version name, parameters, metrics, training-data
  statistics (for drift checks) and the SHA-256 of ``arrays.npz``.

This module depends on numpy alone, so the API can import it without the training stack.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT_VERSION = 1
ARRAYS_FILE = "arrays.npz"
MANIFEST_FILE = "manifest.json"
REQUIRED_ARRAYS = ("item_ids", "item_factors", "popularity", "blend_weights", "als_float_params")


class ArtifactError(Exception):
    """An artifact that cannot be used: missing, corrupt, or of another format."""


@dataclass
class ModelArtifact:
    """A trained model as plain arrays and JSON."""

    version: str
    arrays: dict[str, npt.NDArray[Any]]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def item_ids(self) -> list[str]:
        return [str(i) for i in self.arrays["item_ids"].tolist()]

    @property
    def n_items(self) -> int:
        return int(self.arrays["item_ids"].shape[0])

    def validate(self) -> None:
        """Refuse arrays that do not fit together; the message names the problem."""
        missing = [name for name in REQUIRED_ARRAYS if name not in self.arrays]
        if missing:
            raise ArtifactError(f"artifact {self.version} lacks arrays {missing}")
        n_items = self.n_items
        for name in ("item_factors", "popularity", "item_embeddings"):
            array = self.arrays.get(name)
            if array is None:
                continue
            if array.shape[0] != n_items:
                raise ArtifactError(
                    f"artifact {self.version}: {name} has {array.shape[0]} rows for {n_items} items"
                )
            if not np.isfinite(array).all():
                raise ArtifactError(f"artifact {self.version}: {name} holds NaN or infinity")
        if self.arrays["item_factors"].ndim != 2:
            raise ArtifactError(f"artifact {self.version}: item_factors must be 2-dimensional")
        if len(set(self.item_ids)) != n_items:
            raise ArtifactError(f"artifact {self.version}: item ids are not unique")

    def save(self, model_dir: Path) -> tuple[Path, str]:
        """Write the artifact under ``model_dir/<version>``; returns (directory, sha256).

        Written into a temporary directory first and renamed, so a reader never sees half an
        artifact.
        """
        self.validate()
        final = model_dir / self.version
        if final.exists():
            raise ArtifactError(f"{final} already exists; versions are never overwritten")
        staging = model_dir / f".{self.version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        arrays_path = staging / ARRAYS_FILE
        with arrays_path.open("wb") as handle:
            np.savez(handle, **self.arrays)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        digest = sha256_file(arrays_path)
        manifest = {
            "format_version": self.format_version,
            "version": self.version,
            "created_at": self.created_at,
            "arrays_sha256": digest,
            "params": self.params,
            "metrics": self.metrics,
            "stats": self.stats,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(_jsonable(manifest), indent=2))
        os.replace(staging, final)
        return final, digest

    @classmethod
    def load(cls, directory: Path, expected_sha256: str | None = None) -> ModelArtifact:
        """Read and check an artifact; raises :class:`ArtifactError` when it is unusable."""
        manifest_path = directory / MANIFEST_FILE
        arrays_path = directory / ARRAYS_FILE
        if not manifest_path.is_file() or not arrays_path.is_file():
            raise ArtifactError(f"{directory} is not a model artifact (missing files)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{manifest_path} is unreadable: {exc}") from exc
        if not isinstance(manifest, dict):
            raise ArtifactError(f"{manifest_path} is not a JSON object")
        found = manifest.get("format_version")
        if found != FORMAT_VERSION:
            raise ArtifactError(
                f"{directory} has artifact format {found}; this code reads format "
                f"{FORMAT_VERSION}: retrain with this version"
            )
        digest = sha256_file(arrays_path)
        for wanted in (manifest.get("arrays_sha256"), expected_sha256):
            if wanted is not None and wanted != digest:
                raise ArtifactError(f"{arrays_path} is corrupt: its SHA-256 does not match")
        try:
            with np.load(arrays_path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"{arrays_path} is unreadable: {exc}") from exc
        if "version" not in manifest:
            raise ArtifactError(f"{manifest_path} names no version")
        artifact = cls(
            version=str(manifest["version"]),
            arrays=arrays,
            params=manifest.get("params", {}),
            metrics=manifest.get("metrics", {}),
            stats=manifest.get("stats", {}),
            created_at=manifest.get("created_at", ""),
        )
        artifact.validate()
        return artifact


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """JSON without NaN (not JSON) and without numpy scalars."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
