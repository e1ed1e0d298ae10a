"""Every command of `python -m training`, run end to end against the test database and Redis."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import func, select, update
from typer.testing import CliRunner

import training.cli as training_cli
import training.cli_shared as training_cli_shared
import training.import_cli as training_import_cli
from app.config import Settings, get_settings
from app.db.models import Event, ModelVersion, TrainingRun
from app.services import Services
from tests.conftest import count_rows
from training import demo
from training.cli import cli
from training.loading import load_events
from training.registry import ACTIVE, CANDIDATE, RETIRED, Registry

runner = CliRunner()
SMALL = ("--users", "200", "--items", "80", "--events", "3000")
SMALL_SPEC = demo.DemoSpec(users=200, items=80, events=3000)


@pytest.fixture
def cli_env(
    settings: Settings,
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """RECSYS_* pointing the command line at the (emptied) test database and Redis, models
    under tmp_path; the working directory is tmp_path so nothing lands in the project.
    Yields the model directory."""
    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)
    model_dir = tmp_path / "models"
    monkeypatch.setenv("RECSYS_ENV", "test")
    monkeypatch.setenv("RECSYS_DATABASE_URL", settings.database_url)
    # Empty on SQLite: the embedded server under RECSYS_VAR_DIR, the session's one.
    monkeypatch.setenv("RECSYS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RECSYS_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("RECSYS_MODEL_DIR", str(model_dir))
    monkeypatch.chdir(tmp_path)
    # A wide terminal, so tables and messages come out unwrapped; 80 columns has its own test.
    for module in (training_cli, training_import_cli, training_cli_shared):
        monkeypatch.setattr(module, "out", Console(width=200))
        monkeypatch.setattr(module, "console", Console(width=200, stderr=True))
    get_settings.cache_clear()
    yield model_dir
    get_settings.cache_clear()


def run(*args: str) -> Any:
    result = runner.invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def report_row(output: str, title: str) -> tuple[int, int, int, int]:
    """(read, accepted, duplicates, rejected) from the load report table named ``title``."""
    lines = output.splitlines()
    start = next(k for k, line in enumerate(lines) if line.strip() == title)
    for line in lines[start + 1 :]:
        numbers = re.findall(r"\d[\d,]*", line)
        if len(numbers) == 4:
            read, accepted, duplicates, rejected = (int(n.replace(",", "")) for n in numbers)
            return read, accepted, duplicates, rejected
    raise AssertionError(f"no {title} report in:\n{output}")


def statuses(services: Services) -> dict[str, str]:
    return {v.version: v.status for v in Registry(services.sessions).all()}


@pytest.fixture
def shop(cli_env: Path, services: Services) -> Services:
    """The small demo shop, loaded by `demo-data`."""
    result = run("demo-data", *SMALL)
    assert result.exit_code == 0, result.output
    return services


# -- help --------------------------------------------------------------------------------------

COMMANDS = [
    ([], ["demo-data", "import-movielens", "train", "evaluate", "models"]),
    (["demo-data"], ["--users", "--items", "--events", "--seed"]),
    (["import-movielens"], ["folder", "ratings.csv + movies.csv", "u.data + u.item"]),
    (["train"], ["--tune", "--holdout-percent", "--margin", "--force"]),
    (["evaluate"], ["--split", "--folds", "--output", "--tune"]),
    (["models"], ["list", "promote", "rollback"]),
    (["models", "list"], ["status"]),
    (["models", "promote"], ["version", "the active one is retired"]),
    (["models", "rollback"], ["Re-activate"]),
]


@pytest.mark.parametrize(
    ("command", "expected"), COMMANDS, ids=[" ".join(c) or "app" for c, _ in COMMANDS]
)
def test_help_describes_every_command(
    command: list[str], expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--help` works without any storage and names the command's options or subcommands."""
    monkeypatch.setenv("COLUMNS", "200")
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    for word in expected:
        assert word.lower() in result.output.lower(), (word, result.output)


def test_the_app_without_a_command_shows_help() -> None:
    result = run()
    assert "Usage:" in result.output
    assert "demo-data" in result.output


# -- loading data ------------------------------------------------------------------------------


def test_demo_data_loads_the_shop_and_a_rerun_adds_nothing(
    cli_env: Path, services: Services
) -> None:
    """`demo-data` stores every generated item and event; the same command again reads the
    same events, accepts none and counts them all as duplicates."""
    expected = demo.generate(SMALL_SPEC)
    first = run("demo-data", *SMALL)
    assert first.exit_code == 0, first.output
    assert count_rows(services, "items") == SMALL_SPEC.items
    assert count_rows(services, "events") == len(expected.events)
    n = len(expected.events)
    assert report_row(first.output, "items") == (SMALL_SPEC.items, SMALL_SPEC.items, 0, 0)
    assert report_row(first.output, "events") == (n, n, 0, 0)

    second = run("demo-data", *SMALL)
    assert second.exit_code == 0, second.output
    assert report_row(second.output, "events") == (n, 0, n, 0)
    assert count_rows(services, "events") == n
    # Ingestion also fed the live profiles, as the API would have, and Redis is known to hold
    # them all: the service's first start has nothing to rebuild.
    assert services.profiles.read("user-00000").events > 0
    assert services.rebuilder.ensure_populated() == 0


def test_a_load_on_a_redis_that_lost_its_data_first_rebuilds_the_profiles(
    shop: Services,
) -> None:
    """Stored events whose profiles Redis no longer holds are rebuilt before a command adds
    more, so the live profiles end up counting every stored event."""
    shop.profiles.client.flushdb()
    result = run("demo-data", *SMALL)
    assert result.exit_code == 0, result.output
    assert "rebuilt" in result.output
    profile = shop.profiles.read("user-00000")
    with shop.sessions() as session:
        stored = session.scalar(
            select(func.count()).select_from(Event).where(Event.user_id == "user-00000")
        )
    assert profile.events == stored > 0
    assert shop.rebuilder.ensure_populated() == 0


def write_modern_movielens(folder: Path) -> None:
    folder.mkdir()
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"Heat, The (1995)",Action|Crime\n'
        "3,Untitled,(no genres listed)\n"
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,2,3.5,964981247\n"
        "2,1,5.0,964982224\n"
        "2,3,2.0,964983815\n"
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "1,1,pixar,1139045764\n"
        "2,1,Pixar,1139045765\n"
        "2,1,funny,1139045766\n"
    )


def write_classic_movielens(folder: Path) -> None:
    folder.mkdir()
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = "1"  # Comedy
    unknown = flags.copy()
    unknown[0] = "1"
    (folder / "u.item").write_text(
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(comedy) + "\n"
        "2|GoldenEye (1995)|01-Jan-1995||http://x|" + "|".join(unknown) + "\n",
        encoding="latin-1",
    )
    (folder / "u.data").write_text(
        "196\t1\t3\t881250949\n186\t2\t4\t891717742\n196\t2\t5\t881251000\n"
    )


def test_import_movielens_reads_the_csv_layout_with_tags(
    cli_env: Path, services: Services, tmp_path: Path
) -> None:
    """ratings.csv + movies.csv + tags.csv: movies become items with genres, year and tags
    (most used first), ratings become `rating` events; a re-import adds nothing."""
    folder = tmp_path / "ml-latest-small"
    write_modern_movielens(folder)
    result = run("import-movielens", str(folder))
    assert result.exit_code == 0, result.output
    assert count_rows(services, "items") == 3
    assert count_rows(services, "events") == 4
    toy_story = services.catalog.get("1")
    assert toy_story.title == "Toy Story (1995)"
    assert toy_story.categories == ["Adventure", "Animation", "Children"]
    assert toy_story.tags == ["pixar", "funny"]
    assert toy_story.attributes == {"year": 1995}
    assert services.catalog.get("3").categories == []
    assert report_row(result.output, "ratings") == (4, 4, 0, 0)

    again = run("import-movielens", str(folder))
    assert again.exit_code == 0, again.output
    assert report_row(again.output, "ratings") == (4, 0, 4, 0)
    assert count_rows(services, "events") == 4


def test_import_movielens_reads_the_100k_layout(
    cli_env: Path, services: Services, tmp_path: Path
) -> None:
    """u.data + u.item: items with their flagged genres ('unknown' dropped), every rating."""
    folder = tmp_path / "ml-100k"
    write_classic_movielens(folder)
    result = run("import-movielens", str(folder))
    assert result.exit_code == 0, result.output
    assert count_rows(services, "items") == 2
    assert count_rows(services, "events") == 3
    assert services.catalog.get("1").categories == ["Comedy"]
    assert services.catalog.get("2").categories == []
    assert services.profiles.read("196").events == 2


def test_import_movielens_refuses_a_folder_that_is_not_movielens(
    cli_env: Path, services: Services, tmp_path: Path
) -> None:
    """A folder with neither layout exits 2 naming the files it expected, and loads nothing."""
    folder = tmp_path / "not-movielens"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    result = run("import-movielens", str(folder))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "is not a MovieLens folder" in text
    assert "ratings.csv and movies.csv" in text
    assert "u.data and u.item" in text
    assert count_rows(services, "events") == 0

    missing = run("import-movielens", str(tmp_path / "no-such-folder"))
    assert missing.exit_code == 2
    assert "is not a MovieLens folder" in missing.output


# -- training and the registry -----------------------------------------------------------------


def test_train_then_manage_versions_from_the_command_line(shop: Services, cli_env: Path) -> None:
    """train promotes the first version; a second train on the same data is kept as a
    candidate; `models list` shows both; promote and rollback switch the active version;
    promoting an unknown version exits 1 and changes nothing."""
    first = run("train")
    assert first.exit_code == 0, first.output
    assert "promoted" in first.output
    assert "no version is active" in first.output
    (v1,) = statuses(shop)
    assert statuses(shop) == {v1: ACTIVE}
    assert (cli_env / v1).is_dir()

    second = run("train")
    assert second.exit_code == 0, second.output
    assert "kept as candidate" in second.output
    assert "not better" in second.output
    (v2,) = set(statuses(shop)) - {v1}
    assert statuses(shop) == {v1: ACTIVE, v2: CANDIDATE}

    listed = run("models", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert any(v1 in line and ACTIVE in line for line in lines), listed.output
    assert any(v2 in line and CANDIDATE in line for line in lines), listed.output

    promoted = run("models", "promote", v2)
    assert promoted.exit_code == 0, promoted.output
    assert f"{v2} is active, replacing {v1}" in " ".join(promoted.output.split())
    assert statuses(shop) == {v1: RETIRED, v2: ACTIVE}

    rolled = run("models", "rollback")
    assert rolled.exit_code == 0, rolled.output
    assert f"{v1} is active again; {v2} is retired" in " ".join(rolled.output.split())
    assert statuses(shop) == {v1: ACTIVE, v2: RETIRED}

    unknown = run("models", "promote", "nosuch")
    assert unknown.exit_code == 1
    assert "no model version 'nosuch'" in unknown.output
    assert statuses(shop) == {v1: ACTIVE, v2: RETIRED}


def test_models_list_shows_whole_version_names_in_an_80_column_terminal(
    shop: Services, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`models list` is where an operator copies a version for `models promote`: in a
    standard 80-column terminal every version name and status must appear whole."""
    for _ in range(2):
        assert run("train").exit_code == 0
    monkeypatch.setattr(training_cli, "out", Console(width=80))
    listed = run("models", "list")
    assert listed.exit_code == 0, listed.output
    for version, status in statuses(shop).items():
        assert any(version in line and status in line for line in listed.output.splitlines()), (
            version,
            status,
            listed.output,
        )


def test_rollback_and_list_with_no_versions(cli_env: Path, services: Services) -> None:
    """With an empty registry `models list` says how to make a version and `models rollback`
    exits 1 explaining there is nothing to roll back."""
    listed = run("models", "list")
    assert listed.exit_code == 0, listed.output
    assert "no model versions yet" in listed.output

    rolled = run("models", "rollback")
    assert rolled.exit_code == 1
    assert "nothing to roll back" in rolled.output


def test_train_with_overrides_records_them_in_the_version(shop: Services, cli_env: Path) -> None:
    """--factors/--iterations reach the model: the registered parameters carry them."""
    result = run("train", "--factors", "8", "--iterations", "3", "--force")
    assert result.exit_code == 0, result.output
    active = Registry(shop.sessions).active()
    assert active is not None
    assert active.params["choice"]["als"]["factors"] == 8
    assert active.params["choice"]["als"]["iterations"] == 3
    assert active.gate is not None
    assert active.gate["forced"] is True


def test_train_with_tuning_registers_the_tuned_choice(shop: Services, cli_env: Path) -> None:
    """--tune searches parameters before fitting (a `tune` stage is timed) and the version
    records the configuration it was trained with."""
    result = run("train", "--tune", "--trials", "3")
    assert result.exit_code == 0, result.output
    assert "tune " in result.output
    active = Registry(shop.sessions).active()
    assert active is not None
    choice = active.params["choice"]
    assert set(choice) == {"als", "weights", "popularity_half_life_days", "values"}
    assert active.metrics["validation"]["ndcg@10"] > 0


def test_train_on_an_empty_database_exits_1_and_says_how_to_load_data(
    cli_env: Path, services: Services
) -> None:
    result = run("train")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "no events are stored" in text
    assert "demo-data" in text
    assert count_rows(services, "model_versions") == 0


def training_runs(services: Services) -> list[TrainingRun]:
    with services.sessions() as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))


def test_retrain_trains_the_first_version_then_says_why_it_does_nothing(
    shop: Services, cli_env: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """`retrain --once` trains and promotes the first version (kept in the database with
    RECSYS_ARTIFACT_STORE=database) and beats its heartbeat; the next round finds no trigger,
    trains nothing and says what it checked. Both rounds are recorded."""
    monkeypatch.setenv("RECSYS_ARTIFACT_STORE", "database")
    get_settings.cache_clear()
    heartbeat = settings.var_dir / training_cli.RETRAIN_HEARTBEAT
    heartbeat.unlink(missing_ok=True)

    first = run("retrain", "--once")
    assert first.exit_code == 0, first.output
    active = Registry(shop.sessions).active()
    assert active is not None
    assert active.artifact_path == f"database:{active.version}"
    assert f"artifact: database:{active.version}" in first.output
    assert heartbeat.is_file()

    second = run("retrain", "--once")
    assert second.exit_code == 0, second.output
    text = " ".join(second.output.split())
    assert "nothing to do" in text
    assert "h old (limit 48 h)" in text
    assert f"the newest version {active.version}" in text
    assert "0 events since its data ends (10,000 needed)" in text
    assert "no feature drifts" in text
    assert count_rows(shop, "model_versions") == 1
    runs = training_runs(shop)
    assert [(r.outcome, r.triggers) for r in runs] == [
        ("promoted", ["no version is active"]),
        ("skipped", []),
    ]
    assert runs[0].version == active.version
    assert "nothing" not in runs[1].reason
    assert "limit 48 h" in runs[1].reason


def test_retrain_trains_once_the_model_is_older_than_its_limit(
    shop: Services, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("train").exit_code == 0
    monkeypatch.setenv("RECSYS_RETRAIN_MAX_MODEL_AGE_HOURS", "0.0001")  # 0.36 s
    get_settings.cache_clear()
    time.sleep(0.5)
    result = run("retrain", "--once")
    assert result.exit_code == 0, result.output
    assert count_rows(shop, "model_versions") == 2
    (*_, last) = training_runs(shop)
    assert last.outcome in ("promoted", "candidate")
    assert len(last.triggers) == 1
    assert "h old (limit 0.0001 h)" in last.triggers[0]


def test_retrain_counts_age_from_the_newest_version_even_one_the_gate_kept_out(
    shop: Services, cli_env: Path
) -> None:
    """An old active version and a fresh candidate that did not beat it: no retraining every
    round for the same reason."""
    assert run("train").exit_code == 0
    with shop.engine.begin() as connection:
        connection.execute(
            update(ModelVersion).values(created_at=datetime.now(UTC) - timedelta(hours=100))
        )
    kept_out = run("train", "--margin", "10")
    assert "kept as candidate" in kept_out.output
    result = run("retrain", "--once")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "nothing to do: the newest version" in text
    assert "is 0.0 h old (limit 48 h)" in text
    assert count_rows(shop, "model_versions") == 2


def test_retrain_trains_once_enough_new_events_arrived(
    shop: Services, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("train").exit_code == 0
    newer = [
        {**event, "event_id": f"new-{k}", "timestamp": datetime.now(UTC).isoformat()}
        for k, event in enumerate(demo.generate(SMALL_SPEC).events[:30])
    ]
    assert load_events(shop, newer).accepted == 30
    monkeypatch.setenv("RECSYS_RETRAIN_MIN_NEW_EVENTS", "31")
    get_settings.cache_clear()
    assert "nothing to do" in " ".join(run("retrain", "--once").output.split())
    result = run("retrain", "--once", "--min-new-events", "30")
    assert result.exit_code == 0, result.output
    (*_, skipped, trained) = training_runs(shop)
    assert skipped.outcome == "skipped"
    assert trained.triggers == ["30 events since its data ends (30 needed)"]
    assert count_rows(shop, "model_versions") == 2


def test_retrain_trains_when_live_events_drift(
    shop: Services, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day of nothing but dislikes on one item: the event mix and popularity drift."""
    assert run("train").exit_code == 0
    now = datetime.now(UTC)
    drifted = [
        {
            "event_id": f"drift-{k}",
            "user_id": f"user-{k % 150:05d}",
            "item_id": "sku-00079",
            "type": "dislike",
            "timestamp": (now - timedelta(seconds=300 * k)).isoformat(),
        }
        for k in range(250)
    ]
    assert load_events(shop, drifted).accepted == 250
    monkeypatch.setenv("RECSYS_RETRAIN_MIN_NEW_EVENTS", "1000000")
    monkeypatch.setenv("RECSYS_RETRAIN_ON_DRIFT", "false")
    get_settings.cache_clear()
    assert "nothing to do" in " ".join(run("retrain", "--once").output.split())

    monkeypatch.setenv("RECSYS_RETRAIN_ON_DRIFT", "true")
    get_settings.cache_clear()
    result = run("retrain", "--once")
    assert result.exit_code == 0, result.output
    (*_, trained) = training_runs(shop)
    (trigger,) = trained.triggers
    assert trigger.startswith("drift: "), trigger
    assert "event_type (24h" in trigger, trigger


def test_a_failed_round_is_recorded_and_exits_1(
    shop: Services, cli_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the models should go")
    monkeypatch.setenv("RECSYS_MODEL_DIR", str(blocked))
    get_settings.cache_clear()
    result = run("retrain", "--once")
    assert result.exit_code == 1
    assert "the round failed" in " ".join(result.output.split())
    (last,) = training_runs(shop)
    assert last.outcome == "failed"
    assert last.triggers == ["no version is active"]
    assert count_rows(shop, "model_versions") == 0


@pytest.mark.slow
def test_retrain_stops_at_once_on_sigterm_while_it_waits(
    cli_env: Path, services: Services, settings: Settings
) -> None:
    """A retrain loop waiting for its next round ends on SIGTERM within seconds, exit 0, and
    says why it stopped."""
    import signal
    import subprocess
    import sys
    import time

    heartbeat = settings.var_dir / training_cli.RETRAIN_HEARTBEAT
    heartbeat.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "training", "retrain", "--interval", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not heartbeat.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert heartbeat.exists()
        time.sleep(1.0)  # past the first round's check, into the wait
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "SIGTERM: stopping" in output
    assert "no events are stored" in " ".join(output.split())


# -- evaluation --------------------------------------------------------------------------------

MODELS = {"popularity", "ALS", "content", "hybrid"}


def evaluate(output: Path, *args: str) -> dict[str, Any]:
    result = run("evaluate", "--output", str(output), *args)
    assert result.exit_code == 0, result.output
    assert f"figures written to {output}" in " ".join(result.output.split())
    report: dict[str, Any] = json.loads(output.read_text())
    return report


def test_evaluate_protocol_split_writes_every_model_to_json(shop: Services, tmp_path: Path) -> None:
    """The protocol split scores popularity, ALS, content and the hybrid on the same users,
    with parameters from the defaults when no version is active."""
    report = evaluate(tmp_path / "out" / "e.json")
    assert report["split"] == "protocol"
    assert report["parameters_from"] == "defaults"
    assert report["events"] == count_rows(shop, "events")
    assert set(report["test"]) == MODELS
    users = {figures["users"] for figures in report["test"].values()}
    assert len(users) == 1
    assert users.pop() > 0
    for name, figures in report["test"].items():
        assert 0.0 <= figures["ndcg@10"] <= 1.0, name
    assert report["test"]["hybrid"]["ndcg@10"] > report["test"]["popularity"]["ndcg@10"]
    assert "kfold" not in report


def test_evaluate_temporal_split_with_two_folds_uses_the_active_version(
    shop: Services, tmp_path: Path
) -> None:
    """--split temporal --folds 2 adds a K-fold summary (mean and std per model and metric),
    and the parameters come from the active version once there is one."""
    trained = run("train", "--factors", "16")
    assert trained.exit_code == 0, trained.output
    active = Registry(shop.sessions).active()
    assert active is not None

    report = evaluate(tmp_path / "t.json", "--split", "temporal", "--folds", "2")
    assert report["split"] == "temporal"
    assert report["parameters_from"] == f"the active version {active.version}"
    assert report["choice"]["als"]["factors"] == 16
    assert set(report["test"]) == MODELS
    # One held-out event per user with history: at most one test user per user.
    assert 0 < report["test"]["hybrid"]["users"] <= report["users"]
    assert set(report["kfold"]) == MODELS
    for metrics in report["kfold"].values():
        assert set(metrics["ndcg@10"]) == {"mean", "std"}
        assert metrics["ndcg@10"]["std"] >= 0.0


def test_evaluate_writes_its_figures_into_the_state_folder_by_default(
    shop: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --output the figures go to RECSYS_VAR_DIR/evaluation.json, wherever the command
    runs (the working directory here is tmp_path)."""
    state = tmp_path / "state"
    monkeypatch.setenv("RECSYS_VAR_DIR", str(state))
    get_settings.cache_clear()
    result = run("evaluate")
    assert result.exit_code == 0, result.output
    assert json.loads((state / "evaluation.json").read_text())["split"] == "protocol"
    assert not (tmp_path / "var").exists()


def test_evaluate_refuses_an_unknown_split(cli_env: Path, tmp_path: Path) -> None:
    result = run("evaluate", "--split", "random", "--output", str(tmp_path / "x.json"))
    assert result.exit_code == 2
    assert "--split must be 'protocol' or 'temporal'" in result.output
    assert not (tmp_path / "x.json").exists()


def test_evaluate_on_an_empty_database_exits_1(cli_env: Path, tmp_path: Path) -> None:
    result = run("evaluate", "--output", str(tmp_path / "x.json"))
    assert result.exit_code == 1
    assert "no events are stored" in result.output
    assert not (tmp_path / "x.json").exists()
