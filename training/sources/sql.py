"""Rows of a SQL query on any database SQLAlchemy reaches, read incrementally by a watermark.

With a watermark column the query is wrapped as::

    SELECT * FROM (<query>) AS recsys_source WHERE <column> > :watermark ORDER BY <column>

and, after each committed batch, the watermark moves to the largest value all of whose rows are
committed. A re-run reads only rows with a larger value; an import that died re-reads at most
the rows it had not committed (their events then count as duplicates).

The column must only grow for new rows (an auto-increment id, an insertion time): a row added
later with a smaller value than the stored watermark is never read. Rows whose watermark column
is NULL are read on a run without a stored watermark only.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.config import normalise_database_url
from app.db.engine import session_scope
from app.db.models import ImportWatermark
from app.db.queries import dialect_insert
from training.sources import SourceError

_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "decimal": Decimal,
    "datetime": datetime,
    "date": date,
    "str": str,
}


def encode_watermark(value: Any) -> tuple[str, str]:
    """A watermark value as (text, type name), to be stored."""
    if isinstance(value, bool):
        raise SourceError("a watermark column must hold numbers, times or text, not booleans")
    if isinstance(value, datetime):
        return value.isoformat(), "datetime"
    if isinstance(value, date):
        return value.isoformat(), "date"
    for name, kind in _TYPES.items():
        if isinstance(value, kind):
            return str(value), name
    raise SourceError(
        f"a watermark column must hold numbers, times or text, not {type(value).__name__}"
    )


def decode_watermark(value: str, kind: str) -> Any:
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind not in _TYPES:
        raise SourceError(f"stored watermark has an unknown type {kind!r}")
    return _TYPES[kind](value)


class WatermarkStore:
    """Watermarks of incremental imports, kept in the service's own database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get(self, name: str) -> ImportWatermark | None:
        with self.sessions() as session:
            return session.scalar(select(ImportWatermark).where(ImportWatermark.name == name))

    def save(self, name: str, target: str, column: str, value: Any) -> None:
        encoded, kind = encode_watermark(value)
        now = datetime.now(UTC)
        row = {
            "name": name,
            "target": target,
            "column_name": column,
            "value": encoded,
            "value_type": kind,
            "updated_at": now,
        }
        with session_scope(self.sessions) as session:
            insert = dialect_insert(session)
            stmt = insert(ImportWatermark).values(**row)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={key: stmt.excluded[key] for key in row if key != "name"},
            )
            session.execute(stmt)

    def delete(self, name: str) -> None:
        with session_scope(self.sessions) as session:
            watermark = session.get(ImportWatermark, name)
            if watermark is not None:
                session.delete(watermark)


def read_query(query: str) -> str:
    """``@path`` reads the query from a file; a trailing semicolon is dropped."""
    if query.startswith("@"):
        try:
            query = Path(query[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceError(f"cannot read the query file: {exc}") from None
    query = query.strip().rstrip(";").strip()
    if not query:
        raise SourceError("--query is empty")
    return query


def default_watermark_name(url: str, query: str, column: str) -> str:
    """Names the watermark by source, query and column, so each incremental import has its
    own."""
    shown = make_url(url).render_as_string(hide_password=True)
    digest = hashlib.sha256(f"{shown}\n{query}\n{column}".encode()).hexdigest()[:16]
    return f"sql-{digest}"


class SqlSource:
    """The rows of ``query`` as dicts, streamed (a server-side cursor where the database has one).

    Parameters
    ----------
    url : SQLAlchemy URL of the source database (``postgresql://`` uses psycopg 3)
    query : a SELECT
    watermark_column : read incrementally by this column (``None``: every row, every run)
    watermarks : where the watermark is kept
    name : the watermark's name
    target : ``events`` or ``items``, recorded with the watermark
    full : ignore the stored watermark and read every row (the watermark is still advanced)
    """

    def __init__(
        self,
        url: str,
        query: str,
        watermark_column: str | None = None,
        watermarks: WatermarkStore | None = None,
        name: str | None = None,
        target: str = "events",
        full: bool = False,
        fetch_size: int = 10_000,
    ) -> None:
        self.url = normalise_database_url(url)
        self.query = read_query(query)
        self.column = watermark_column
        if watermark_column is not None and watermarks is None:
            raise ValueError("a watermark column needs a watermark store")
        self.watermarks = watermarks
        self.name = name or (
            default_watermark_name(self.url, self.query, watermark_column)
            if watermark_column
            else None
        )
        self.target = target
        self.full = full
        self.fetch_size = fetch_size
        self.start_value: Any = None
        self.last_saved: Any = None
        # (rows read, value): every row up to that count has a watermark value <= value, and
        # no later row has that value.
        self._complete: deque[tuple[int, Any]] = deque()

    def describe(self) -> str:
        shown = make_url(self.url).render_as_string(hide_password=True)
        return f"{shown} ({self.name})" if self.name else shown

    def records(self) -> Iterator[dict[str, Any]]:
        try:
            engine = create_engine(self.url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise SourceError(f"--from-sql: {exc}") from None
        try:
            yield from self._rows(engine)
        except SQLAlchemyError as exc:
            message = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise SourceError(f"the query failed: {message}") from None
        finally:
            engine.dispose()

    def _statement(self, engine: Any) -> tuple[str, dict[str, Any]]:
        if self.column is None:
            return self.query, {}
        quoted = engine.dialect.identifier_preparer.quote(self.column)
        sql = f"SELECT * FROM ({self.query}) AS recsys_source"  # noqa: S608
        params: dict[str, Any] = {}
        if not self.full and self.watermarks is not None and self.name is not None:
            stored = self.watermarks.get(self.name)
            if stored is not None:
                self.start_value = decode_watermark(stored.value, stored.value_type)
                sql += f" WHERE {quoted} > :watermark"
                params["watermark"] = self.start_value
        return f"{sql} ORDER BY {quoted}", params

    def _rows(self, engine: Any) -> Iterator[dict[str, Any]]:
        sql, params = self._statement(engine)
        column = self.column
        count = 0
        previous: Any = None
        with engine.connect() as connection:
            result = connection.execution_options(
                stream_results=True, max_row_buffer=self.fetch_size
            ).execute(text(sql), params)
            keys = list(result.keys())
            if column is not None and column not in keys:
                raise SourceError(
                    f"the query does not return the watermark column {column!r}; "
                    f"it returns {', '.join(keys)}"
                )
            for row in result:
                record = dict(zip(keys, row, strict=True))
                if column is not None:
                    value = record[column]
                    if value is not None:
                        if previous is not None and value != previous:
                            self._complete.append((count, previous))
                        previous = value
                count += 1
                yield record
        if previous is not None:
            self._complete.append((count, previous))

    def checkpoint(self, committed_rows: int) -> None:
        """The first ``committed_rows`` rows are committed: store the watermark they allow."""
        value = None
        while self._complete and self._complete[0][0] <= committed_rows:
            value = self._complete.popleft()[1]
        if value is None or self.watermarks is None or self.name is None or self.column is None:
            return
        self.watermarks.save(self.name, self.target, self.column, value)
        self.last_saved = value
