"""``python -m training``: build data, train, evaluate and manage model versions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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

from app.config import get_settings
from app.services import Services
from training import demo
from training.loading import LoadReport, MovieLensFolder, load_events, load_items
from training.registry import Registry, RegistryError

cli = typer.Typer(
    help="Offline training for the recommendation service.",
    no_args_is_help=True,
    add_completion=False,
)
models_cli = typer.Typer(help="List, promote and roll back model versions.", no_args_is_help=True)
cli.add_typer(models_cli, name="models")
console = Console(stderr=True)
out = Console()


@contextmanager
def open_services() -> Iterator[Services]:
    """Database (migrated) and Redis of the configured service, for one command."""
    services = Services.create(get_settings(), migrate=True)
    try:
        yield services
    finally:
        services.close()


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
    table.add_row(*(f"{v:,}" for v in (report.read, report.accepted, report.duplicates,
                                        report.rejected)))  # fmt: skip
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


@models_cli.command("list")
def models_list() -> None:
    """Every model version, newest last, with its status and offline metrics."""
    with open_services() as services:
        versions = Registry(services.sessions).all()
    if not versions:
        out.print("no model versions yet: run `python -m training train`")
        return
    table = Table(show_header=True)
    for column in ("version", "status", "created", "events", "users", "items", "ndcg@10", "gate"):
        table.add_column(column)
    for v in versions:
        gate = v.gate or {}
        table.add_row(
            v.version,
            v.status,
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            f"{v.n_events:,}",
            f"{v.n_users:,}",
            f"{v.n_items:,}",
            _fmt(v.metrics.get("validation", {}).get("ndcg@10")),
            "; ".join(gate.get("reasons", [])),
        )
    out.print(table)


@models_cli.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="The version to make active.")],
) -> None:
    """Make a version active (by hand, without the gate); the active one is retired."""
    with open_services() as services:
        try:
            previous = Registry(services.sessions).promote(version)
        except RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    replaced = f", replacing {previous.version}" if previous else ""
    out.print(f"{version} is active{replaced}")


@models_cli.command("rollback")
def models_rollback() -> None:
    """Re-activate the version that the active one replaced."""
    with open_services() as services:
        try:
            restored, retired = Registry(services.sessions).rollback()
        except RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    out.print(f"{restored.version} is active again; {retired.version} is retired")


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cli()
