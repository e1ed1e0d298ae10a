"""What the command-line modules of ``python -m training`` share: the consoles and opening the
database or the whole service."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings
from app.db.engine import create_db_engine, make_sessionmaker, upgrade_schema

if TYPE_CHECKING:
    from app.services import Services

# Messages and progress go to stderr; reports (tables) to stdout.
console = Console(stderr=True)
# Reports are tables: keep them whole when the output goes to a file or a pipe.
out = Console() if sys.stdout.isatty() else Console(width=140)


@dataclass
class Database:
    """The migrated database alone: training, evaluation and the registry need no Redis."""

    engine: Engine
    sessions: sessionmaker[Session]


@contextmanager
def open_database() -> Iterator[Database]:
    engine = create_db_engine(get_settings().sqlalchemy_url)
    try:
        upgrade_schema(engine)
        yield Database(engine, make_sessionmaker(engine))
    finally:
        engine.dispose()


@contextmanager
def open_services() -> Iterator[Services]:
    """Database (migrated) and Redis of the configured service, for a command that stores data.

    Live profiles are brought up to date first, as the service does at start-up: a Redis that
    lost its data (or never had it) gets every stored user's profile rebuilt, and an empty
    database marks Redis as complete, so that the events this command adds are all the service
    needs to know and its first start does not rebuild them again.
    """
    # Imported here: the API stack costs import time that train and evaluate do not need.
    import redis

    from app.services import Services

    services = Services.create(get_settings(), migrate=True)
    try:
        try:
            rebuilt = services.rebuilder.ensure_populated()
        except redis.RedisError as exc:
            # The events still go to the database with pending marks; the service rebuilds.
            console.print(f"[yellow]live profiles not checked, Redis did not answer: {exc}[/]")
        else:
            if rebuilt:
                console.print(f"rebuilt {rebuilt:,} live profiles that Redis had lost")
        yield services
    finally:
        services.close()
