"""``python -m training import events|items``: files, SQL queries and paged HTTP APIs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.cleansing import EVENT_FIELDS, ITEM_FIELDS, ColumnMapping, EventCleanser, ItemCleanser
from app.config import get_settings
from training.cli_shared import console, open_services, out
from training.sources import SourceError
from training.sources.quarantine import QuarantineFile

if TYPE_CHECKING:
    from training.importer import ImportReport, Kind

import_cli = typer.Typer(
    help="Import events or items from a file (CSV, TSV, JSON, JSON Lines, Parquet; gzipped or "
    "not), a SQL query (--from-sql) or a paged HTTP API (--from-http), through the API's "
    "validation. Bad rows go to a quarantine file; re-running is safe.",
    no_args_is_help=True,
)

FileArg = Annotated[
    Path | None,
    typer.Argument(
        help="CSV, TSV, JSON (one array), JSON Lines or Parquet; .gz for gzip. "
        "Omit with --from-sql or --from-http.",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="csv, tsv, json, jsonl or parquet (default: from the name)."),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="FIELD=COLUMN: read FIELD from COLUMN (repeatable), e.g. --map user_id=userId; "
        "context.NAME=COLUMN (events) or attributes.NAME=COLUMN (items) nest a column.",
    ),
]
QuarantineOpt = Annotated[
    Path | None,
    typer.Option(
        help="Where rejected rows go, with a quarantine_reason column (default: beside a file "
        "as NAME.quarantine.EXT; for SQL and HTTP sources under RECSYS_VAR_DIR/quarantine/).",
    ),
]
MaxErrorRateOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Stop once more than this share of the rows read (0-1) were quarantined; "
        "committed rows stay.",
    ),
]
BatchOpt = Annotated[
    int | None,
    typer.Option(min=1, max=100_000, help="Rows per transaction (RECSYS_IMPORT_BATCH_SIZE)."),
]
DelimiterOpt = Annotated[str | None, typer.Option(help="CSV field separator (default , or tab).")]
EncodingOpt = Annotated[str, typer.Option(help="Text encoding of CSV and JSON files.")]
ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="Also write the report as JSON to this file.")
]
SqlOpt = Annotated[
    str | None,
    typer.Option(
        "--from-sql",
        help="Read the rows of --query from this database (SQLAlchemy URL; passwords are better "
        "kept in ~/.pgpass or PGPASSWORD).",
    ),
]
QueryOpt = Annotated[
    str | None, typer.Option(help="The SELECT to read (with --from-sql); @FILE reads it from FILE.")
]
WatermarkOpt = Annotated[
    str | None,
    typer.Option(
        help="Read incrementally: only rows whose value in this column is above the one stored "
        "by the last run."
    ),
]
WatermarkNameOpt = Annotated[
    str | None,
    typer.Option(help="Name of the stored watermark (default: from the URL, query and column)."),
]
FullOpt = Annotated[
    bool, typer.Option("--full", help="Ignore the stored watermark and read every row.")
]
HttpOpt = Annotated[
    str | None, typer.Option("--from-http", help="Read the records of this paged JSON API.")
]
RecordsOpt = Annotated[
    str | None,
    typer.Option(
        "--records",
        help="Dotted path of the records array in a page (default: the page itself, or its "
        "data/results/items/records/events).",
    ),
]
NextOpt = Annotated[
    str | None,
    typer.Option(
        "--next",
        help="Dotted path of the next page's URL in a page, e.g. links.next (default: the Link "
        "header).",
    ),
]
PageParamOpt = Annotated[
    str | None,
    typer.Option(help="Query parameter numbering the pages, read until a page is empty."),
]
PageStartOpt = Annotated[int, typer.Option(help="Number of the first page.")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="NAME=VALUE query parameter (repeatable): sent for every numbered page, or with "
        "the first request when following next links (they carry their own).",
    ),
]
HeaderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        help="'Name: value' request header (repeatable). RECSYS_IMPORT_AUTHORIZATION sets the "
        "Authorization header without putting the secret on the command line.",
    ),
]
RetriesOpt = Annotated[
    int, typer.Option(min=0, help="Retries of a request answered 429 or 5xx, or lost.")
]
TimeoutOpt = Annotated[float, typer.Option(min=0.1, help="Seconds to wait for one answer.")]
MaxPagesOpt = Annotated[int | None, typer.Option(min=1, help="Stop after this many pages.")]


@import_cli.command("events")
def import_events(
    file: FileArg = None,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    quarantine: QuarantineOpt = None,
    max_error_rate: MaxErrorRateOpt = None,
    batch_size: BatchOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = "utf-8",
    live_profiles: Annotated[
        bool,
        typer.Option(
            "--live-profiles",
            help="Update live profiles batch by batch as the API does, instead of rebuilding "
            "the imported users' profiles once at the end (slower).",
        ),
    ] = False,
    report_path: ReportOpt = None,
    from_sql: SqlOpt = None,
    query: QueryOpt = None,
    watermark_column: WatermarkOpt = None,
    watermark_name: WatermarkNameOpt = None,
    full: FullOpt = False,
    from_http: HttpOpt = None,
    records: RecordsOpt = None,
    next_path: NextOpt = None,
    page_param: PageParamOpt = None,
    page_start: PageStartOpt = 1,
    param: ParamOpt = None,
    header: HeaderOpt = None,
    retries: RetriesOpt = 5,
    timeout: TimeoutOpt = 30.0,
    max_pages: MaxPagesOpt = None,
) -> None:
    """Import events: every row imported, a duplicate (stored before: same event_id, or the same
    content when rows have no event_id) or quarantined with the reason."""
    _run_import(
        "events", locals(), lambda mapping_: EventCleanser(_aliases(), mapping_), EVENT_FIELDS
    )


@import_cli.command("items")
def import_items(
    file: FileArg = None,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    quarantine: QuarantineOpt = None,
    max_error_rate: MaxErrorRateOpt = None,
    batch_size: BatchOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = "utf-8",
    list_separator: Annotated[
        str, typer.Option(help="Separates categories and tags written in one text field.")
    ] = "|",
    report_path: ReportOpt = None,
    from_sql: SqlOpt = None,
    query: QueryOpt = None,
    watermark_column: WatermarkOpt = None,
    watermark_name: WatermarkNameOpt = None,
    full: FullOpt = False,
    from_http: HttpOpt = None,
    records: RecordsOpt = None,
    next_path: NextOpt = None,
    page_param: PageParamOpt = None,
    page_start: PageStartOpt = 1,
    param: ParamOpt = None,
    header: HeaderOpt = None,
    retries: RetriesOpt = 5,
    timeout: TimeoutOpt = 30.0,
    max_pages: MaxPagesOpt = None,
) -> None:
    """Import items (created or replaced, as with PUT); columns that are not item fields become
    attributes."""
    options = locals()

    def cleanser(mapping_: ColumnMapping) -> ItemCleanser:
        text_source = options["file"] is not None and _is_text(options)
        return ItemCleanser(mapping_, separator=list_separator, text_source=text_source)

    _run_import("items", options, cleanser, ITEM_FIELDS)


def _aliases() -> dict[str, str]:
    return dict(get_settings().event_type_aliases)


def _is_text(options: dict[str, Any]) -> bool:
    from training.sources.files import detect_format

    try:
        fmt, _ = detect_format(options["file"], options["fmt"])
    except (SourceError, OSError):
        return False
    return fmt in ("csv", "tsv")


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]{message}[/]")
    return typer.Exit(code)


def _run_import(
    kind: Kind,
    options: dict[str, Any],
    make_cleanser: Callable[[ColumnMapping], Any],
    fields: tuple[str, ...],
) -> None:
    from training.importer import Importer

    chosen = [name for name in ("file", "from_sql", "from_http") if options[name] is not None]
    if len(chosen) != 1:
        raise _fail("give exactly one source: FILE, --from-sql URL or --from-http URL")
    try:
        mapping = ColumnMapping.parse(options["mapping"] or [], fields)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    settings = get_settings()
    batch_size = options["batch_size"] or settings.import_batch_size
    with open_services() as services:
        try:
            with _source(kind, options, services) as (source, quarantine, checkpoint):
                cleanser = make_cleanser(mapping)
                with _progress(source) as (_bar, on_batch, on_rebuild):
                    importer = Importer(
                        services,
                        kind,
                        cleanser,
                        quarantine,
                        batch_size=batch_size,
                        max_error_rate=options["max_error_rate"],
                        live_profiles=bool(options.get("live_profiles")),
                        on_batch=on_batch,
                        source=source.describe(),
                    )
                    importer.rebuild_progress = on_rebuild
                    report = importer.run(source.records(), checkpoint=checkpoint)
        except SourceError as exc:
            raise _fail(str(exc)) from None
    print_import_report(report)
    if getattr(source, "name", None) and getattr(source, "column", None):
        saved = getattr(source, "last_saved", None)
        console.print(
            f"watermark {source.name}: {source.column} > "
            f"{saved if saved is not None else getattr(source, 'start_value', None)!s}"
        )
    if options["report_path"] is not None:
        options["report_path"].write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    if report.failed:
        raise typer.Exit(1)


@contextmanager
def _source(
    kind: Kind, options: dict[str, Any], services: Any
) -> Iterator[tuple[Any, QuarantineFile, Callable[[int], None] | None]]:
    settings = get_settings()
    quarantine_path: Path | None = options["quarantine"]
    if options["file"] is not None:
        from training.sources.files import FileSource, default_quarantine_path

        source = FileSource(
            options["file"], options["fmt"], options["delimiter"], options["encoding"]
        )
        path = quarantine_path or default_quarantine_path(
            source.path, source.format, source.gzipped
        )
        quarantine = QuarantineFile(
            path, source.format, delimiter=source.delimiter, layout_from=source
        )
        yield source, quarantine, None
        return
    if quarantine_path is not None and not re.search(r"\.jsonl(\.gz)?$", quarantine_path.name):
        raise SourceError("the quarantine of a SQL or HTTP source is JSON Lines: name it .jsonl")
    if options["from_sql"] is not None:
        from training.sources.sql import SqlSource, WatermarkStore

        if not options["query"]:
            raise SourceError("--from-sql needs --query")
        sql = SqlSource(
            options["from_sql"],
            options["query"],
            watermark_column=options["watermark_column"],
            watermarks=WatermarkStore(services.sessions),
            name=options["watermark_name"],
            target=kind,
            full=options["full"],
        )
        slug = sql.name or "sql"
        path = quarantine_path or settings.var_dir / "quarantine" / f"{kind}-{slug}.jsonl"
        yield sql, QuarantineFile(path, "jsonl"), sql.checkpoint
        return
    from training.sources.http import HttpSource, parse_header

    headers = dict(parse_header(spec) for spec in options["header"] or [])
    secret = settings.import_authorization.get_secret_value()
    if secret and not any(name.lower() == "authorization" for name in headers):
        headers["Authorization"] = secret
    params: dict[str, str] = {}
    for spec in options["param"] or []:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise SourceError(f"--param {spec!r}: expected NAME=VALUE")
        params[name] = value
    http = HttpSource(
        options["from_http"],
        records_path=options["records"],
        next_path=options["next_path"],
        page_param=options["page_param"],
        page_start=options["page_start"],
        params=params,
        headers=headers,
        retries=options["retries"],
        timeout=options["timeout"],
        max_pages=options["max_pages"],
    )
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", http.url.split("//", 1)[-1].split("/", 1)[0])
    path = quarantine_path or settings.var_dir / "quarantine" / f"{kind}-http-{host}.jsonl"
    yield http, QuarantineFile(path, "jsonl"), None


@contextmanager
def _progress(
    source: Any,
) -> Iterator[tuple[Progress, Callable[[ImportReport], None], Callable[[int], None]]]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]}"),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    total = getattr(source, "progress_total", None)
    task: TaskID = progress.add_task("reading", total=total, rows="", rate="")
    rebuild: list[TaskID] = []

    def on_batch(report: ImportReport) -> None:
        done = getattr(source, "progress_done", None)
        elapsed = progress.tasks[task].elapsed or 1e-9
        progress.update(
            task,
            completed=done if done is not None else report.read,
            rows=f"{report.read:,} rows",
            rate=f"{report.read / elapsed:,.0f} rows/s",
        )

    def on_rebuild(users: int) -> None:
        if not rebuild:
            rebuild.append(progress.add_task("live profiles", total=None, rows="", rate=""))
        elapsed = progress.tasks[rebuild[0]].elapsed or 1e-9
        progress.update(rebuild[0], rows=f"{users:,} users", rate=f"{users / elapsed:,.0f} users/s")

    with progress:
        yield progress, on_batch, on_rebuild
        if total is not None:
            progress.update(task, completed=total)


def print_import_report(report: ImportReport) -> None:
    """The accounting of an import, its reasons, and where it stopped."""
    table = Table(title=f"{report.kind} from {report.source}", show_header=True)
    for column in ("read", "imported", "duplicates", "quarantined", "rows/s"):
        table.add_column(column, justify="right")
    rate = report.read / report.seconds if report.seconds else 0.0
    table.add_row(
        *(
            f"{value:,}"
            for value in (report.read, report.imported, report.duplicates, report.quarantined)
        ),
        f"{rate:,.0f}",
    )
    out.print(table)
    if report.reasons:
        reasons = Table(title="quarantined, by reason", show_header=True)
        reasons.add_column("rows", justify="right")
        reasons.add_column("reason")
        shown = report.reasons.most_common(15)
        for reason, count in shown:
            reasons.add_row(f"{count:,}", reason)
        hidden = len(report.reasons) - len(shown)
        if hidden > 0:
            reasons.add_row("", f"... and {hidden:,} more reasons; every row is in the file")
        out.print(reasons)
    if report.quarantine_path is not None:
        out.print(f"quarantine file: {report.quarantine_path}")
    if report.ignored_columns:
        out.print(f"columns not imported: {', '.join(report.ignored_columns)}")
    if report.profiles:
        took = f" in {report.profile_seconds:,.1f} s" if report.profile_seconds >= 0.1 else ""
        out.print(f"live profiles: {report.profiles}{took}")
    if report.stopped:
        out.print(f"[red]{report.stopped}[/]")
    if not report.balanced:
        out.print("[red]imported + duplicates + quarantined does not add up to the rows read[/]")
