"""``python -m training``: build data, train, evaluate and manage model versions."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.artifacts import make_artifact_store
from app.clitools import run
from app.config import Settings, get_settings
from app.monitoring.canary import review_canaries
from training import demo
from training.cli_shared import Database, console, open_database, open_services, out
from training.data import count_events, load_interactions
from training.data import load_items as load_item_table
from training.evaluation import (
    Dataset,
    ModelChoice,
    ModelResult,
    compare_models,
    kfold_users,
    make_split,
    summarise_folds,
)
from training.evaluation import tune as run_tuning
from training.import_cli import import_cli
from training.pipeline import TrainingError, TrainOptions, TrainResult
from training.pipeline import train as run_training
from training.registry import CANARY_RUNNING, ROLLED_BACK, Registry, RegistryError
from training.retraining import FAILED, SKIPPED, due, record_run

if TYPE_CHECKING:
    from training.loading import LoadReport

log = logging.getLogger(__name__)
cli = typer.Typer(
    help="Offline training for the recommendation service.",
    no_args_is_help=True,
    add_completion=False,
)
models_cli = typer.Typer(help="List, promote and roll back model versions.", no_args_is_help=True)
cli.add_typer(models_cli, name="models")
cli.add_typer(import_cli, name="import")
# `retrain` touches this file under RECSYS_VAR_DIR every HEARTBEAT_SECONDS while it runs.
RETRAIN_HEARTBEAT = "retrain.heartbeat"
HEARTBEAT_SECONDS = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def progress_bar(unit: str) -> Progress:
    """A progress bar that shows the rate in ``unit``/s."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def advance(progress: Progress, task: TaskID, unit: str, count: int) -> None:
    progress.advance(task, count)
    done = progress.tasks[task].completed
    elapsed = progress.tasks[task].elapsed or 1e-9
    progress.update(task, rate=f"{done / elapsed:,.0f} {unit}/s")


def print_report(title: str, report: LoadReport) -> None:
    table = Table(title=title, show_header=True)
    for column in ("read", "accepted", "duplicates", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(
        *(f"{v:,}" for v in (report.read, report.accepted, report.duplicates, report.rejected))
    )
    out.print(table)
    for reason, count in sorted(report.reasons.items(), key=lambda kv: -kv[1])[:10]:
        out.print(f"  {count:>8,}  {reason}")


@cli.command("demo-data")
def demo_data(
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 2_000,
    items: Annotated[int, typer.Option(min=1, help="Number of items.")] = 600,
    events: Annotated[int, typer.Option(min=1, help="Approximate number of events.")] = 60_000,
    days: Annotated[int, typer.Option(min=1, help="Days of history.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same data.")] = 42,
) -> None:
    """Generate a synthetic shop (users with tastes, items, events) and load it through the API's
    ingestion path. Re-running with the same seed adds nothing (events are idempotent)."""
    from training.loading import load_events, load_items

    spec = demo.DemoSpec(users=users, items=items, events=events, days=days, seed=seed)
    data = demo.generate(spec)
    with open_services() as services, progress_bar("rows") as progress:
        task = progress.add_task("items", total=len(data.items), rate="")
        item_report = load_items(
            services, data.items, lambda n: advance(progress, task, "items", n)
        )
        task = progress.add_task("events", total=len(data.events), rate="")
        event_report = load_events(
            services, data.events, lambda n: advance(progress, task, "events", n)
        )
    print_report("items", item_report)
    print_report("events", event_report)


@cli.command("import-movielens")
def import_movielens(
    folder: Annotated[
        Path,
        typer.Argument(help="A MovieLens folder: ratings.csv + movies.csv, or u.data + u.item."),
    ],
) -> None:
    """Load a MovieLens data set (movies as items, ratings as `rating` events) through the API's
    ingestion path. Re-importing adds nothing."""
    from training.loading import MovieLensFolder, load_events, load_items

    try:
        source = MovieLensFolder(folder)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    with open_services() as services, progress_bar("rows") as progress:
        task = progress.add_task("movies", total=None, rate="")
        item_report = load_items(
            services, source.items(), lambda n: advance(progress, task, "movies", n)
        )
        task = progress.add_task("ratings", total=source.count_ratings(), rate="")
        event_report = load_events(
            services, source.events(), lambda n: advance(progress, task, "ratings", n)
        )
    print_report("movies", item_report)
    print_report("ratings", event_report)


@cli.command()
def train(
    tune: Annotated[
        bool, typer.Option("--tune/--no-tune", help="Search hyper-parameters first.")
    ] = False,
    trials: Annotated[int, typer.Option(min=1, help="Tuning trials (with --tune).")] = 20,
    time_budget: Annotated[
        float | None, typer.Option(min=1, help="Tuning budget in seconds (with --tune).")
    ] = None,
    factors: Annotated[int | None, typer.Option(min=1, help="ALS factors (overrides).")] = None,
    regularization: Annotated[
        float | None, typer.Option(min=0, help="ALS regularization (overrides).")
    ] = None,
    alpha: Annotated[float | None, typer.Option(min=0, help="ALS alpha (overrides).")] = None,
    iterations: Annotated[int | None, typer.Option(min=1, help="ALS iterations.")] = None,
    holdout_percent: Annotated[
        float, typer.Option(min=0, max=50, help="Share of (user, item) pairs never trained on.")
    ] = 10.0,
    eval_users: Annotated[int, typer.Option(min=1, help="Users scored for the gate.")] = 1_000,
    margin: Annotated[
        float, typer.Option(min=0, help="Relative improvement needed to replace the active one.")
    ] = 0.0,
    force: Annotated[bool, typer.Option(help="Promote whatever the gate says.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Train a model from every stored event, evaluate it on the fixed holdout against the active
    version, and promote it only when it is better (the gate's reasons are printed and stored)."""
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "factors": factors,
            "regularization": regularization,
            "alpha": alpha,
            "iterations": iterations,
        }.items()
        if value is not None
    }
    with open_database() as db:
        base = None
        if overrides:
            active = Registry(db.sessions).active()
            base = (
                ModelChoice.from_dict(active.params["choice"])
                if active is not None and "choice" in active.params
                else ModelChoice()
            )
            base = replace(base, als=replace(base.als, **overrides))
        options = TrainOptions(
            choice=base,
            tune=tune,
            trials=trials,
            time_budget=time_budget,
            holdout_percent=holdout_percent,
            eval_users=eval_users,
            margin=margin,
            force=force,
            seed=seed,
        )
        started = datetime.now(UTC)
        try:
            result = train_once(db, options)
        except Exception as exc:
            record_run(db.sessions, started, FAILED, ["by hand"], f"{type(exc).__name__}: {exc}")
            raise
        if result is not None:
            reason = "; ".join(result.decision.reasons)
            if result.canary is not None:
                reason += f"; canary: {result.canary.reason}"
            record_run(db.sessions, started, result.outcome, ["by hand"], reason, result.version)
    if result is None:
        raise typer.Exit(1)


def train_once(db: Database, options: TrainOptions) -> TrainResult | None:
    """One training run with progress bars and the gate's verdict printed; ``None`` when there
    is nothing to train on (the reason is printed)."""
    settings = get_settings()
    artifacts = make_artifact_store(settings.artifact_store, db.sessions, settings.model_dir)
    with progress_bar("rows") as progress:
        tasks: dict[str, TaskID] = {}

        def show(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, rate="")
            task = tasks[stage]
            progress.update(task, completed=done)
            elapsed = progress.tasks[task].elapsed or 1e-9
            unit = "rows" if stage.startswith("read") else "it"
            progress.update(task, rate=f"{done / elapsed:,.1f} {unit}/s")

        if options.settings is None:
            # RECSYS_CANARY_SHARE decides whether a promoted version goes out as a canary.
            options = replace(options, settings=settings)
        try:
            result = run_training(
                db.engine,
                db.sessions,
                dict(settings.event_weights),
                settings.model_dir,
                options,
                log=lambda line: progress.console.print(line),
                progress=show,
                artifacts=artifacts,
            )
        except TrainingError as exc:
            console.print(f"[red]{exc}[/]")
            return None
    verdict = {
        "promoted": "[green]promoted[/]",
        "candidate": "[yellow]kept as candidate[/]",
        "canary": "[cyan]canary started[/]",
        "held": "[yellow]passed the gate, canary held[/]",
    }[result.outcome]
    out.print(f"version {result.version}: {verdict}")
    if result.canary is not None:
        out.print(f"  canary: {result.canary.reason}")
    for reason in result.decision.reasons:
        out.print(f"  gate: {reason}")
    out.print(f"  artifact: {result.location}")
    out.print(
        "  seconds: " + ", ".join(f"{name} {secs:.1f}" for name, secs in result.timings.items())
    )
    return result


@cli.command()
def retrain(
    interval: Annotated[
        float, typer.Option(min=1, help="Seconds from the end of one round to the next.")
    ] = 86_400.0,
    min_new_events: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Train once this many events happened since the active version's data ends "
            "(default RECSYS_RETRAIN_MIN_NEW_EVENTS).",
        ),
    ] = None,
    margin: Annotated[
        float, typer.Option(min=0, help="Relative improvement needed to replace the active one.")
    ] = 0.0,
    once: Annotated[bool, typer.Option(help="One round, then exit (for a scheduled job).")] = False,
) -> None:
    """Decide, round after round, whether to train, and train when a trigger holds: no active
    version, the active one older than RECSYS_RETRAIN_MAX_MODEL_AGE_HOURS, enough new events,
    or drift (RECSYS_RETRAIN_ON_DRIFT); otherwise say why not. Each candidate goes through the
    gate; every round is recorded in training_runs. Runs until SIGTERM or SIGINT.

    A signal while waiting ends the loop at once; one during a run abandons that run, which
    leaves no version behind (the artifact and its registry row are committed together). It
    touches RECSYS_VAR_DIR/retrain.heartbeat every 30 s, for a health check. With --once the
    exit status is 1 when the round failed."""
    stop = threading.Event()
    running = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()
        console.print(f"{signal.Signals(signum).name}: stopping")
        if running.is_set():
            raise SystemExit(143 if signum == signal.SIGTERM else 130)

    previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    try:
        ok = _retrain_rounds(stop, running, interval, min_new_events, margin, once)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not ok:
        raise typer.Exit(1)


def _retrain_rounds(
    stop: threading.Event,
    running: threading.Event,
    interval: float,
    min_new_events: int | None,
    margin: float,
    once: bool,
) -> bool:
    """The rounds of ``retrain``; False when the last round failed."""
    settings = get_settings()
    heartbeat = settings.var_dir / RETRAIN_HEARTBEAT

    def beat() -> None:
        # While the process lives, runs included: a container's health check reads its age.
        while True:
            heartbeat.parent.mkdir(parents=True, exist_ok=True)
            heartbeat.touch()
            if stop.wait(HEARTBEAT_SECONDS):
                return

    threading.Thread(target=beat, name="retrain-heartbeat", daemon=True).start()
    ok = True
    while not stop.is_set():
        ok = _retrain_round(settings, running, min_new_events, margin)
        if once:
            return ok
        console.print(f"next round in {interval:,.0f} s")
        stop.wait(interval)
    return ok


def _retrain_round(
    settings: Settings, running: threading.Event, min_new_events: int | None, margin: float
) -> bool:
    started = datetime.now(UTC)
    with open_database() as db:
        # A running canary with enough lists is decided first: what is active may change.
        for found in review_canaries(settings, db.engine, db.sessions):
            console.print(f"canary {found.version}: {found.decision}: {found.reason}")
        artifacts = make_artifact_store(settings.artifact_store, db.sessions, settings.model_dir)
        triggers: list[str] = []
        try:
            decision = due(
                settings, db.engine, db.sessions, artifacts, min_new_events=min_new_events
            )
            triggers = decision.triggers
            if not decision.train:
                console.print(f"nothing to do: {decision.reason}")
                record_run(db.sessions, started, SKIPPED, [], decision.reason)
                return True
            console.print(f"training: {decision.reason}")
            running.set()
            try:
                result = train_once(db, TrainOptions(margin=margin))
            finally:
                running.clear()
        except Exception as exc:
            log.exception("the retraining round failed")
            console.print(f"[red]the round failed: {exc}[/]")
            record_run(db.sessions, started, FAILED, triggers, f"{type(exc).__name__}: {exc}")
            return False
        if result is None:
            record_run(db.sessions, started, SKIPPED, triggers, "no events are stored")
            return True
        reason = "; ".join(result.decision.reasons)
        if result.canary is not None:
            reason += f"; canary: {result.canary.reason}"
        record_run(db.sessions, started, result.outcome, triggers, reason, result.version)
        return True


@cli.command()
def evaluate(
    split: Annotated[
        str,
        typer.Option(
            help="protocol: per-item random 75/25 (EVALUATION.md); temporal: each user's last "
            "--last-n events held out."
        ),
    ] = "protocol",
    last_n: Annotated[int, typer.Option(min=1, help="Held-out events per user (temporal).")] = 1,
    folds: Annotated[
        int, typer.Option(min=0, help="Also K-fold cross-validation over users (0: off).")
    ] = 0,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune/--no-tune", help="Choose parameters on a validation split of the train part."
        ),
    ] = False,
    trials: Annotated[int, typer.Option(min=1, help="Tuning trials.")] = 40,
    time_budget: Annotated[float | None, typer.Option(min=1, help="Tuning seconds.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of splits and models.")] = 42,
    output: Annotated[
        Path | None,
        typer.Option(help="Where to write the figures as JSON (RECSYS_VAR_DIR/evaluation.json)."),
    ] = None,
) -> None:
    """Evaluate popularity, ALS, content and the hybrid on the stored data, honestly: parameters
    come from the active version, or from tuning on the train part only; the test part is
    scored once."""
    if split not in ("protocol", "temporal"):
        console.print("[red]--split must be 'protocol' or 'temporal'[/]")
        raise typer.Exit(2)
    settings = get_settings()
    with open_database() as db:
        items = load_item_table(db.engine)
        total = count_events(db.engine)
        if total == 0:
            console.print("[red]no events are stored: nothing to evaluate[/]")
            raise typer.Exit(1)
        with progress_bar("rows") as progress:
            task = progress.add_task("read events", total=total, rate="")
            inter = load_interactions(
                db.engine,
                settings.event_weights,
                item_ids=items.ids,
                progress=lambda done: _set(progress, task, done, "rows"),
            )
        active = Registry(db.sessions).active()
    dataset = Dataset(inter, items, seed=seed)
    chosen = make_split(dataset, "protocol" if split == "protocol" else "temporal", last_n)
    choice = (
        ModelChoice.from_dict(active.params["choice"])
        if active is not None and "choice" in active.params
        else ModelChoice()
    )
    source = f"the active version {active.version}" if active is not None else "defaults"
    if tune:
        with console.status("tuning on a validation split of the train part"):
            choice, _ = run_tuning(
                dataset,
                chosen.train,
                trials=trials,
                time_budget=time_budget,
                start=choice,
                log=lambda line: console.print(line),
            )
        source = "tuning on the train part"
    with console.status("fitting and scoring"):
        results = compare_models(dataset, chosen, choice)
    report: dict[str, object] = {
        "split": split,
        "seed": seed,
        "parameters_from": source,
        "choice": choice.as_dict(),
        "events": len(inter),
        "users": inter.n_users,
        "items": inter.n_items,
        "test": {name: r.as_dict() for name, r in results.items()},
    }
    print_results(f"{split} split, k=10 (parameters: {source})", results)
    if folds:
        with console.status(f"{folds}-fold cross-validation over users"):
            per_fold = list(kfold_users(dataset, choice, folds))
        summary = summarise_folds(per_fold)
        report["kfold"] = summary
        table = Table(title=f"{folds}-fold over users: mean ± std")
        table.add_column("model")
        for metric in ("precision@10", "recall@10", "ndcg@10", "map"):
            table.add_column(metric, justify="right")
        for name, metrics in summary.items():
            table.add_row(
                name,
                *(
                    f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}"
                    for m in ("precision@10", "recall@10", "ndcg@10", "map")
                ),
            )
        out.print(table)
    output = output or settings.var_dir / "evaluation.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    out.print(f"figures written to {output}")


def print_results(title: str, results: Mapping[str, ModelResult]) -> None:
    table = Table(title=title)
    table.add_column("model")
    for column in ("P@10", "R@10", "nDCG@10", "MAP", "hit rate", "coverage", "novelty", "users"):
        table.add_column(column, justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r.precision:.4f}",
            f"{r.recall:.4f}",
            f"{r.ndcg:.4f}",
            f"{r.map:.4f}",
            f"{r.hit_rate:.4f}",
            f"{r.coverage:.4f}",
            f"{r.novelty:.2f}",
            f"{r.users:,}",
        )
    out.print(table)


def _set(progress: Progress, task: TaskID, done: int, unit: str) -> None:
    progress.update(task, completed=done)
    elapsed = progress.tasks[task].elapsed or 1e-9
    progress.update(task, rate=f"{done / elapsed:,.0f} {unit}/s")


@models_cli.command("list")
def models_list() -> None:
    """Every model version, newest last, with its status and offline metrics."""
    with open_database() as db:
        versions = Registry(db.sessions).all()
    if not versions:
        out.print("no model versions yet: run `python -m training train`")
        return
    table = Table(show_header=True)
    table.add_column("version", no_wrap=True, min_width=23)
    table.add_column("status", no_wrap=True, min_width=11)
    table.add_column("canary")
    for column in ("created", "events", "users", "items", "ndcg@10"):
        table.add_column(column, justify="right")
    for v in versions:
        table.add_row(
            v.version,
            v.status,
            (v.canary or {}).get("state", "-"),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            f"{v.n_events:,}",
            f"{v.n_users:,}",
            f"{v.n_items:,}",
            _fmt(v.metrics.get("validation", {}).get("ndcg@10")),
        )
    out.print(table)
    for v in versions:
        reasons = (v.gate or {}).get("reasons", [])
        if reasons:
            out.print(f"  {v.version}: {'; '.join(reasons)}")
        canary = v.canary or {}
        if canary.get("reason"):
            out.print(f"  {v.version} canary {canary['state']}: {canary['reason']}")
        elif canary.get("state") == CANARY_RUNNING:
            out.print(
                f"  {v.version} canary running: {canary.get('share', 0):.2%} of users in "
                f"experiment {canary.get('experiment')} since {canary.get('started_at')}"
            )


@models_cli.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="The version to describe.")],
) -> None:
    """One version in full: status, data, offline metrics, the gate's verdict and its canary."""
    with open_database() as db:
        try:
            v = Registry(db.sessions).get(version)
        except RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    out.print(f"version   {v.version}")
    out.print(f"status    {v.status}")
    out.print(f"created   {v.created_at.isoformat()}")
    for label, moment in (("promoted", v.promoted_at), ("retired", v.retired_at)):
        if moment is not None:
            out.print(f"{label:<9} {moment.isoformat()}")
    window = " to ".join(str(m.date()) if m else "?" for m in (v.data_from, v.data_until))
    out.print(
        f"data      {v.n_events:,} events, {v.n_users:,} users, {v.n_items:,} items ({window})"
    )
    validation = v.metrics.get("validation", {})
    if validation:
        shown = ", ".join(
            f"{name} {_fmt(validation.get(name))}"
            for name in ("ndcg@10", "precision@10", "recall@10", "map")
            if name in validation
        )
        out.print(f"holdout   {shown}")
    for reason in (v.gate or {}).get("reasons", []):
        out.print(f"gate      {reason}")
    out.print(f"artifact  {v.artifact_path}")
    if v.canary:
        _print_canary(v.canary)


def _print_canary(canary: Mapping[str, Any]) -> None:
    out.print(f"canary    {canary.get('state')}")
    review = canary.get("last_review") or {}
    for label, value in (
        ("experiment", canary.get("experiment")),
        ("against", canary.get("active_version")),
        ("share", None if canary.get("share") is None else f"{canary['share']:.2%} of users"),
        ("started", canary.get("started_at")),
        ("held", canary.get("held_at")),
        ("decided", canary.get("decided_at")),
        ("by", canary.get("decided_by")),
        ("reason", canary.get("reason")),
        ("reviewed", review.get("reviewed_at")),
        ("review", review.get("reason") if "reason" not in canary else None),
    ):
        if value is not None:
            out.print(f"  {label:<10} {value}")
    figures = canary.get("figures") or review
    if "exposures" not in figures:
        return
    table = Table(title="decided on" if canary.get("figures") else "last review")
    table.add_column("arm")
    for column in ("lists", "users", "clicks", "CTR"):
        table.add_column(column, justify="right")
    for arm in ("control", "canary"):
        table.add_row(
            arm,
            f"{figures['exposures'][arm]:,}",
            f"{figures['users'][arm]:,}" if "users" in figures else "-",
            f"{figures['clicks'][arm]:,}" if "clicks" in figures else "-",
            _fmt(figures.get("ctr", {}).get(arm)),
        )
    out.print(table)
    lift, p_value = figures.get("lift"), figures.get("p_value")
    if lift is not None or p_value is not None:
        low, high = figures.get("lift_ci") or (None, None)
        interval = (
            f" (95% CI {low:+.1%} to {high:+.1%})"
            if isinstance(low, float) and isinstance(high, float)
            else ""
        )
        shown_lift = f"{lift:+.1%}{interval}" if isinstance(lift, float) else "-"
        if not isinstance(p_value, float):
            shown_p = "p -"
        elif p_value < 0.0001:
            shown_p = "p < 0.0001"
        else:
            shown_p = f"p = {p_value:.4f}"
        out.print(f"  CTR lift {shown_lift}, {shown_p} (alpha {figures.get('alpha', '-')})")


@models_cli.command("canary")
def models_canary(
    rollback: Annotated[
        str | None,
        typer.Option(
            help="End the running canary of this version by hand: rolled back, its "
            "experiment stopped."
        ),
    ] = None,
) -> None:
    """Review the running canary now: promoted to everyone once both arms served
    RECSYS_CANARY_MIN_EXPOSURES lists and its CTR is not significantly below the active
    version's, rolled back when it is; prints each decision."""
    settings = get_settings()
    with open_database() as db:
        if rollback is not None:
            try:
                Registry(db.sessions).roll_back_canary(rollback)
            except RegistryError as exc:
                console.print(f"[red]{exc}[/]")
                raise typer.Exit(1) from None
            out.print(f"{rollback} is rolled back; its canary experiment is stopped")
            return
        decisions = review_canaries(settings, db.engine, db.sessions)
    if not decisions:
        out.print("no canary is running")
    for d in decisions:
        out.print(f"{d.version}: {d.decision}: {d.reason}")


@models_cli.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="The version to make active.")],
) -> None:
    """Make a version active (by hand, without the gate); the active one is retired. This
    also promotes a canary (ending it) or a rolled-back version."""
    with open_database() as db:
        registry = Registry(db.sessions)
        try:
            before = registry.get(version)
            previous = registry.promote(version)
        except RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    replaced = f", replacing {previous.version}" if previous else ""
    out.print(f"{version} is active{replaced}")
    canary = before.canary or {}
    if canary.get("state") == CANARY_RUNNING:
        out.print(f"  its canary ended; experiment {canary.get('experiment')} is stopped")
    elif before.status == ROLLED_BACK:
        out.print(f"  it had been rolled back as a canary: {canary.get('reason', '-')}")


@models_cli.command("rollback")
def models_rollback() -> None:
    """Re-activate the version that the active one replaced."""
    with open_database() as db:
        try:
            restored, retired = Registry(db.sessions).rollback()
        except RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    out.print(f"{restored.version} is active again; {retired.version} is retired")


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(cli)
