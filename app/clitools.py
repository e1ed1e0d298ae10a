"""What the command-line tools share: a clear line instead of a traceback when the database or
Redis cannot be reached."""

from __future__ import annotations

import sys
from collections.abc import Callable

import redis
from rich.console import Console
from sqlalchemy.exc import OperationalError


def run(cli: Callable[[], object]) -> None:
    """Run a Typer app; an unreachable database or Redis ends it with one line and status 2."""
    console = Console(stderr=True)
    try:
        cli()
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        console.print(
            f"[red]error:[/] cannot use the database (RECSYS_DATABASE_URL): {reason}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    except redis.ConnectionError as exc:
        console.print(
            f"[red]error:[/] cannot reach Redis (RECSYS_REDIS_URL): {exc}", highlight=False
        )
        sys.exit(2)
