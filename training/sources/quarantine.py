"""Quarantine files: the rows an import could not take, in the source's format, each with the
reason in one more column (``quarantine_reason``).

Fix the rows and import the file again: the reason column is ignored on import, and rows that
were stored meanwhile count as duplicates.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path
from typing import IO, Any

import orjson

from app.cleansing import QUARANTINE_COLUMN
from training.sources import Unreadable

# A line of JSON Lines that was not JSON, or an element that was not an object, is kept here.
ORIGINAL_FIELD = "quarantine_original"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class QuarantineFile:
    """Written on the first quarantined row, as ``PATH.part`` renamed to ``PATH`` on close, so
    the file at ``PATH`` always holds one whole run's rows. A run that quarantines nothing
    removes an older file at ``PATH``.

    Parameters
    ----------
    path : where; a ``.gz`` suffix compresses
    fmt : csv, tsv, json, jsonl or parquet
    header : for CSV, the source's columns (the reason column is added after them)
    parquet_schema : for Parquet, the source's schema (the reason column is added)
    layout_from : a source whose ``header`` and ``parquet_schema``, known once it is being
        read, are taken when the file is opened
    """

    def __init__(
        self,
        path: Path,
        fmt: str,
        header: list[str] | None = None,
        parquet_schema: Any = None,
        delimiter: str = ",",
        layout_from: Any = None,
    ) -> None:
        self.path = path
        self.layout_from = layout_from
        self.format = fmt
        self.header = header
        self.parquet_schema = parquet_schema
        self.delimiter = delimiter
        self.count = 0
        self._part = path.with_name(path.name + ".part")
        self._handle: IO[str] | None = None
        self._csv: Any = None
        self._parquet: Any = None
        self._pending: list[dict[str, Any]] = []
        self._sink: Any = None

    def write(self, original: Any, reason: str) -> None:
        """Quarantine one record (or ``Unreadable`` piece) as it was read."""
        if isinstance(original, Unreadable):
            original = original.original
        if self.count == 0:
            self._open()
        self.count += 1
        if self.format in ("csv", "tsv"):
            self._write_csv(original, reason)
        elif self.format == "parquet":
            self._write_parquet(original, reason)
        else:
            record = (
                {**original, QUARANTINE_COLUMN: reason}
                if isinstance(original, dict)
                else {ORIGINAL_FIELD: original, QUARANTINE_COLUMN: reason}
            )
            encoded = orjson.dumps(
                record, default=_json_default, option=orjson.OPT_NON_STR_KEYS
            ).decode()
            assert self._handle is not None
            if self.format == "json":
                self._handle.write(("[\n" if self.count == 1 else ",\n") + encoded)
            else:
                self._handle.write(encoded + "\n")

    def close(self) -> None:
        """Finish the file; without quarantined rows, remove an older one at the path."""
        if self.count == 0:
            if self.path.exists():
                self.path.unlink()
            return
        if self.format == "parquet":
            self._flush_parquet()
            self._parquet.close()
            if self._sink is not None:
                self._sink.close()
        else:
            assert self._handle is not None
            if self.format == "json":
                self._handle.write("\n]\n")
            self._handle.close()
        os.replace(self._part, self.path)

    def _open(self) -> None:
        if self.layout_from is not None:
            self.header = self.header or self.layout_from.header
            self.parquet_schema = self.parquet_schema or self.layout_from.parquet_schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = self.parquet_schema or pa.schema([])
            if QUARANTINE_COLUMN not in schema.names:
                schema = schema.append(pa.field(QUARANTINE_COLUMN, pa.string()))
            self.parquet_schema = schema
            if self.path.name.endswith(".gz"):
                self._sink = gzip.open(self._part, "wb")  # noqa: SIM115 (closed in close())
            self._parquet = pq.ParquetWriter(self._sink or str(self._part), schema)
            return
        binary: IO[bytes] = self._part.open("wb")
        if self.path.name.endswith(".gz"):
            binary = gzip.GzipFile(fileobj=binary, mode="wb")  # type: ignore[assignment]
        self._handle = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        if self.format in ("csv", "tsv"):
            self._csv = csv.writer(self._handle, delimiter=self.delimiter)
            self._csv.writerow([*(self.header or []), QUARANTINE_COLUMN])

    def _write_csv(self, original: Any, reason: str) -> None:
        header = self.header or []
        if isinstance(original, dict):
            fields = [_text(original.get(name)) for name in header]
        else:
            fields = [_text(value) for value in original]
            # A row with too few fields is padded, so the reason stays in its column.
            fields += [""] * (len(header) - len(fields))
        self._csv.writerow([*fields, reason])

    def _write_parquet(self, original: Any, reason: str) -> None:
        if isinstance(original, dict):
            row = {**original, QUARANTINE_COLUMN: reason}
        else:
            row = {QUARANTINE_COLUMN: reason}
        self._pending.append(row)
        if len(self._pending) >= 10_000:
            self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa

        if self._pending:
            table = pa.Table.from_pylist(self._pending, schema=self.parquet_schema)
            self._parquet.write_table(table)
            self._pending = []


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
