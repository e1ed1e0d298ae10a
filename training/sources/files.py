"""Files: CSV (and TSV), a JSON array, JSON Lines and Parquet, each optionally gzipped.

Every reader streams: CSV and JSON Lines line by line, a JSON array element by element through
a bounded buffer, Parquet batch by batch; memory does not grow with the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import orjson

from training.sources import SourceError, Unreadable

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_GZIP_MAGIC = b"\x1f\x8b"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_CHUNK = 1 << 20
# Rows of a Parquet file converted to Python objects at a time.
PARQUET_BATCH = 10_000


def detect_format(path: Path, given: str | None = None) -> tuple[str, bool]:
    """The file's format and whether it is gzipped: from ``given``, else from the name's suffix
    (``events.csv.gz``); gzip is also recognised by its first bytes."""
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    if gzipped:
        name = name[:-3]
    else:
        with path.open("rb") as handle:
            gzipped = handle.read(2) == _GZIP_MAGIC
    if given is not None:
        if given not in FORMATS:
            raise SourceError(f"--format {given!r} is not one of {', '.join(FORMATS)}")
        return given, gzipped
    fmt = _SUFFIXES.get(Path(name).suffix)
    if fmt is None:
        raise SourceError(
            f"cannot tell the format of {path.name} from its name; pass --format "
            f"({', '.join(FORMATS)})"
        )
    return fmt, gzipped


def default_quarantine_path(path: Path, fmt: str, gzipped: bool) -> Path:
    """``events.csv.gz`` -> ``events.quarantine.csv.gz``, beside the input."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem = Path(name).stem if Path(name).suffix.lower() in _SUFFIXES else name
    suffix = Path(name).suffix if Path(name).suffix.lower() in _SUFFIXES else f".{fmt}"
    return path.with_name(f"{stem}.quarantine{suffix}{'.gz' if gzipped else ''}")


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from the file on disk (compressed ones for gzip), for progress."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        read = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += read or 0
        return int(read or 0)

    def close(self) -> None:
        self.raw.close()
        super().close()


class FileSource:
    """Raw records of one file, in order.

    ``records()`` yields dicts (a CSV row by its header, a JSON object, a Parquet row) and
    ``Unreadable`` for pieces that are not records (a CSV row with the wrong number of fields,
    a line of JSON Lines that is not JSON). A fault that makes the rest unreadable (a broken
    JSON array, bytes that are not the encoding) raises ``SourceError``.
    """

    def __init__(
        self,
        path: Path,
        fmt: str | None = None,
        delimiter: str | None = None,
        encoding: str = "utf-8",
    ) -> None:
        if not path.is_file():
            raise SourceError(f"{path} is not a file")
        self.path = path
        self.format, self.gzipped = detect_format(path, fmt)
        if delimiter is not None and len(delimiter) != 1:
            raise SourceError("--delimiter must be one character")
        self.delimiter = delimiter or ("\t" if self.format == "tsv" else ",")
        self.encoding = encoding
        self.size = path.stat().st_size
        self.header: list[str] | None = None
        self.parquet_schema: Any = None
        self.total_rows: int | None = None
        self._counter: _CountingReader | None = None
        self._rows_done = 0

    def describe(self) -> str:
        return str(self.path)

    # -- progress --------------------------------------------------------------------------

    @property
    def progress_unit(self) -> str:
        return "rows" if self.format == "parquet" else "bytes"

    @property
    def progress_total(self) -> int | None:
        return self.total_rows if self.format == "parquet" else self.size

    @property
    def progress_done(self) -> int:
        if self.format == "parquet":
            return self._rows_done
        return self._counter.count if self._counter is not None else 0

    # -- reading ---------------------------------------------------------------------------

    def records(self) -> Iterator[Any]:
        if self.format == "parquet":
            yield from self._parquet()
            return
        with self._open_text() as text:
            try:
                if self.format in ("csv", "tsv"):
                    yield from self._csv(text)
                elif self.format == "jsonl":
                    yield from self._json_lines(text)
                else:
                    yield from self._json_array(text)
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"{self.path.name} is not valid {self.encoding} ({exc.reason}); pass --encoding"
                ) from None
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise SourceError(f"{self.path.name} cannot be read on: {exc}") from None

    def _open_text(self) -> IO[str]:
        counter = _CountingReader(self.path.open("rb"))
        self._counter = counter
        binary: IO[bytes] = io.BufferedReader(counter, buffer_size=_CHUNK)
        if self.gzipped:
            binary = cast(IO[bytes], gzip.GzipFile(fileobj=binary, mode="rb"))
        encoding = (
            "utf-8-sig" if self.encoding.lower().replace("_", "-") == "utf-8" else (self.encoding)
        )
        return io.TextIOWrapper(binary, encoding=encoding, newline="")

    def _csv(self, text: IO[str]) -> Iterator[Any]:
        reader = csv.reader(text, delimiter=self.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [name.strip() for name in header]
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise SourceError(f"column {repeated[0]!r} appears twice in the header")
        self.header = header
        width = len(header)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Unreadable([], f"line {reader.line_num}: not valid CSV: {exc}")
                continue
            if len(row) == width:
                yield dict(zip(header, row, strict=True))
            elif row:
                yield Unreadable(
                    row,
                    f"row has {len(row)} fields, the header has {width} (line {reader.line_num})",
                )

    def _json_lines(self, text: IO[str]) -> Iterator[Any]:
        for number, line in enumerate(text, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            try:
                yield orjson.loads(stripped)
            except orjson.JSONDecodeError as exc:
                yield Unreadable(stripped, f"line {number}: not valid JSON: {exc.args[0]}")

    def _json_array(self, text: IO[str]) -> Iterator[Any]:
        """The elements of one top-level JSON array, decoded one at a time from a bounded
        buffer (the C decoder of ``json`` picks each element off it)."""
        decoder = json.JSONDecoder()
        buffer = text.read(_CHUNK)
        eof = not buffer
        pos = _WHITESPACE.match(buffer, 0).end()  # type: ignore[union-attr]
        if pos >= len(buffer) and eof:
            return
        if buffer[pos : pos + 1] != "[":
            raise SourceError(
                f"{self.path.name} does not hold a JSON array; for one object per line use "
                "--format jsonl"
            )
        pos += 1
        count = 0
        separator_due = False
        while True:
            pos = _WHITESPACE.match(buffer, pos).end()  # type: ignore[union-attr]
            if pos >= len(buffer) - 1 and not eof:
                # Keep at least one character ahead, so a closing bracket or comma is seen.
                more = text.read(_CHUNK)
                eof = not more
                buffer, pos = buffer[pos:] + more, 0
                continue
            if pos >= len(buffer):
                raise SourceError(f"{self.path.name} ends inside the JSON array")
            if buffer[pos] == "]":
                return
            if separator_due:
                if buffer[pos] != ",":
                    raise SourceError(
                        f"{self.path.name}: expected ',' or ']' after element {count} of the array"
                    )
                pos += 1
                separator_due = False
                continue
            try:
                value, end = decoder.raw_decode(buffer, pos)
                # An element that ends exactly at the buffer's end may be cut (a number).
                complete = end < len(buffer) or eof
            except json.JSONDecodeError as exc:
                if eof:
                    raise SourceError(
                        f"{self.path.name}: element {count + 1} of the array is not valid "
                        f"JSON: {exc.msg}"
                    ) from None
                complete = False
            if not complete:
                more = text.read(max(_CHUNK, len(buffer) - pos))
                eof = not more
                buffer, pos = buffer[pos:] + more, 0
                continue
            count += 1
            yield value
            pos = end
            separator_due = True
            if pos > _CHUNK:
                buffer, pos = buffer[pos:], 0

    def _parquet(self) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix="recsys-import-") as scratch:
            path = self.path
            if self.gzipped:
                # Parquet needs to seek; the gzipped file is inflated to disk, not to memory.
                path = Path(scratch) / "source.parquet"
                with gzip.open(self.path, "rb") as packed, path.open("wb") as plain:
                    shutil.copyfileobj(packed, plain, _CHUNK)
            try:
                parquet = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as exc:
                raise SourceError(
                    f"{self.path.name} is not a readable Parquet file: {exc}"
                ) from None
            self.parquet_schema = parquet.schema_arrow
            self.total_rows = parquet.metadata.num_rows
            try:
                for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
                    rows = batch.to_pylist()
                    for row in rows:
                        self._rows_done += 1
                        yield row
            except (pa.ArrowException, OSError) as exc:
                raise SourceError(f"{self.path.name} cannot be read on: {exc}") from None
            finally:
                parquet.close()
