"""Reading what the service stored: events and items, in chunks, into plain arrays.

No ORM object is made per row; ids are mapped to dense indices once, and the users x items
matrix is only ever sparse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sqlalchemy import ClauseElement, ColumnElement, Engine, Float, cast, func, select

from app.db.models import Event, Item

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CHUNK_ROWS = 50_000


@dataclass
class ItemTable:
    """The catalogue, one entry per item, in index order."""

    ids: list[str]
    titles: list[str]
    categories: list[list[str]]
    tags: list[list[str]]
    attributes: list[dict[str, Any]]
    hidden: npt.NDArray[np.bool_]

    @property
    def index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Interactions:
    """Every stored event as parallel arrays; ``users``/``items`` index ``user_ids``/``item_ids``.

    ``weights`` are the signed event-type weights (a rating's multiplied by its value).
    """

    user_ids: list[str]
    item_ids: list[str]
    users: IntArray
    items: IntArray
    weights: FloatArray
    timestamps: FloatArray
    types: npt.NDArray[np.int8]
    type_names: list[str]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def window(self) -> tuple[datetime | None, datetime | None]:
        if len(self) == 0:
            return None, None
        return (
            datetime.fromtimestamp(float(self.timestamps.min()), UTC),
            datetime.fromtimestamp(float(self.timestamps.max()), UTC),
        )

    def subset(self, mask: npt.NDArray[np.bool_]) -> Interactions:
        """The events where ``mask`` holds, with the same id maps."""
        return Interactions(
            self.user_ids,
            self.item_ids,
            self.users[mask],
            self.items[mask],
            self.weights[mask],
            self.timestamps[mask],
            self.types[mask],
            self.type_names,
        )

    def matrix(
        self, half_life_days: float | None = None, now: float | None = None
    ) -> sp.csr_matrix:
        """Users x items sum of weights, optionally decayed by age.

        Returns
        -------
        csr_matrix of shape (n_users, n_items)
            Repeated (user, item) events add up; dislikes subtract.
        """
        weights = self.weights
        if half_life_days is not None and len(self):
            reference = float(self.timestamps.max()) if now is None else now
            age_days = (reference - self.timestamps) / 86_400.0
            weights = weights * np.exp2(-np.maximum(age_days, 0.0) / half_life_days)
        matrix = sp.csr_matrix(
            (weights, (self.users, self.items)), shape=(self.n_users, self.n_items)
        )
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        return matrix


def load_items(engine: Engine) -> ItemTable:
    """Every catalogue item, hidden ones included (their history still trains the model)."""
    ids: list[str] = []
    titles: list[str] = []
    categories: list[list[str]] = []
    tags: list[list[str]] = []
    attributes: list[dict[str, Any]] = []
    hidden: list[bool] = []
    query = select(
        Item.item_id, Item.title, Item.categories, Item.tags, Item.attributes, Item.hidden
    ).order_by(Item.item_id)
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=CHUNK_ROWS).execute(query)
        for rows in result.partitions():
            for item_id, title, cats, item_tags, attrs, is_hidden in rows:
                ids.append(item_id)
                titles.append(title or "")
                categories.append(list(cats or []))
                tags.append(list(item_tags or []))
                attributes.append(dict(attrs or {}))
                hidden.append(bool(is_hidden))
    return ItemTable(ids, titles, categories, tags, attributes, np.asarray(hidden, dtype=bool))


def epoch_seconds(engine: Engine) -> ColumnElement[float]:
    """``occurred_at`` as epoch seconds, computed by the database: no datetime per row."""
    if engine.dialect.name == "postgresql":
        return cast(func.extract("epoch", Event.occurred_at), Float)
    # SQLite keeps UTC text; julianday() reads it, fractions of a second included.
    return (func.julianday(Event.occurred_at) - 2440587.5) * 86400.0


def _fetch_chunks(engine: Engine, query: ClauseElement) -> Iterator[Sequence[Any]]:
    """Plain tuples in chunks from a server-side cursor: a million events do not fit the
    per-row cost of result objects."""
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        cursor: Any
        if engine.dialect.name == "postgresql":
            cursor = raw.cursor(name="recsys_training_read")
            cursor.itersize = CHUNK_ROWS
        else:
            cursor = raw.cursor()
        try:
            cursor.execute(sql)
            while rows := cursor.fetchmany(CHUNK_ROWS):
                yield rows
        finally:
            cursor.close()


def count_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Event)).scalar_one())


def load_interactions(
    engine: Engine,
    event_weights: Mapping[str, float],
    item_ids: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Interactions:
    """Every stored event, read in chunks of ``CHUNK_ROWS``.

    Parameters
    ----------
    engine : the service's database
    event_weights : event type -> signed weight (``rating`` is multiplied by the value)
    item_ids : the item index to use (e.g. the catalogue's); unknown items are appended
    progress : called with the number of rows read so far
    """
    if engine.dialect.name == "postgresql":
        return _load_interactions_postgresql(engine, event_weights, item_ids or [], progress)
    return _load_interactions_rows(engine, event_weights, item_ids or [], progress)


def _load_interactions_rows(
    engine: Engine,
    event_weights: Mapping[str, float],
    item_ids: list[str],
    progress: Callable[[int], None] | None,
) -> Interactions:
    """Any database: rows in chunks from a plain cursor, ids mapped in Python."""
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {item_id: i for i, item_id in enumerate(item_ids)}
    users: list[IntArray] = []
    items: list[IntArray] = []
    weights: list[FloatArray] = []
    stamps: list[FloatArray] = []
    kinds: list[npt.NDArray[np.int8]] = []
    type_weight = dict(event_weights)
    type_code = {name: code for code, name in enumerate(type_weight)}
    query = select(Event.user_id, Event.item_id, Event.type, Event.value, epoch_seconds(engine))
    read = 0
    for rows in _fetch_chunks(engine, query):
        n = len(rows)
        user_col, item_col, type_col, value_col, stamp_col = zip(*rows, strict=True)
        # Comprehensions over columns: the per-row cost is what bounds a 1M-event read.
        users.append(
            np.fromiter(
                [user_index.setdefault(u, len(user_index)) for u in user_col],
                dtype=np.int64,
                count=n,
            )
        )
        items.append(
            np.fromiter(
                [item_index.setdefault(i, len(item_index)) for i in item_col],
                dtype=np.int64,
                count=n,
            )
        )
        chunk_weights = np.fromiter(
            [type_weight.get(t, 0.0) for t in type_col], dtype=np.float64, count=n
        )
        is_rating = np.fromiter([t == "rating" for t in type_col], dtype=bool, count=n)
        if is_rating.any():
            values = np.array([1.0 if v is None else v for v in value_col], dtype=np.float64)
            chunk_weights = np.where(is_rating, chunk_weights * values, chunk_weights)
        weights.append(chunk_weights)
        kinds.append(np.fromiter([type_code.get(t, -1) for t in type_col], dtype=np.int8, count=n))
        stamps.append(np.asarray(stamp_col, dtype=np.float64))
        read += n
        if progress is not None:
            progress(read)

    def joined(parts: list[Any], dtype: type) -> Any:
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    return Interactions(
        user_ids=list(user_index),
        item_ids=list(item_index),
        users=joined(users, np.int64),
        items=joined(items, np.int64),
        weights=joined(weights, np.float64),
        timestamps=joined(stamps, np.float64),
        types=joined(kinds, np.int8),
        type_names=list(type_weight),
    )


# One row of the binary COPY below: a field count, then each field's length and value, all
# big-endian. Every field is NOT NULL and fixed-width, so every row has this very layout.
_COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("user_len", ">i4"),
        ("user", ">i4"),
        ("item_len", ">i4"),
        ("item", ">i4"),
        ("type_len", ">i4"),
        ("type", ">i2"),
        ("value_len", ">i4"),
        ("value", ">f8"),
        ("stamp_len", ">i4"),
        ("stamp", ">f8"),
    ]
)
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_LENGTHS = {"user_len": 4, "item_len": 4, "type_len": 2, "value_len": 8, "stamp_len": 8}


def _load_interactions_postgresql(
    engine: Engine,
    event_weights: Mapping[str, float],
    item_ids: list[str],
    progress: Callable[[int], None] | None,
) -> Interactions:
    """PostgreSQL: the database maps ids to dense codes and sends fixed-width binary rows,
    which numpy reads whole; no Python object is made per event.

    Users are numbered in id order; items keep ``item_ids``'s order, items only the events know
    are appended in id order. Read in one repeatable-read transaction, so the id maps and the
    events agree.
    """
    type_weight = dict(event_weights)
    type_names = list(type_weight)
    type_case = " ".join(f"WHEN %s THEN {code}" for code in range(len(type_names)))
    with engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        assert raw is not None
        raw.commit()  # a fresh transaction with the isolation below
        with raw.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute(
                "CREATE TEMPORARY TABLE recsys_read_items "
                "(item_id text PRIMARY KEY, code integer NOT NULL) ON COMMIT DROP"
            )
            with cursor.copy("COPY recsys_read_items (item_id, code) FROM STDIN") as copy:
                for code, item_id in enumerate(item_ids):
                    copy.write_row((item_id, code))
            cursor.execute(
                "INSERT INTO recsys_read_items (item_id, code) "
                "SELECT item_id, %s + row_number() OVER (ORDER BY item_id) - 1 FROM "
                "(SELECT DISTINCT e.item_id FROM events e LEFT JOIN recsys_read_items r "
                "ON r.item_id = e.item_id WHERE r.item_id IS NULL) AS unknown",
                (len(item_ids),),
            )
            cursor.execute(
                "CREATE TEMPORARY TABLE recsys_read_users ON COMMIT DROP AS "
                "SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::integer AS code "
                "FROM (SELECT DISTINCT user_id FROM events) AS users"
            )
            cursor.execute("SELECT item_id FROM recsys_read_items ORDER BY code")
            all_items = [row[0] for row in cursor.fetchall()]
            cursor.execute("SELECT user_id FROM recsys_read_users ORDER BY code")
            all_users = [row[0] for row in cursor.fetchall()]
            # Only placeholders and integer codes are formatted into the statement.
            sql = (
                "COPY (SELECT u.code, i.code, "  # noqa: S608
                f"(CASE e.type {type_case} ELSE -1 END)::smallint, "
                "COALESCE(e.value, 1.0)::float8, extract(epoch FROM e.occurred_at)::float8 "
                "FROM events e JOIN recsys_read_users u ON u.user_id = e.user_id "
                "JOIN recsys_read_items i ON i.item_id = e.item_id) TO STDOUT (FORMAT binary)"
            )
            buffer = bytearray()
            reported = 0
            with cursor.copy(sql, tuple(type_names)) as copy:
                for block in copy:
                    buffer += block
                    rows = len(buffer) // _COPY_ROW.itemsize
                    if progress is not None and rows - reported >= CHUNK_ROWS:
                        progress(rows)
                        reported = rows
        raw.commit()
    table = _parse_copy(bytes(buffer))
    if progress is not None:
        progress(len(table))
    types = table["type"].astype(np.int8)
    weight_of = np.array([type_weight[name] for name in type_names] + [0.0])
    weights = weight_of[types]  # -1 (a type without a weight) picks the appended 0
    if "rating" in type_weight:
        is_rating = types == type_names.index("rating")
        weights = np.where(is_rating, weights * table["value"], weights)
    return Interactions(
        user_ids=all_users,
        item_ids=all_items,
        users=table["user"].astype(np.int64),
        items=table["item"].astype(np.int64),
        weights=weights.astype(np.float64),
        timestamps=table["stamp"].astype(np.float64),
        types=types,
        type_names=type_names,
    )


def _parse_copy(data: bytes) -> npt.NDArray[np.void]:
    """The rows of a binary COPY whose rows all have the ``_COPY_ROW`` layout."""
    if not data.startswith(_COPY_SIGNATURE):
        raise ValueError("not PostgreSQL binary COPY data")
    extension = int.from_bytes(data[15:19], "big")
    start = 19 + extension
    end = len(data) - 2  # the trailer: a field count of -1
    if data[end:] != b"\xff\xff" or (end - start) % _COPY_ROW.itemsize:
        raise ValueError("binary COPY data of unexpected length")
    table = np.frombuffer(
        data, dtype=_COPY_ROW, offset=start, count=(end - start) // _COPY_ROW.itemsize
    )
    if table.size and not (
        (table["fields"] == 5).all()
        and all((table[name] == size).all() for name, size in _COPY_LENGTHS.items())
    ):
        raise ValueError("binary COPY rows of unexpected layout")
    return table
