"""bench/api_quality.py on a tiny MovieLens-shaped folder: the bench's own functions, with the
app in process and `python -m training train` through its command-line entry point."""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.config import Settings, get_settings
from app.main import create_app
from app.services import Services
from tests.conftest import clear_tables, make_settings
from training.cli import cli

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

import api_quality

GENRES = ["Comedy", "Drama", "Horror"]


def write_tiny_movielens(folder: Path, users: int = 40, movies: int = 30) -> None:
    """Three tastes: each user rates eight movies of their genre and a few others."""
    rng = random.Random(3)
    folder.mkdir()
    with (folder / "movies.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["movieId", "title", "genres"])
        for movie in range(1, movies + 1):
            writer.writerow([movie, f"Movie {movie} ({1990 + movie})", GENRES[movie % 3]])
    with (folder / "ratings.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for user in range(1, users + 1):
            liked = [m for m in range(1, movies + 1) if m % 3 == user % 3]
            rated = dict.fromkeys(rng.sample(liked, 8) + rng.sample(range(1, movies + 1), 3))
            for movie in rated:
                stamp = 1_500_000_000 + rng.randrange(10**7)
                writer.writerow([user, movie, rng.choice([3.0, 4.0, 4.5, 5.0]), stamp])


class InProcessApi:
    """The bench's `Api` over the ASGI app."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        response = self.client.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
        return response.status_code, response.content

    def get_many(self, paths: Sequence[str]) -> list[tuple[int, bytes]]:
        return [(r.status_code, r.content) for r in map(self.client.get, paths)]


@pytest.fixture
def model_dir(
    settings: Settings, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """RECSYS_* pointing `python -m training` at the test's storage; models under tmp_path."""
    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)
    models = tmp_path / "models"
    monkeypatch.setenv("RECSYS_ENV", "test")
    monkeypatch.setenv("RECSYS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RECSYS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RECSYS_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("RECSYS_MODEL_DIR", str(models))
    get_settings.cache_clear()
    yield models
    get_settings.cache_clear()


def cli_train() -> str:
    result = CliRunner().invoke(cli, ["train", "--holdout-percent", "0", "--eval-users", "10"])
    return api_quality.version_from_output(result.exit_code, result.output)


@contextmanager
def fresh_service(settings: Settings, services: Services) -> Iterator[api_quality.Api]:
    """Empty storage and a newly started app, as each phase of the bench gets."""
    clear_tables(services)
    services.redis.flushdb()
    app_settings = make_settings(settings, model_poll_seconds=3600.0)
    with TestClient(create_app(app_settings)) as client:
        yield InProcessApi(client)


def test_phases_read_through_the_api_what_the_artifact_scores_offline(
    settings: Settings,
    services: Services,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every test user's list read through the API equals the offline top 10 of the artifact the
    CLI trained, for trained users and for users whose events arrived after training; the
    summary and the JSON report are built from them."""
    folder = tmp_path / "ml-tiny"
    write_tiny_movielens(folder)
    corpus = api_quality.Corpus.read(folder)
    assert len(corpus.split.train) + len(corpus.split.test) == len(corpus.events)
    held_out = corpus.held_out_users(0.2, seed=42)
    assert len(held_out) == 8
    folds = corpus.user_folds(5, seed=42)
    everybody = set(corpus.dataset.interactions.user_ids)
    assert set().union(*folds) == everybody  # every user left out once
    assert sum(len(f) for f in folds) == len(everybody)
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 1

    phases: dict[str, api_quality.Phase] = {}
    run: Callable[..., api_quality.Phase] = api_quality.run_phase
    with fresh_service(settings, services) as api:
        phases["all users"] = run("all users", api, cli_train, model_dir, corpus)
    with fresh_service(settings, services) as api:
        phases["fold-in"] = run("fold-in", api, cli_train, model_dir, corpus, held_out)

    everyone, fold_in = phases["all users"], phases["fold-in"]
    assert everyone.version != fold_in.version
    assert set(everyone.groups) == {"trained"}
    assert set(fold_in.groups) == {"trained", "held out"}
    assert set(fold_in.groups["held out"].users) <= held_out
    for phase in phases.values():
        assert phase.fallback_items == 0, "every list should be the personal ranking"
        for group in phase.groups.values():
            assert group.identical_lists == len(group.users) > 0
            assert group.http == group.offline
    summary = api_quality.summarise(everyone, [fold_in])
    assert summary["ndcg_difference"] == 0.0
    held = fold_in.groups["held out"]
    assert summary["fold_in_ratio"] == pytest.approx(
        held.http["ndcg@10"] / fold_in.groups["trained"].http["ndcg@10"]
    )
    assert summary["fold_in_ratio_same_users"] == pytest.approx(
        held.http["ndcg@10"] / api_quality.http_ndcg(everyone, held.users)
    )
    api_quality.print_table(everyone, [fold_in], summary)
    assert "difference +0.0000" in capsys.readouterr().out
    report = json.loads(json.dumps({n: p.as_dict() for n, p in phases.items()}, default=str))
    assert report["fold-in"]["groups"]["held out"]["users"] == len(held.users)


def test_a_failed_training_is_reported_with_its_output() -> None:
    """The bench stops with the command's output instead of reading a version that is not
    there."""
    with pytest.raises(RuntimeError, match="no events are stored"):
        api_quality.version_from_output(1, "no events are stored: load some first")
    assert api_quality.version_from_output(0, "version 2026-x1: promoted\n") == "2026-x1"
