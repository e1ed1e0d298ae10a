"""Operations on the service: ``python -m app --help``."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.config import get_settings
from app.db.engine import create_db_engine, upgrade_schema
from app.services import Services

cli = typer.Typer(help="recsys service operations.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


@cli.command()
def migrate() -> None:
    """Apply every database migration (alembic upgrade head) to RECSYS_DATABASE_URL."""
    settings = get_settings()
    engine = create_db_engine(settings.sqlalchemy_url)
    upgrade_schema(engine)
    engine.dispose()
    console.print(
        f"[green]schema up to date[/] on {engine.url.render_as_string(hide_password=True)}"
    )


@cli.command("rebuild-profiles")
def rebuild_profiles(
    user: Annotated[
        list[str] | None,
        typer.Option("--user", "-u", help="Rebuild only these users (repeatable)."),
    ] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Rebuild only users with pending profile updates.")
    ] = False,
) -> None:
    """Rebuild live profiles and trending counters in Redis from the events in the database."""
    services = Services.create(get_settings())
    try:
        if services.check_redis() is not None:
            console.print(f"[red]Redis is unreachable:[/] {services.check_redis()}")
            raise typer.Exit(1)
        if pending:
            rebuilt = services.rebuilder.reconcile()
            console.print(f"rebuilt {rebuilt} profiles with pending updates")
            return
        if user:
            rebuilt = services.rebuilder.rebuild_users(user)
            services.rebuilder.rebuild_counters()
        else:
            total = services.rebuilder.count_users()
            with Progress(
                TextColumn("[bold]profiles"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("rebuild", total=total, rate="")

                def advance(done: int) -> None:
                    elapsed = progress.tasks[0].elapsed or 1e-9
                    progress.update(task, completed=done, rate=f"{done / elapsed:,.0f} users/s")

                rebuilt = services.rebuilder.rebuild_all(progress=advance)
        console.print(f"[green]rebuilt {rebuilt} profiles[/] and the trending counters")
    finally:
        services.close()


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the API with uvicorn (migrating the database first when RECSYS_AUTO_MIGRATE)."""
    import uvicorn

    uvicorn.run("app.main:app", host=host, port=port, workers=workers, log_level="info")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli()
