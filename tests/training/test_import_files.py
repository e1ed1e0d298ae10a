"""File imports: every format, gzipped or not, through the one ingestion path; every row
accounted for (imported + duplicates + quarantined = read); bad rows in a quarantine file of the
same format with the reason; early stops and re-runs that store nothing twice."""

from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from app.cleansing import (
    EVENT_FIELDS,
    ITEM_FIELDS,
    QUARANTINE_COLUMN,
    ColumnMapping,
    EventCleanser,
    ItemCleanser,
)
from app.config import DEFAULT_EVENT_TYPE_ALIASES
from app.db.models import Event, Item
from app.services import Services
from tests.conftest import count_rows
from tests.training.test_cli import cli_env, run  # noqa: F401 (fixture)
from training.importer import Importer, ImportReport
from training.sources import files
from training.sources.files import FileSource, default_quarantine_path
from training.sources.quarantine import QuarantineFile

COLUMNS = ["userId", "itemId", "type", "ts", "value"]
GOOD = [
    {"userId": "u1", "itemId": "i1", "type": "click", "ts": "1700000000", "value": ""},
    {"userId": "u1", "itemId": "i2", "type": "buy", "ts": "1700000001000", "value": ""},
    {"userId": "u2", "itemId": "i1", "type": "rating", "ts": "2023-11-14T22:13:20Z", "value": "4"},
    {"userId": "u2", "itemId": "i3", "type": "View", "ts": "2023-11-14 22:15:00", "value": ""},
    {"userId": "u3", "itemId": "i3", "type": "like", "ts": "1700000100", "value": ""},
]
# An exact duplicate of the first row: stored once, counted as a duplicate.
DUPLICATE = dict(GOOD[0])
BAD = [
    ({"userId": "u4", "itemId": "i1", "type": "teleport", "ts": "1700000000", "value": ""}, "type"),
    ({"userId": "u5", "itemId": "", "type": "view", "ts": "1700000000", "value": ""}, "item_id"),
    ({"userId": "u6", "itemId": "i1", "type": "view", "ts": "soon", "value": ""}, "timestamp"),
    ({"userId": "u7", "itemId": "i1", "type": "rating", "ts": "1700000000", "value": ""}, "rating"),
]
ROWS = [GOOD[0], BAD[0][0], GOOD[1], GOOD[2], BAD[1][0], DUPLICATE, GOOD[3], BAD[2][0]]
ROWS += [BAD[3][0], GOOD[4]]
MAPPING = ["user_id=userId", "item_id=itemId", "timestamp=ts"]


def typed(row: dict[str, str]) -> dict[str, Any]:
    """The row as a JSON or Parquet export would type it: numbers as numbers, nothing empty."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value == "":
            continue
        out[key] = int(value) if value.isdigit() else value
    if "value" in out:
        out["value"] = float(out["value"])
    return out


def write(path: Path, fmt: str, rows: list[dict[str, Any]], gzipped: bool = False) -> Path:
    if gzipped:
        path = path.with_name(path.name + ".gz")
    if fmt == "parquet":
        # A Parquet column has one type: times stay text, as a mixed export would have them.
        schema = pa.schema(
            [(name, pa.string()) for name in COLUMNS[:4]] + [("value", pa.float64())]
        )
        table = pa.Table.from_pylist([{**typed(row), "ts": row["ts"]} for row in rows], schema)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
    elif fmt in ("csv", "tsv"):
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS, delimiter="," if fmt == "csv" else "\t")
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode()
    elif fmt == "json":
        data = json.dumps([typed(row) for row in rows], indent=1).encode()
    else:
        data = b"".join(orjson.dumps(typed(row)) + b"\n" for row in rows)
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def import_file(
    services: Services,
    path: Path,
    kind: str = "events",
    mapping: list[str] = MAPPING,
    batch_size: int = 4,
    max_error_rate: float | None = None,
    fmt: str | None = None,
) -> tuple[ImportReport, FileSource]:
    source = FileSource(path, fmt)
    if kind == "events":
        cleanser: Any = EventCleanser(
            DEFAULT_EVENT_TYPE_ALIASES, ColumnMapping.parse(mapping, EVENT_FIELDS)
        )
    else:
        cleanser = ItemCleanser(
            ColumnMapping.parse(mapping, ITEM_FIELDS), text_source=source.format == "csv"
        )
    quarantine = QuarantineFile(
        default_quarantine_path(path, source.format, source.gzipped),
        source.format,
        delimiter=source.delimiter,
        layout_from=source,
    )
    importer = Importer(
        services,
        kind,  # type: ignore[arg-type]
        cleanser,
        quarantine,
        batch_size=batch_size,
        max_error_rate=max_error_rate,
        source=str(path),
    )
    return importer.run(source.records()), source


def read_quarantine(path: Path, fmt: str) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()  # type: ignore[no-any-return]
    if fmt in ("csv", "tsv"):
        text = io.StringIO(data.decode())
        return list(csv.DictReader(text, delimiter="," if fmt == "csv" else "\t"))
    if fmt == "json":
        return json.loads(data)  # type: ignore[no-any-return]
    return [json.loads(line) for line in data.splitlines()]


FORMATS = [
    ("csv", False),
    ("tsv", False),
    ("json", False),
    ("jsonl", False),
    ("parquet", False),
    ("csv", True),
    ("json", True),
    ("jsonl", True),
    ("parquet", True),
]


@pytest.mark.parametrize(
    ("fmt", "gzipped"), FORMATS, ids=[f + (".gz" if gz else "") for f, gz in FORMATS]
)
def test_each_format_imports_good_rows_and_quarantines_bad_ones(
    services: Services, tmp_path: Path, fmt: str, gzipped: bool
) -> None:
    path = write(tmp_path / f"events.{fmt}", fmt, ROWS, gzipped)
    report, _source = import_file(services, path)

    assert (report.read, report.imported, report.duplicates, report.quarantined) == (10, 5, 1, 4)
    assert report.balanced
    assert report.stopped is None
    with services.sessions() as session:
        stored = session.execute(select(Event.user_id, Event.item_id, Event.type)).all()
    assert sorted(stored) == [
        ("u1", "i1", "click"),
        ("u1", "i2", "purchase"),
        ("u2", "i1", "rating"),
        ("u2", "i3", "view"),
        ("u3", "i3", "like"),
    ]
    quarantined = read_quarantine(report.quarantine_path or Path("missing"), fmt)
    assert report.quarantine_path == tmp_path / (
        f"events.quarantine.{fmt}" + (".gz" if gzipped else "")
    )
    # The rows as they were, in their order, with the reason in one more column.
    assert [row["userId"] for row in quarantined] == ["u4", "u5", "u6", "u7"]
    for row, (_bad, field) in zip(quarantined, BAD, strict=True):
        assert field in row[QUARANTINE_COLUMN], row
    assert quarantined[0]["type"] == "teleport"
    # The API's "body:" for rules about the whole event reads as the row's own reason here.
    assert quarantined[3][QUARANTINE_COLUMN] == "rating events need a numeric `value`"
    assert sum(report.reasons.values()) == 4


def test_a_rerun_stores_nothing_twice_and_a_fixed_quarantine_file_imports(
    services: Services, tmp_path: Path
) -> None:
    path = write(tmp_path / "events.csv", "csv", ROWS)
    first, _ = import_file(services, path)
    again, _ = import_file(services, path)
    assert (again.imported, again.duplicates, again.quarantined) == (0, 6, 4)
    assert count_rows(services, "events") == first.imported == 5

    # Fix the quarantined rows in place and import that file: the reason column is ignored.
    assert first.quarantine_path is not None
    fixed = first.quarantine_path.read_text().replace("teleport", "view").replace(",soon,", ",1,")
    fixed_path = tmp_path / "fixed.csv"
    fixed_path.write_text(fixed)
    report, _ = import_file(services, fixed_path)
    assert (report.imported, report.quarantined) == (2, 2)
    assert report.ignored_columns == []


def test_max_error_rate_stops_after_the_batch_that_crossed_it_and_a_rerun_finishes(
    services: Services, tmp_path: Path
) -> None:
    good = [dict(GOOD[0], userId=f"g{n}") for n in range(8)]
    bad = [dict(BAD[0][0], userId=f"b{n}") for n in range(8)]
    path = write(tmp_path / "events.csv", "csv", good + bad + good[:2])
    report, _ = import_file(services, path, batch_size=4, max_error_rate=0.25)

    # Batches of 4: 8 good rows, then 4 bad ones put the rate at 33 % and stop the import.
    assert (report.read, report.imported, report.quarantined) == (12, 8, 4)
    assert report.balanced
    assert report.failed
    assert report.stopped is not None
    assert "after row 12" in report.stopped
    assert count_rows(services, "events") == 8

    rerun, _ = import_file(services, path, batch_size=4)
    assert (rerun.read, rerun.imported, rerun.duplicates, rerun.quarantined) == (18, 0, 10, 8)


def test_imported_users_get_live_profiles_rebuilt_once_at_the_end(
    services: Services, tmp_path: Path
) -> None:
    path = write(tmp_path / "events.jsonl", "jsonl", ROWS)
    report, _ = import_file(services, path, batch_size=3)
    assert report.profiles == "rebuilt for 3 users"
    assert count_rows(services, "pending_profile_updates") == 0
    profile = services.profiles.read("u2")
    assert profile.counts == {"rating": 1, "view": 1}
    assert {entry["item_id"] for entry in profile.recent} == {"i1", "i3"}


def test_a_json_array_is_read_element_by_element_across_buffer_edges(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 7-character buffer every element, number and string straddles an edge."""
    monkeypatch.setattr(files, "_CHUNK", 7)
    elements = [
        {"a": 1, "b": [1, 2, {"c": "x]y,z"}], "d": 12345678901234},
        {"e": '\\"quoted\\"', "f": None},
        {},
        {"g": -0.125e-3},
    ]
    path = tmp_path / "values.json"
    path.write_text("  [\n" + " ,\n ".join(json.dumps(e) for e in elements) + "\n]  \n")
    assert list(FileSource(path).records()) == elements


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"user_id": "u"}', "does not hold a JSON array"),
        ('[{"user_id": "u"} {"user_id": "v"}]', "expected ',' or ']' after element 1"),
        ('[{"user_id": "u"}, {"user_id": ', "element 2 of the array is not valid JSON"),
    ],
)
def test_a_broken_json_array_stops_the_import_after_the_rows_before_it(
    services: Services, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "events.json"
    path.write_text(content)
    report, _ = import_file(services, path, mapping=[])
    assert report.failed
    assert report.stopped is not None
    assert message in report.stopped
    assert report.balanced


def test_unreadable_lines_are_quarantined_as_they_were(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"user_id": "u1", "item_id": "i1", "type": "view"}\n'
        "{not json\n"
        "\n"
        '["a", "list"]\n'
        '{"user_id": "u2", "item_id": "i1", "type": "view"}\n'
    )
    report, _ = import_file(services, path, mapping=[])
    assert (report.read, report.imported, report.quarantined) == (4, 2, 2)
    lines = read_quarantine(report.quarantine_path or Path("missing"), "jsonl")
    assert lines[0]["quarantine_original"] == "{not json"
    assert lines[0][QUARANTINE_COLUMN].startswith("line 2: not valid JSON")
    assert lines[1] == {
        "quarantine_original": ["a", "list"],
        QUARANTINE_COLUMN: "record: must be an object, got list",
    }


def test_a_rerun_without_bad_rows_removes_the_old_quarantine_file(
    services: Services, tmp_path: Path
) -> None:
    path = write(tmp_path / "events.csv", "csv", ROWS)
    first, _ = import_file(services, path)
    assert first.quarantine_path is not None
    assert first.quarantine_path.exists()
    write(tmp_path / "events.csv", "csv", GOOD)
    clean, _ = import_file(services, path)
    assert clean.quarantine_path is None
    assert not first.quarantine_path.exists()


def test_items_import_with_attributes_and_exact_duplicates(
    services: Services, tmp_path: Path
) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "sku,title,categories,price,available\n"
        "A1,Trail shoe,shoes|running,89.9,yes\n"
        "A2,Rain jacket,jackets,120,no\n"
        "A1,Trail shoe,shoes|running,89.9,yes\n"
        ",No id,misc,1,yes\n"
        "A3,Odd,misc,1,maybe\n"
    )
    report, _ = import_file(services, path, kind="items", mapping=["item_id=sku"])
    assert (report.read, report.imported, report.duplicates, report.quarantined) == (5, 2, 1, 2)
    with services.sessions() as session:
        shoe = session.get(Item, "A1")
    assert shoe is not None
    assert shoe.categories == ["shoes", "running"]
    assert shoe.attributes == {"price": 89.9}
    assert services.catalog.get("A2").available is False
    reasons = sorted(report.reasons)
    assert reasons == [
        "available: must be true or false (also yes/no, 1/0)",
        "item_id: is required",
    ]


def test_cli_imports_a_file_and_writes_the_report(
    cli_env: Path,  # noqa: F811
    services: Services,
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "events.csv", "csv", ROWS)
    report_path = tmp_path / "report.json"
    result = run(
        "import", "events", str(path), *(f"--map={m}" for m in MAPPING), "--report",
        str(report_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert (report["read"], report["imported"], report["duplicates"]) == (10, 5, 1)
    assert report["quarantined"] == 4
    assert report["balanced"]
    assert "quarantined, by reason" in result.output
    assert "live profiles: rebuilt for 3 users" in result.output

    stopped = run("import", "events", str(path), *(f"--map={m}" for m in MAPPING),
                  "--max-error-rate", "0.1", "--batch-size", "2")  # fmt: skip
    assert stopped.exit_code == 1
    assert "more than --max-error-rate 0.1" in stopped.output


def test_cli_refuses_unclear_sources_and_mappings(
    cli_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert run("import", "events").exit_code == 2
    path = write(tmp_path / "events.csv", "csv", ROWS)
    assert run("import", "events", str(path), "--from-http", "http://127.0.0.1:1/").exit_code == 2
    bad_map = run("import", "events", str(path), "--map", "who=userId")
    assert bad_map.exit_code == 2
    assert "'who' is not a field" in bad_map.output
    unknown = tmp_path / "events.xml"
    unknown.write_text("<events/>")
    result = run("import", "events", str(unknown))
    assert result.exit_code == 2
    assert "pass --format" in result.output


def test_batches_stored_side_by_side_are_accounted_for_in_file_order(
    services: Services, tmp_path: Path
) -> None:
    """Two event batches are stored at a time (on PostgreSQL side by side, into SQLite one
    after the other by the store process); whichever commits first, the report, the
    quarantine file and the checkpoints follow the file's rows."""
    rows = []
    for n in range(40):
        if n % 7 == 3:
            rows.append(dict(BAD[0][0], userId=f"b{n}"))
        else:
            rows.append(dict(GOOD[0], userId=f"g{n}", ts=str(1_700_000_000 + n)))
    path = write(tmp_path / "events.csv", "csv", rows)
    source = FileSource(path, None)
    cleanser = EventCleanser(DEFAULT_EVENT_TYPE_ALIASES, ColumnMapping.parse(MAPPING, EVENT_FIELDS))
    quarantine_path = tmp_path / "bad.csv"
    quarantine = QuarantineFile(quarantine_path, "csv", layout_from=source)
    importer = Importer(services, "events", cleanser, quarantine, batch_size=3, source=str(path))
    assert importer._stores_in_flight() == 2
    checkpoints: list[int] = []
    report = importer.run(source.records(), checkpoint=checkpoints.append)
    assert checkpoints == [*range(3, 40, 3), 40]
    bad = [n for n in range(40) if n % 7 == 3]
    assert (report.read, report.imported, report.quarantined) == (40, 40 - len(bad), len(bad))
    assert report.balanced
    assert [r["userId"] for r in read_quarantine(quarantine_path, "csv")] == [f"b{n}" for n in bad]
    assert count_rows(services, "events") == 40 - len(bad)


def test_event_batches_go_to_sqlite_from_a_store_process(
    services: Services, tmp_path: Path
) -> None:
    """Into SQLite, the batches after the first are stored by a second process: the same
    transaction, so the same answer (new, duplicate, unknown item) and nothing stored twice;
    the process is gone when the import ends."""
    services.settings.unknown_items = "reject"
    services.catalog.upsert_raw([{"item_id": f"i{n}"} for n in (1, 2, 3)])
    rows = []
    for n in range(30):
        item = "ghost" if n % 11 == 5 else f"i{1 + n % 3}"
        # Row 20 repeats the event id of row 2, two batches later.
        event_id = "e2" if n == 20 else f"e{n}"
        time = str(1_700_000_000 + n)
        row = {"event_id": event_id, "userId": f"u{n % 4}", "itemId": item, "ts": time}
        rows.append({**row, "type": "view", "value": ""})
    path = tmp_path / "events.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, ["event_id", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)

    report, _ = import_file(services, path, batch_size=8)
    assert multiprocessing.active_children() == []
    if services.engine.dialect.name == "sqlite":
        assert report.store_process_peak_memory_mb is not None
    else:
        assert report.store_process_peak_memory_mb is None
    ghosts = [n for n in range(30) if n % 11 == 5]
    assert (report.read, report.duplicates, report.quarantined) == (30, 1, len(ghosts))
    assert report.imported == 30 - 1 - len(ghosts)
    [(reason, count)] = report.reasons.items()
    assert reason.startswith("item_id: unknown item 'ghost'")
    assert count == len(ghosts)
    with services.sessions() as session:
        stored = session.execute(select(Event.event_id, Event.user_id, Event.item_id)).all()
    expected = {(f"e{n}", f"u{n % 4}", f"i{1 + n % 3}") for n in range(30) if n not in ghosts}
    assert sorted(stored) == sorted(expected - {("e20", "u0", "i3")})

    rerun, _ = import_file(services, path, batch_size=8)
    assert (rerun.imported, rerun.duplicates, rerun.quarantined) == (0, 30 - len(ghosts), 3)
    assert count_rows(services, "events") == len(stored)
