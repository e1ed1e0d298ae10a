"""``train``: from everything stored to a registered, gated model version.

The gate compares versions on a fixed holdout: a deterministic hash of (user id, item id)
puts a share of all interactions aside for good. No version is ever trained on them, so the
candidate and the active version are judged on the same unseen data, both by folding the
users' other interactions in, exactly as the API does; one ALS fit per training.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import ArtifactStore, LocalArtifactStore
from app.config import Settings
from app.db.models import ModelVersion
from app.monitoring import drift
from app.monitoring.canary import CanaryStart, start_canary
from training.artifact import ArtifactError, ModelArtifact
from training.data import Interactions, ItemTable, count_events, load_interactions, load_items
from training.evaluation import Dataset, ModelChoice, ModelResult, build_hybrid, score_model, tune
from training.features import preload as preload_features
from training.recommenders import (
    ALSScorer,
    HybridScorer,
    PopularityScorer,
    fit_als,
    hybrid_from_arrays,
    hybrid_to_arrays,
)
from training.registry import CANDIDATE, GateDecision, Registry, decide

Log = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]
# promoted: active for everyone; candidate: the gate kept the active version; canary: served
# to a share of users first; held: passed the gate, but its canary could not start.
Outcome = Literal["promoted", "candidate", "canary", "held"]


class TrainingError(Exception):
    """Training cannot go on; the message says what to do."""


@dataclass
class TrainOptions:
    """How to train. ``choice`` None means: the active version's choice, else defaults."""

    choice: ModelChoice | None = None
    tune: bool = False
    trials: int = 20
    time_budget: float | None = None
    holdout_percent: float = 10.0
    eval_users: int = 1_000
    margin: float = 0.0
    force: bool = False
    seed: int = 42
    metric: str = "ndcg@10"
    # With RECSYS_CANARY_SHARE > 0 here, a version the gate promotes over an active one goes
    # out as a canary first (unless ``force``); without settings it is promoted at once.
    settings: Settings | None = None


@dataclass
class TrainResult:
    version: str
    path: Path
    metrics: dict[str, Any]
    decision: GateDecision
    timings: dict[str, float] = field(default_factory=dict)
    # What the registry names: ``path`` itself, or ``database:<version>``.
    location: str = ""
    outcome: Outcome = "candidate"
    # The canary started (or held) instead of promoting.
    canary: CanaryStart | None = None


def _stable_hashes(ids: list[str]) -> npt.NDArray[np.uint64]:
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def holdout_mask(inter: Interactions, percent: float) -> npt.NDArray[np.bool_]:
    """True for events of the (user, item) pairs in the fixed holdout.

    The same pair is always in or out, whatever else is stored and whenever it is asked.
    """
    if percent <= 0 or len(inter) == 0:
        return np.zeros(len(inter), dtype=bool)
    users = _stable_hashes(inter.user_ids)[inter.users]
    items = _stable_hashes(inter.item_ids)[inter.items]
    with np.errstate(over="ignore"):
        mixed = users * np.uint64(0x9E3779B97F4A7C15) ^ items
        mixed = mixed * np.uint64(0xBF58476D1CE4E5B9)
    bucket = (mixed >> np.uint64(32)) % np.uint64(10_000)
    return np.asarray(bucket < np.uint64(round(percent * 100)), dtype=bool)


def new_version_name(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def remap_artifact(artifact: ModelArtifact, item_ids: list[str]) -> HybridScorer:
    """An older version's model on today's item index (new items get zero factors)."""
    arrays = dict(artifact.arrays)
    position = {item_id: i for i, item_id in enumerate(item_ids)}
    old_rows, new_rows = [], []
    for old, item_id in enumerate(artifact.item_ids):
        new = position.get(item_id)
        if new is not None:
            old_rows.append(old)
            new_rows.append(new)
    for name in ("item_factors", "item_embeddings", "popularity"):
        if name in arrays:
            source = arrays[name]
            target = np.zeros((len(item_ids), *source.shape[1:]), dtype=source.dtype)
            target[new_rows] = source[old_rows]
            arrays[name] = target
    return hybrid_from_arrays(arrays)


def statistics(inter: Interactions, n_catalogue: int) -> dict[str, Any]:
    """Training-data figures that drift checks compare live traffic against."""
    per_user = np.bincount(inter.users, minlength=inter.n_users)
    per_item = np.bincount(inter.items, minlength=inter.n_items)
    counts = np.bincount(inter.types[inter.types >= 0], minlength=len(inter.type_names))
    top = np.sort(per_item)[::-1]
    window = inter.window
    return {
        "n_events": len(inter),
        "n_users": inter.n_users,
        "n_items": inter.n_items,
        "n_catalogue": n_catalogue,
        "event_type_share": {
            name: float(counts[i] / max(len(inter), 1)) for i, name in enumerate(inter.type_names)
        },
        "events_per_user": {
            "mean": float(per_user.mean()) if per_user.size else 0.0,
            "p50": float(np.percentile(per_user, 50)) if per_user.size else 0.0,
            "p90": float(np.percentile(per_user, 90)) if per_user.size else 0.0,
        },
        "top_1pct_item_share": float(top[: max(1, len(top) // 100)].sum() / max(top.sum(), 1)),
        "items_with_events": int((per_item > 0).sum()),
        "data_from": window[0].isoformat() if window[0] else None,
        "data_until": window[1].isoformat() if window[1] else None,
    }


def top_scores(
    scorer: HybridScorer, history: Any, users: npt.NDArray[np.int64], k: int = 10
) -> npt.NDArray[np.float64]:
    """The scores of the top-``k`` unseen items of each of ``users``: the score distribution
    that drift compares served lists against."""
    out: list[npt.NDArray[np.float64]] = []
    for start in range(0, len(users), 256):
        batch = users[start : start + 256]
        scores = np.asarray(scorer.score(batch, history[batch]), dtype=np.float64)
        seen = history[batch].tocoo()
        scores[seen.row, seen.col] = -np.inf
        kth = min(k, scores.shape[1])
        top = -np.partition(-scores, kth - 1, axis=1)[:, :kth]
        out.append(top[np.isfinite(top)])
    return np.concatenate(out) if out else np.zeros(0)


def drift_reference(
    inter: Interactions, items: ItemTable, popularity: Any, scores: Any
) -> dict[str, Any]:
    """The reference of ``app.monitoring.drift`` for a version trained on ``inter``."""
    index = items.index
    rows = [index.get(item_id) for item_id in inter.item_ids]
    return drift.reference(
        type_names=inter.type_names,
        types=inter.types,
        users=inter.users,
        items=inter.items,
        timestamps=inter.timestamps,
        popularity=popularity,
        item_categories=[items.categories[r] if r is not None else [] for r in rows],
        item_attributes=[items.attributes[r] if r is not None else {} for r in rows],
        scores=scores,
    )


def train(
    engine: Engine,
    sessions: sessionmaker[Session],
    event_weights: dict[str, float],
    model_dir: Path,
    options: TrainOptions,
    log: Log = lambda _line: None,
    progress: Progress | None = None,
    artifacts: ArtifactStore | None = None,
) -> TrainResult:
    """Train a candidate from every stored event, register it and apply the gate.

    The artifact is saved under ``model_dir`` and kept by ``artifacts`` (the local folder by
    default); its files and its registry row are committed together."""
    artifacts = artifacts or LocalArtifactStore()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    preload_features()
    registry = Registry(sessions)
    items = load_items(engine)
    total = count_events(engine)
    if total == 0:
        raise TrainingError(
            "no events are stored: load some first (`python -m training demo-data`, "
            "`python -m training import-movielens FOLDER`, or POST /v1/events)"
        )

    def report_rows(done: int) -> None:
        if progress is not None:
            progress("read events", done, total)

    inter = load_interactions(engine, event_weights, item_ids=items.ids, progress=report_rows)
    lap("read")
    dataset = Dataset(inter, items, seed=options.seed)
    held = holdout_mask(inter, options.holdout_percent)
    all_rows = np.arange(len(inter), dtype=np.int64)
    train_rows, holdout_rows = all_rows[~held], all_rows[held]
    log(
        f"{len(inter):,} events, {inter.n_users:,} users, {inter.n_items:,} items; "
        f"{len(holdout_rows):,} events in the fixed {options.holdout_percent:g}% holdout"
    )

    active = registry.active()
    choice = options.choice
    if choice is None and active is not None and "choice" in active.params:
        choice = ModelChoice.from_dict(active.params["choice"])
        log(f"parameters of the active version {active.version}")
    if options.tune:
        choice, _ = tune(
            dataset,
            train_rows,
            trials=options.trials,
            time_budget=options.time_budget,
            start=choice,
            log=log,
        )
        lap("tune")
    choice = choice or ModelChoice()

    history = dataset.matrix(train_rows, choice.values)
    lap("matrix")

    def report_iteration(done: int) -> None:
        if progress is not None:
            progress("ALS iterations", done, choice.als.iterations)

    als = fit_als(history, choice.als, on_iteration=report_iteration)
    lap("fit")
    model = build_hybrid(dataset, train_rows, choice, als=als)
    lap("content")

    # Both versions are judged like the API serves them: users folded in from their history.
    served = HybridScorer(
        ALSScorer(als.item_factors, None, als.params),
        model.content,
        model.popularity,
        model.weights,
    )
    relevant = dataset.relevant(holdout_rows)
    rng = np.random.default_rng(options.seed)
    candidates = np.flatnonzero(np.diff(relevant.indptr) > 0)
    users = np.sort(
        rng.choice(candidates, size=min(options.eval_users, len(candidates)), replace=False)
    )
    metrics: dict[str, Any] = {"holdout_percent": options.holdout_percent}
    reference_scores: npt.NDArray[np.float64] = np.zeros(0)
    if len(users):
        baseline = score_model(
            PopularityScorer(model.popularity.popularity), history, relevant, users
        )
        mine = score_model(served, history, relevant, users)
        metrics["validation"] = mine.as_dict()
        reference_scores = top_scores(served, history, users)
        metrics["validation_popularity"] = baseline.as_dict()
        log(f"holdout: {_describe(mine)}; popularity {_describe(baseline)}")
    lap("evaluate")

    active_metrics: dict[str, float] | None = None
    if active is not None and len(users):
        try:
            previous = artifacts.load(active.artifact_path, active.artifact_sha256)
            old = remap_artifact(previous, inter.item_ids)
            old_choice = ModelChoice.from_dict(previous.params.get("choice", {}))
            old_history = dataset.matrix(train_rows, old_choice.values)
            active_metrics = score_model(old, old_history, relevant, users).as_dict()
            log(
                f"active {active.version} on the same holdout: ndcg@10 "
                f"{active_metrics['ndcg@10']:.4f}"
            )
        except (ArtifactError, KeyError, ValueError) as exc:
            log(f"the active version {active.version} cannot be evaluated: {exc}")
    lap("evaluate active")

    now = datetime.now(UTC)
    version = new_version_name(now)
    arrays = hybrid_to_arrays(model)
    arrays["item_ids"] = np.asarray(inter.item_ids)
    stats = statistics(inter, len(items))
    stats["drift"] = drift_reference(inter, items, model.popularity.popularity, reference_scores)
    lap("reference")
    artifact = ModelArtifact(
        version=version,
        arrays=arrays,
        params={"choice": choice.as_dict(), "event_weights": dict(event_weights)},
        metrics=metrics,
        stats=stats,
        created_at=now.isoformat(),
    )
    path, digest = artifact.save(model_dir)
    lap("save")
    window = inter.window
    row = ModelVersion(
        version=version,
        created_at=now,
        status=CANDIDATE,
        data_from=window[0],
        data_until=window[1],
        n_events=len(inter),
        n_users=inter.n_users,
        n_items=inter.n_items,
        params=artifact.params,
        metrics=metrics,
        artifact_path=str(path.resolve()),
        artifact_sha256=digest,
    )
    location = registry.add(row, directory=path, artifacts=artifacts)
    lap("store")
    decision = decide(
        metrics.get("validation", {}),
        active_metrics,
        active.version if active is not None else None,
        metric=options.metric,
        margin=options.margin,
        force=options.force,
    )
    registry.record_gate(version, decision)
    outcome: Outcome = "candidate"
    canary: CanaryStart | None = None
    settings = options.settings
    if decision.promote:
        if (
            active is not None
            and settings is not None
            and settings.canary_share > 0
            and not options.force
        ):
            canary = start_canary(settings, sessions, version, active.version, artifacts=artifacts)
            outcome = "canary" if canary.started else "held"
            log(f"canary {canary.state}: {canary.reason}")
        else:
            registry.promote(version)
            outcome = "promoted"
    lap("register")
    return TrainResult(version, path, metrics, decision, timings, location, outcome, canary)


def _describe(result: ModelResult) -> str:
    return (
        f"nDCG@10 {result.ndcg:.4f}, P@10 {result.precision:.4f}, R@10 {result.recall:.4f}, "
        f"MAP {result.map:.4f} over {result.users:,} users"
    )


__all__ = ["TrainOptions", "TrainResult", "TrainingError", "holdout_mask", "train"]
