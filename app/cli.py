"""Operations on the service: ``python -m app --help``."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.clitools import run
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
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (RECSYS_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on (RECSYS_PORT, 8000).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Worker processes (RECSYS_WORKERS, 1).")
    ] = None,
) -> None:
    """Run the API with uvicorn (migrating the database first when RECSYS_AUTO_MIGRATE).

    On SIGTERM or SIGINT it stops accepting connections, lets the requests in flight finish
    (for up to RECSYS_SHUTDOWN_TIMEOUT_SECONDS), flushes what it queued, and exits."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level="info",
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_seconds)),
    )


@cli.command("consume-stream")
def consume_stream(
    stream: Annotated[
        str | None, typer.Option(help="Stream to read (RECSYS_STREAM_KEY, recsys:events).")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Consumer group (RECSYS_STREAM_GROUP, recsys-ingest)."),
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option(help="This consumer's name in the group, unique per process (HOST-PID)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="Messages per batch.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on this port (0: off; 9109)."
        ),
    ] = None,
) -> None:
    """Ingest events from a Redis Stream through a consumer group, until SIGTERM or SIGINT.

    Every message is acknowledged after its event is committed; messages a dead consumer left
    pending are claimed; messages that cannot be stored go to the dead-letter stream with the
    reason."""
    import gc
    import signal
    import threading

    import redis
    from prometheus_client import start_http_server

    from app.reconcile import Reconciler
    from app.stream_consumer import StreamConsumer

    overrides = {
        key: value
        for key, value in {
            "stream_key": stream,
            "stream_group": group,
            "stream_batch_size": batch_size,
            "stream_metrics_port": metrics_port,
        }.items()
        if value is not None
    }
    settings = get_settings().model_copy(update=overrides)
    services = Services.create(settings)
    metrics_server = None
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        console.print(f"{signal.Signals(signum).name}: finishing the batch at hand, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if settings.stream_metrics_port:
            metrics_server, _thread = start_http_server(
                settings.stream_metrics_port, addr=settings.stream_metrics_host
            )
        # Blocking reads wait up to stream_block_ms: the socket must wait longer than that.
        pool = services.redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = settings.stream_block_ms / 1000 + settings.redis_timeout_seconds
        client = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        # Commits whose profile update failed, or that a killed consumer left, are rebuilt.
        services.reconciler = Reconciler(
            services.ingestor,
            services.rebuilder,
            interval=settings.reconcile_interval_seconds,
            grace=settings.reconcile_grace_seconds,
        )
        services.reconciler.start()
        consumer_ = StreamConsumer(client, services.ingestor, settings, consumer=consumer)
        console.print(
            f"consuming [bold]{consumer_.stream}[/] as {consumer_.consumer} in group "
            f"{consumer_.group}; dead letters go to {consumer_.dead_letter}"
        )
        # Start-up objects stay out of every later collection (as in the API process).
        gc.collect()
        gc.freeze()
        consumer_.run(stop)
        client.close()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        services.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    run(cli)
